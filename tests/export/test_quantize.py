"""Per-row quantization: groups, error bounds per bit-width, clip strategies."""

import pytest
import torch

from pgolf.errors import ArtifactError, ConfigError
from pgolf.export.quantize import (
    as_rows,
    dequantize,
    qmax_of,
    quantize_rows,
    row_clip,
    tensor_group,
)


@pytest.mark.parametrize(("name", "group"), [
    ("tok_emb.weight", "embed"), ("lm_head.weight", "embed"),
    ("blocks.3.attn.c_q.weight", "attn_q"), ("blocks.3.attn.c_k.weight", "attn_k"),
    ("blocks.3.attn.c_v.weight", "attn_v"), ("blocks.3.attn.proj.weight", "attn_out"),
    ("blocks.0.mlp.fc.weight", "mlp_in"), ("blocks.0.mlp.proj.weight", "mlp_out"),
    ("blocks.0.attn.q_gain", "other"), ("skip_weights", "other"), ("blocks.1.resid_mix", "other"),
])
def test_tensor_group(name, group):
    assert tensor_group(name) == group


@pytest.mark.parametrize("bits", range(2, 9))
def test_round_trip_error_is_at_most_half_a_step(bits, heavy):
    w = heavy(16, 64, seed=bits)
    qt = quantize_rows(w, bits, clip="max")
    assert qt.q.dtype == torch.int8 and qt.q.shape == w.shape and qt.scale.dtype == torch.float16
    assert int(qt.q.abs().max()) <= qmax_of(bits)
    step = qt.scale.float()[:, None]
    err = (dequantize(qt) - w).abs()
    in_range = w.abs() <= step * qmax_of(bits)
    assert bool((err[in_range] <= step.expand_as(w)[in_range] / 2 * (1 + 1e-5)).all())


def test_clipped_values_saturate_at_the_clip(heavy):
    w = heavy(8, 256, seed=1, df=2)
    qt = quantize_rows(w, 4, clip="percentile", clip_percentile=90.0)
    clip = qt.scale.float()[:, None] * qmax_of(4)
    over = w.abs() > clip
    assert bool(over.any())
    assert torch.equal(dequantize(qt)[over].abs(), clip.expand_as(w)[over])


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_mse_clip_beats_row_max_on_heavy_tailed_rows(bits, heavy):
    w = heavy(32, 256, seed=2, df=3)
    err_max = ((dequantize(quantize_rows(w, bits, "max")) - w) ** 2).sum(dim=1)
    err_mse = ((dequantize(quantize_rows(w, bits, "mse")) - w) ** 2).sum(dim=1)
    assert bool((err_mse <= err_max * (1 + 1e-6)).all())
    assert float(err_mse.sum()) < (0.9 if bits <= 4 else 1.0) * float(err_max.sum())


def test_sdclip_grows_with_k(heavy):
    rows = as_rows(heavy(16, 128, seed=3))
    clips = [row_clip(rows, 6, "sdclip", clip_k=k) for k in (2.0, 6.0, 12.0, 20.0)]
    for smaller, larger in zip(clips[:-1], clips[1:], strict=True):
        assert bool((larger > smaller).all())
    assert torch.allclose(clips[2], 12.0 * rows.std(dim=1))


def test_percentile_clip_matches_torch_quantile(heavy):
    rows = as_rows(heavy(4, 1000, seed=4))
    assert torch.equal(row_clip(rows, 8, "percentile", clip_percentile=99.0),
                       torch.quantile(rows.abs(), 0.99, dim=1))


def test_other_ranks_quantize_as_rows(heavy):
    for w in (heavy(7, seed=5).reshape(7), heavy(3, 4, 5, seed=6), torch.tensor(0.3)):
        qt = quantize_rows(w, 6)
        assert qt.q.shape == w.shape and qt.scale.shape == (as_rows(w).shape[0],)
        assert torch.allclose(dequantize(qt), w, atol=float(qt.scale.float().max()) / 2 + 1e-8)


def test_zero_rows_quantize_to_zero():
    qt = quantize_rows(torch.zeros(3, 8), 6, clip="mse")
    assert torch.equal(dequantize(qt), torch.zeros(3, 8))


@pytest.mark.parametrize("bits", [0, 1, 9, 16])
def test_bits_outside_2_to_8_are_a_config_error(bits):
    with pytest.raises(ConfigError, match="2..8"):
        quantize_rows(torch.ones(2, 2), bits)


def test_bad_values_and_clips_are_one_line_errors():
    with pytest.raises(ArtifactError, match="NaN"):
        quantize_rows(torch.tensor([[1.0, float("nan")]]), 6)
    with pytest.raises(ArtifactError, match="float16"):
        quantize_rows(torch.tensor([[1e9, 1.0]]), 2)
    with pytest.raises(ConfigError, match="export.clip"):
        quantize_rows(torch.ones(2, 2), 6, clip="median")

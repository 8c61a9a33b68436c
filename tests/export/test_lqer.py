"""LQER: stored low-rank factors of the quantization error lower the chosen tensors' reconstruction error, the
file holds exactly them, the decoder reads them back and checks them, and bad settings are one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pgolf.config import ExportConfig, compose
from pgolf.errors import ArtifactError, ConfigError
from pgolf.export.artifact import decode_artifact, dequantize_state_dict, export_state_dict, quantize_state_dict
from pgolf.export.container import pack_container, read_container
from tests.export.conftest import make_state_dict

CFG = ExportConfig(bits=4, clip="max", codec="zlib", lqer_rank=4, lqer_top_k=3, lqer_group=16)


def _error(w: torch.Tensor, back: torch.Tensor) -> float:
    return float((w.float() - back).norm())


def test_the_correction_lowers_the_error_of_the_top_k_tensors_and_only_theirs():
    sd = make_state_dict(dim=64)
    plain = dequantize_state_dict(quantize_state_dict(sd, dataclasses.replace(CFG, lqer_rank=0)))
    fixed = dequantize_state_dict(quantize_state_dict(sd, CFG))
    before = {n: _error(sd[n], plain[n]) for n in sd}
    top = sorted((n for n in sd if sd[n].ndim == 2 and "resid_mix" not in n and "skip" not in n),
                 key=lambda n: -before[n])[:3]
    for name in sd:
        if name in top:
            assert _error(sd[name], fixed[name]) < 0.97 * before[name], name
        else:
            assert torch.equal(fixed[name], plain[name]), name


def test_the_correction_recovers_a_low_rank_error_it_can_see():
    """W = grid points of its own 3-bit scale + a rank-1 offset under half a step: the rows round back onto the
    grid, so the whole error is that rank-1 offset, and rank-1 factors give nearly all of it back."""
    gen = torch.Generator().manual_seed(0)
    step = 2.0**-6  # exact in fp16: the stored scale is this step
    levels = torch.randint(-2, 3, (64, 128), generator=gen).float()
    levels[:, 0] = 3  # the only level 3 of each row: its max, so clip=max gives the scale `step`
    u, v = torch.rand(64, 1, generator=gen) * 2 - 1, torch.rand(1, 128, generator=gen) * 2 - 1
    v[0, 0] = 0.0
    w = step * (levels + 0.4 * (u @ v))
    sd = {"blocks.0.mlp.fc.weight": w}
    cfg = dataclasses.replace(CFG, bits=3, lqer_rank=1, lqer_top_k=1, lqer_bits=8, lqer_group=0)
    plain = dequantize_state_dict(quantize_state_dict(sd, dataclasses.replace(cfg, lqer_rank=0)))
    fixed = dequantize_state_dict(quantize_state_dict(sd, cfg))
    assert torch.equal(plain["blocks.0.mlp.fc.weight"], step * levels)  # the levels alone lose the offset
    assert _error(w, fixed["blocks.0.mlp.fc.weight"]) < 0.05 * _error(w, plain["blocks.0.mlp.fc.weight"])


def test_the_file_holds_the_factors_and_reads_back_to_the_same_weights():
    sd = make_state_dict(dim=64)
    result = export_state_dict(sd, {"vocab_size": 64}, CFG)
    _, back = decode_artifact(result.blob)
    expected = dequantize_state_dict(quantize_state_dict(sd, CFG))
    assert all(torch.equal(back[n], expected[n]) for n in sd)
    header, payload = read_container(result.blob)
    with_factors = [r for r in header["tensors"] if "lqer" in r]
    assert len(with_factors) == 3
    for r in with_factors:
        rows, cols = r["shape"][0], r["shape"][1]
        raw = {k: s["raw_bytes"] for k, s in r["streams"].items()}
        assert raw == {"q": rows * cols, "scale": 2 * rows, "lqer_a": rows * 4, "lqer_a_scale": 2,
                       "lqer_b": 4 * cols, "lqer_b_scale": 2 * (4 * cols // 16)}
    stored = sum(s["length"] for r in header["tensors"] for s in r["streams"].values())
    assert stored == len(payload) and result.model_bytes == len(result.blob)  # bytes are what the file holds
    without = export_state_dict(sd, {"vocab_size": 64}, dataclasses.replace(CFG, lqer_rank=0))
    assert result.model_bytes > without.model_bytes


def _tamper(blob: bytes, change) -> bytes:
    header, payload = read_container(blob)
    change(next(r for r in header["tensors"] if "lqer" in r))
    return pack_container(header, payload)


def test_a_tampered_lqer_record_is_a_clean_error():
    blob = export_state_dict(make_state_dict(dim=64), {"vocab_size": 64}, CFG).blob

    def too_wide(r):
        r["lqer"]["rank"] = 999

    def bad_group(r):
        r["lqer"]["group"] = 7

    for change, message in ((too_wide, "cannot fit its shape"), (bad_group, "cannot fit its shape")):
        with pytest.raises(ArtifactError, match=message):
            decode_artifact(_tamper(blob, change))


@pytest.mark.parametrize("overrides, message", [
    (["export.lqer_rank=-1"], "export.lqer_rank must be >= 0"),
    (["export.lqer_rank=4", "export.lqer_bits=9"], "export.lqer_bits must be in 2..8"),
    (["export.lqer_rank=4", "export.lqer_bits=1"], "export.lqer_bits must be in 2..8"),
])
def test_bad_lqer_settings_are_one_line_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose(overrides)


def test_a_rank_above_the_tensor_or_a_group_that_does_not_divide_its_row_is_refused():
    sd = make_state_dict(dim=32)  # c_k is 16 x 32
    with pytest.raises(ConfigError, match=r"export.lqer_rank \(17\) is above the smaller dimension of "
                                          r"blocks.0.attn.c_k.weight \(16\)"):
        quantize_state_dict(sd, dataclasses.replace(CFG, lqer_rank=17, lqer_tensors=["blocks.0.attn.c_k.weight"]))
    with pytest.raises(ConfigError, match=r"export.lqer_group \(24\) does not divide the row of "
                                          r"blocks.0.mlp.fc.weight \(32 values\)"):
        quantize_state_dict(sd, dataclasses.replace(CFG, lqer_group=24, lqer_tensors=["blocks.0.mlp.fc.weight"]))
    with pytest.raises(ConfigError, match="not a quantized tensor"):
        quantize_state_dict(sd, dataclasses.replace(CFG, lqer_tensors=["blocks.0.attn_scale"]))


@pytest.mark.parametrize("overrides, message", [
    (["export.lqer_rank=65"], r"export.lqer_rank \(65\) is above the smaller dimension of the model's smallest "
                              r"matrix \(64"),
    (["export.lqer_rank=4", "export.lqer_group=48"], r"export.lqer_group \(48\) does not divide the rows"),
])
def test_lqer_settings_the_model_cannot_take_are_refused_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose(overrides)  # model=tiny: width 128, k/v projections 64 x 128

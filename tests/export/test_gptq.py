"""GPTQ: the layer's outputs move less than with rounding, on the same grid; Hessians come from real inputs."""

import dataclasses

import pytest
import torch

from pgolf.config import ExportConfig
from pgolf.errors import ArtifactError, ConfigError
from pgolf.export.artifact import quantize_state_dict
from pgolf.export.gptq import gptq_levels, layer_hessians
from pgolf.export.quantize import dequantize, quantize_rows
from pgolf.model.gpt import GPT


def correlated_inputs(n: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Inputs whose features are strongly correlated and unequally scaled, as hidden states are."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(cols, cols, generator=gen) / cols**0.5 + torch.eye(cols)
    return torch.randn(n, cols, generator=gen) @ mixing * torch.linspace(0.2, 3.0, cols)


def output_error(x: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor) -> float:
    return float(((x @ (w - w_hat).T) ** 2).mean())


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_gptq_moves_the_layer_outputs_less_than_rounding_on_the_same_grid(bits, heavy):
    w = heavy(48, 64, seed=1)
    x = correlated_inputs(4096, 64)
    rounded = quantize_rows(w, bits, clip="mse")
    gptq = gptq_levels(w, x.T @ x / len(x), rounded)
    assert torch.equal(gptq.scale, rounded.scale) and gptq.q.dtype == torch.int8
    assert int(gptq.q.abs().max()) <= 2 ** (bits - 1) - 1
    assert output_error(x, w, dequantize(gptq)) < 0.8 * output_error(x, w, dequantize(rounded))


def test_with_an_identity_hessian_gptq_is_rounding(heavy):
    w = heavy(16, 32, seed=2)
    rounded = quantize_rows(w, 4, clip="max")
    assert torch.equal(gptq_levels(w, torch.eye(32), rounded, damp=1e-9).q, rounded.q)


def test_pruned_weights_stay_zero_and_dead_inputs_keep_rounded_levels(heavy):
    w = heavy(16, 32, seed=3)
    w[:, :4] = 0  # pruned columns
    x = correlated_inputs(512, 32)
    x[:, -3:] = 0  # inputs that never fire
    rounded = quantize_rows(w, 4, clip="max")
    gptq = gptq_levels(w, x.T @ x / len(x), rounded)
    assert (gptq.q[:, :4] == 0).all()
    assert torch.equal(gptq.q[:, -3:], rounded.q[:, -3:])


def test_a_hessian_that_dampening_cannot_save_is_an_artifact_error(heavy):
    w = heavy(4, 2, seed=4)
    with pytest.raises(ArtifactError, match="not positive definite"):
        gptq_levels(w, torch.tensor([[1.0, 100.0], [100.0, 1.0]]), quantize_rows(w, 4), name="layer")


def test_layer_hessians_are_the_mean_outer_product_of_each_linear_layers_inputs():
    torch.manual_seed(0)
    model = GPT(vocab_size=64, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)
    tokens = torch.randint(0, 64, (3, 16))
    seen = {}
    model.blocks[1].mlp.proj.register_forward_pre_hook(lambda _m, inputs: seen.setdefault("x", inputs[0]))
    hessians = layer_hessians(model, tokens.split(1))
    linear = {n for n, p in model.named_parameters() if n.endswith(".weight") and p.ndim == 2 and "tok_emb" not in n}
    assert set(hessians) == linear
    x = seen["x"].reshape(-1, seen["x"].shape[-1])  # first batch only: compare on a single-batch call
    single = layer_hessians(model, [tokens[:1]])
    assert torch.allclose(single["blocks.1.mlp.proj.weight"], x.T @ x / len(x), atol=1e-5)
    assert torch.equal(hessians["blocks.0.attn.c_q.weight"], hessians["blocks.0.attn.c_k.weight"])  # same input
    assert hessians["blocks.0.mlp.fc.weight"].shape == (32, 32)
    assert hessians["blocks.0.mlp.proj.weight"].shape == (64, 64)


def test_export_gptq_without_hessians_is_a_config_error(state_dict):
    with pytest.raises(ConfigError, match="export.gptq needs calibration Hessians"):
        quantize_state_dict(state_dict, dataclasses.replace(ExportConfig(), gptq=True))


def test_many_grids_at_once_give_each_grids_levels_bit_for_bit(heavy):
    """fit-budget quantizes each tensor on every grid of its space in one pass; the export does one grid at a time."""
    from pgolf.export.gptq import gptq_levels_many

    w = heavy(40, 96, seed=3)
    w[2, 5] = 0.0  # a pruned entry stays at level 0 on every grid
    x = correlated_inputs(2048, 96)
    x[:, 7] = 0.0  # a dead input
    hessian = x.T @ x / len(x)
    grids = [quantize_rows(w, bits, "sdclip", clip_k=k) for bits in (3, 5, 8) for k in (6.0, 14.0)]
    many = gptq_levels_many(w, hessian, grids)
    for grid, got in zip(grids, many, strict=True):
        one = gptq_levels(w, hessian, grid)
        assert torch.equal(got.q, one.q) and torch.equal(got.scale, grid.scale) and got.bits == grid.bits
    assert len({tuple(g.q.flatten().tolist()) for g in many}) == len(grids)  # the grids really differ

"""Weight diagnostics move the right way under decay- and pruning-like changes."""

import math

import pytest
import torch

from pgolf.train.diagnostics import weight_diagnostics


def named(seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    torch.manual_seed(seed)
    return [("blocks.0.mlp.fc.weight", torch.randn(64, 32)),
            ("blocks.0.attn.c_q.weight", torch.randn(32, 32)),
            ("tok_emb.weight", torch.randn(16, 32)),
            ("blocks.0.attn_scale", torch.ones(32))]


def test_groups_and_basic_numbers():
    stats = weight_diagnostics(named(), bits=6)
    assert set(stats) == {"matrix", "embed", "scalar"}
    assert stats["matrix"]["numel"] == 64 * 32 + 32 * 32
    assert stats["matrix"]["rms"] == pytest.approx(1.0, rel=0.05)
    assert stats["scalar"] == {"numel": 32, "rms": 1.0, "zero_frac": 0.0, "near_zero_frac": 0.0, "entropy_bits": 0.0}
    assert 0 < stats["matrix"]["entropy_bits"] <= math.log2(63)


def test_zeroing_half_the_weights_raises_zero_fraction_and_lowers_entropy():
    params = named()
    before = weight_diagnostics(params, bits=6)["matrix"]
    for _, w in params[:2]:
        w[:, ::2] = 0
    after = weight_diagnostics(params, bits=6)["matrix"]
    assert after["zero_frac"] == 0.5 and before["zero_frac"] == 0.0
    assert after["near_zero_frac"] >= 0.5 > before["near_zero_frac"]
    assert after["entropy_bits"] < before["entropy_bits"] - 0.5
    assert after["rms"] == pytest.approx(before["rms"] / math.sqrt(2), rel=0.05)


def test_decay_lowers_rms_and_shrinking_small_weights_lowers_entropy():
    params = named()
    before = weight_diagnostics(params, bits=6)["matrix"]
    for _, w in params[:2]:
        w.mul_(0.5)
    scaled = weight_diagnostics(params, bits=6)["matrix"]
    assert scaled["rms"] == pytest.approx(0.5 * before["rms"])
    assert scaled["entropy_bits"] == pytest.approx(before["entropy_bits"], abs=1e-6)  # per-row grid: scale-free
    for _, w in params[:2]:
        w.mul_(torch.where(w.abs() < 0.5, 0.1, 1.0))  # small weights shrink more, as under decay + gradient
    peaked = weight_diagnostics(params, bits=6)["matrix"]
    assert peaked["near_zero_frac"] > scaled["near_zero_frac"]
    assert peaked["entropy_bits"] < scaled["entropy_bits"]


def test_fewer_bits_mean_fewer_bits_per_weight():
    params = named()
    entropies = [weight_diagnostics(params, bits=b)["matrix"]["entropy_bits"] for b in (3, 4, 6, 8)]
    assert entropies == sorted(entropies)

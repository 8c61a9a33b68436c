"""Pruning: exact counts, the smallest entries go first, structured pruning zeroes whole blocks."""

import pytest
import torch

from pgolf.errors import ConfigError
from pgolf.export.prune import (
    prune_cols,
    prune_global,
    prune_heads,
    prune_magnitude,
    prune_rows,
    prune_selective,
)
from pgolf.export.quantize import quantize_rows


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 0.5])
def test_magnitude_prunes_exactly_the_smallest(fraction, heavy):
    w = heavy(16, 32, seed=1)
    pruned, zeros = prune_magnitude(w, fraction)
    assert zeros == round(fraction * w.numel()) == int((pruned == 0).sum())
    kept = pruned != 0
    assert torch.equal(pruned[kept], w[kept])
    if zeros:
        assert float(w[~kept].abs().max()) <= float(w[kept].abs().min())


def test_global_prunes_across_tensors_with_one_threshold(heavy):
    tensors = {"a": heavy(8, 16, seed=2), "b": 10 * heavy(8, 16, seed=3)}
    pruned, zeros = prune_global(tensors, 0.25)
    assert sum(zeros.values()) == round(0.25 * 256)
    assert zeros["a"] > zeros["b"]  # the small-valued tensor loses more
    removed = torch.cat([tensors[n][pruned[n] == 0] for n in tensors]).abs()
    kept = torch.cat([tensors[n][pruned[n] != 0] for n in tensors]).abs()
    assert float(removed.max()) <= float(kept.min())


def test_rows_and_cols_zero_whole_lines_of_least_norm(heavy):
    w = heavy(10, 6, seed=4)
    by_rows, zeros = prune_rows(w, 0.3)
    dead = (by_rows == 0).all(dim=1)
    assert int(dead.sum()) == 3 and zeros == 18
    assert float(w[dead].norm(dim=1).max()) <= float(w[~dead].norm(dim=1).min())
    by_cols, zeros = prune_cols(w, 0.5)
    dead = (by_cols == 0).all(dim=0)
    assert int(dead.sum()) == 3 and zeros == 30
    assert torch.equal(by_cols[:, ~dead], w[:, ~dead])


@pytest.mark.parametrize("dim", [0, 1])
def test_heads_zero_whole_head_blocks(dim, heavy):
    w = heavy(16, 16, seed=5)
    pruned, zeros = prune_heads(w, 0.25, head_dim=4, dim=dim)
    blocks = pruned.transpose(0, dim).reshape(4, -1)
    dead = (blocks == 0).all(dim=1)
    assert int(dead.sum()) == 1 and zeros == 64
    assert torch.equal(blocks[~dead], w.transpose(0, dim).reshape(4, -1)[~dead])


def test_heads_need_a_whole_number_of_heads():
    with pytest.raises(ConfigError, match="head_dim"):
        prune_heads(torch.ones(10, 8), 0.5, head_dim=4, dim=0)


def test_selective_zeroes_the_cheapest_nonzero_levels(heavy):
    w = heavy(8, 64, seed=6)
    qt = quantize_rows(w, 4, clip="max")
    pruned, zeros = prune_selective(qt, w, 0.1)
    changed = (qt.q != 0) & (pruned.q == 0)
    assert zeros == round(0.1 * w.numel()) == int(changed.sum())
    assert torch.equal(pruned.q[~changed], qt.q[~changed]) and torch.equal(pruned.scale, qt.scale)
    step = qt.scale.float()[:, None]
    cost = w**2 - (w - qt.q.float() * step) ** 2
    still_nonzero = pruned.q != 0
    assert float(cost[changed].max()) <= float(cost[still_nonzero].min())


def test_selective_stops_at_the_nonzero_count():
    w = torch.tensor([[0.0, 0.0, 1.0, -1.0]])
    pruned, zeros = prune_selective(quantize_rows(w, 4), w, 0.9)
    assert zeros == 2 and int(pruned.q.abs().sum()) == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_fraction_outside_0_1_is_a_config_error(fraction):
    with pytest.raises(ConfigError, match="export.prune"):
        prune_magnitude(torch.ones(4), fraction)

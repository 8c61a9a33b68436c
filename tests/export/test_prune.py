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
from pgolf.model.gpt import GPT


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


def attention_of(model: GPT, layer: int) -> dict[str, torch.Tensor]:
    attn = model.blocks[layer].attn
    return {"q": attn.c_q.weight, "k": attn.c_k.weight, "v": attn.c_v.weight, "proj": attn.proj.weight}


def dead_blocks(w: torch.Tensor, head_dim: int, dim: int) -> list[int]:
    blocks = w.transpose(0, dim).reshape(w.shape[dim] // head_dim, -1)
    return torch.nonzero((blocks == 0).all(dim=1)).squeeze(1).tolist()


def test_heads_pruning_silences_whole_heads_and_emptied_kv_groups():
    torch.manual_seed(0)
    model = GPT(vocab_size=64, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        pruned, zeros = prune_heads(attention_of(model, 0), 0.75, head_dim=8)
        for part, w in attention_of(model, 0).items():
            w.copy_(pruned[part])
    dead = dead_blocks(pruned["proj"], 8, 1)
    assert len(dead) == 3 and dead_blocks(pruned["q"], 8, 0) == dead  # round(0.75 * 4) heads, same in c_q
    alive_group = ({0, 1, 2, 3} - set(dead)).pop() // 2
    assert dead_blocks(pruned["k"], 8, 0) == dead_blocks(pruned["v"], 8, 0) == [1 - alive_group]
    assert zeros == {"q": 3 * 8 * 32, "proj": 3 * 8 * 32, "k": 8 * 32, "v": 8 * 32}

    tokens = torch.randint(0, 64, (2, 16))
    before = model(tokens)
    with torch.no_grad():  # a pruned head no longer reaches the output, whatever its queries say
        attn = model.blocks[0].attn
        for h in dead:
            attn.c_q.weight[h * 8 : (h + 1) * 8] = torch.randn(8, 32)
    assert torch.allclose(model(tokens), before, atol=1e-6)


def test_heads_pruning_keeps_the_heads_with_the_largest_output_path():
    gen = torch.Generator().manual_seed(3)
    attn = {"q": torch.randn(16, 16, generator=gen), "k": torch.randn(8, 16, generator=gen),
            "v": torch.randn(8, 16, generator=gen), "proj": torch.randn(16, 16, generator=gen)}
    attn["proj"][:, 8:12] *= 10  # head 2's output columns dominate
    pruned, _ = prune_heads(attn, 0.75, head_dim=4)
    assert dead_blocks(pruned["proj"], 4, 1) == [0, 1, 3]


def test_heads_need_a_whole_number_of_heads():
    attn = {"q": torch.ones(10, 8), "k": torch.ones(4, 8), "v": torch.ones(4, 8), "proj": torch.ones(8, 10)}
    with pytest.raises(ConfigError, match="head_dim"):
        prune_heads(attn, 0.5, head_dim=4)


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

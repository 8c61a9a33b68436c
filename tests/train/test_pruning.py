"""Gradual magnitude pruning: cubic schedule, target reached, masks hold across optimizer steps."""

import pytest
import torch
from torch import nn

from pgolf.errors import ConfigError
from pgolf.train.pruning import GradualPruner


def matrices(seed: int = 0) -> list[tuple[str, nn.Parameter]]:
    torch.manual_seed(seed)
    return [("blocks.0.mlp.fc.weight", nn.Parameter(torch.randn(16, 8))),
            ("blocks.0.attn.c_q.weight", nn.Parameter(torch.randn(8, 8)))]


def test_schedule_is_cubic_and_monotone():
    pruner = GradualPruner(matrices(), target_sparsity=0.5, start_frac=0.6)
    assert pruner.sparsity_at(0.0) == 0 and pruner.sparsity_at(0.6) == 0
    assert pruner.sparsity_at(0.8) == pytest.approx(0.5 * (1 - 0.5**3))
    assert pruner.sparsity_at(1.0) == 0.5
    values = [pruner.sparsity_at(p / 200) for p in range(201)]
    assert values == sorted(values)
    # fast at first, slow at the end
    assert values[140] - values[120] > values[200] - values[180]


def test_reaches_target_and_prunes_the_smallest():
    named = matrices()
    originals = {name: p.detach().clone() for name, p in named}
    pruner = GradualPruner(named, target_sparsity=0.75, start_frac=0.5)
    for step in range(101):
        pruner.step(step / 100)
    assert pruner.measured_sparsity() == pytest.approx(0.75, abs=0.01)
    for name, param in named:
        zeroed = param == 0
        assert zeroed.float().mean() == pytest.approx(0.75, abs=0.01)
        # every pruned weight was smaller than every kept one
        assert originals[name].abs()[zeroed].max() <= originals[name].abs()[~zeroed].min()


def test_pruned_weights_stay_zero_while_the_rest_train():
    named = matrices()
    params = [p for _, p in named]
    pruner = GradualPruner(named, target_sparsity=0.5, start_frac=0.0)
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    x = torch.randn(32, 8)
    pruner.step(0.5)
    pruned = {name: p.detach() == 0 for name, p in named}
    kept_before = {name: p.detach().clone() for name, p in named}
    for _ in range(10):
        optimizer.zero_grad()
        (named[0][1] @ x.T).square().mean().backward()
        (named[1][1] @ x.T).sin().mean().backward()
        assert all((p.grad[pruned[n]] != 0).any() for n, p in named)  # the gradient would revive them
        optimizer.step()
        pruner.apply_masks()
        for name, param in named:
            assert (param[pruned[name]] == 0).all()
    for name, param in named:
        assert not torch.equal(param[~pruned[name]], kept_before[name][~pruned[name]])


def test_later_masks_contain_earlier_ones():
    named = matrices()
    pruner = GradualPruner(named, target_sparsity=0.6, start_frac=0.0)
    pruner.step(0.2)
    first = {name: p.detach() == 0 for name, p in named}
    with torch.no_grad():  # the survivors move between recomputations
        for _, p in named:
            p.add_(0.01 * torch.randn_like(p)).mul_(p != 0)
    pruner.step(0.6)
    for name, param in named:
        assert (param[first[name]] == 0).all()
        assert (param == 0).sum() > first[name].sum()


def test_bad_sparsity_is_a_config_error():
    with pytest.raises(ConfigError, match="reg.prune_sparsity must be in"):
        GradualPruner(matrices(), target_sparsity=1.0, start_frac=0.5)

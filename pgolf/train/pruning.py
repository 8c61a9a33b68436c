"""Gradual magnitude pruning during training, with masks kept between steps.

Sparsity follows the cubic schedule of Zhu & Gupta (2017, "To prune, or not
to prune"), with initial sparsity 0, from `start_frac` to the end of training:

    s(p) = 0                                        for p <= start_frac
    s(p) = s_f * (1 - (1 - (p - start_frac) / (1 - start_frac))^3)   after
    s(p) = s_f                                      for p >= 1

It prunes fast at first, while the learning rate can still heal the damage,
and slowly at the end. Masks are per tensor (the smallest |w| of each matrix),
recomputed only when the target rises; `apply_masks` after every optimizer
step keeps pruned weights exactly zero while the others adapt (momentum and
decoupled updates would otherwise revive them). Pruned weights stay pruned:
they are zero, so the next, larger mask contains them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from pgolf.errors import ConfigError


class GradualPruner:
    """Masks over `named_matrices` whose sparsity rises to `target_sparsity` from `start_frac` on."""

    def __init__(self, named_matrices: Iterable[tuple[str, Tensor]], target_sparsity: float,
                 start_frac: float) -> None:
        if not 0 <= target_sparsity < 1:
            raise ConfigError(f"reg.prune_sparsity must be in [0, 1), got {target_sparsity}")
        if not 0 <= start_frac <= 1:
            raise ConfigError(f"reg.prune_start must be in [0, 1], got {start_frac}")
        self.params = dict(named_matrices)
        self.target_sparsity = target_sparsity
        self.start_frac = start_frac
        self.masks: dict[str, Tensor] = {}  # name -> bool keep-mask, same shape as the weight
        self.sparsity = 0.0  # the schedule value the current masks were built for

    def sparsity_at(self, progress_frac: float) -> float:
        """Target sparsity at this point of training (cubic schedule, see the module docstring)."""
        if progress_frac <= self.start_frac:
            return 0.0
        if progress_frac >= 1.0:
            return self.target_sparsity
        frac = (progress_frac - self.start_frac) / (1.0 - self.start_frac)
        return self.target_sparsity * (1.0 - (1.0 - frac) ** 3)

    @torch.no_grad()
    def step(self, progress_frac: float) -> float:
        """Rebuild the masks when the scheduled sparsity has risen, then apply them; returns it."""
        sparsity = self.sparsity_at(progress_frac)
        if sparsity > self.sparsity:
            for name, param in self.params.items():
                n_pruned = int(sparsity * param.numel())
                if n_pruned == 0:
                    continue
                smallest = torch.topk(param.detach().abs().flatten(), n_pruned, largest=False).indices
                keep = torch.ones(param.numel(), dtype=torch.bool, device=param.device)
                keep[smallest] = False
                self.masks[name] = keep.view_as(param)
            self.sparsity = sparsity
        self.apply_masks()
        return self.sparsity

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the pruned weights in place (call after every optimizer step)."""
        for name, keep in self.masks.items():
            self.params[name].mul_(keep)

    def measured_sparsity(self) -> float:
        """Fraction of exact zeros over the pruned matrices now."""
        total = sum(p.numel() for p in self.params.values())
        zeros = sum(int((p == 0).sum()) for p in self.params.values())
        return zeros / max(total, 1)

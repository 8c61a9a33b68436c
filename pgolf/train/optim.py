"""The reference optimizer split and its schedules.

- `torch.optim.Muon` for the 2-D block matrices (Newton-Schulz orthogonalised
  Nesterov momentum; "original" LR adjustment = the reference's
  sqrt(max(1, rows/cols)) scaling), momentum warmed from 0.85 to 0.95.
- Adam (betas 0.9/0.95) for the embedding (and an untied head) and for the
  vectors and scalars.
Weight decay is not given to the optimizers: the loop applies it decoupled
(`p <- p * (1 - lr * wd)`) with the scheduled multiplier, the same for every
group (regularizers.apply_decoupled_decay).

Newton-Schulz coefficients (`train.muon_coefficients`): torch's Muon takes one
(a, b, c) for every iteration; the best record's Polar-Express tuples change
per iteration (5 minimax tuples: after 5 steps on random matrices the RMS
distance of the singular values from 1 is 0.09-0.12, the standard tuple's
0.20; tests/train/test_muon_schedule.py). `standard` is torch's Muon as it is;
anything else is built by train/muon.py (imported, and shipped, only then).

Learning-rate multiplier: optional linear warmup, then 1, then a linear
warmdown over the last `warmdown_steps` to 0, or to no less than `min_lr`
(the record's floor: the line is clamped, not rescaled). Under a wallclock cap
the warmdown is placed from the measured step time, as the reference does.
`warmdown_frac` > 0 replaces `warmdown_steps` with the record's rule: the
warmdown covers that fraction of training, by wallclock or by steps, whichever
is further along (`training_fraction`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pgolf.schema import TrainConfig


@dataclass
class OptimizerSet:
    muon: torch.optim.Optimizer | None
    adam: torch.optim.Optimizer
    groups: dict[str, list[tuple[str, torch.nn.Parameter]]]
    """Parameter groups by role (matrix / embed / scalar), as classified for decay."""

    @property
    def all(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.muon, self.adam) if opt is not None]

    def zero_grad(self) -> None:
        for opt in self.all:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.all:
            opt.step()

    def set_lr_multiplier(self, mult: float) -> None:
        for opt in self.all:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * mult

    def set_muon_momentum(self, momentum: float) -> None:
        if self.muon is not None:
            for group in self.muon.param_groups:
                group["momentum"] = momentum

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.all]

    def load_state_dict(self, states: list[dict]) -> None:
        for opt, state in zip(self.all, states):
            opt.load_state_dict(state)


def build_optimizers(groups: dict[str, list[tuple[str, torch.nn.Parameter]]], cfg: TrainConfig,
                     tied: bool, fused: bool = False) -> OptimizerSet:
    """Muon for `matrix`, Adam for `embed` and `scalar` (each with its own base LR); `fused` Adam on CUDA."""
    matrices = [p for _, p in groups.get("matrix", [])]
    muon = None
    if matrices:
        kwargs = dict(lr=cfg.matrix_lr, momentum=cfg.muon_momentum, nesterov=True, ns_steps=cfg.muon_ns_steps,
                      weight_decay=0.0, adjust_lr_fn="original")
        if cfg.muon_coefficients == "standard":
            muon = torch.optim.Muon(matrices, **kwargs)
        else:  # only then: a packed script carries train/muon.py only then
            from pgolf.train.muon import build_muon

            muon = build_muon(matrices, cfg, kwargs)
    adam_groups = []
    embed = [(n, p) for n, p in groups.get("embed", [])]
    for name, param in embed:
        lr = cfg.head_lr if (name.startswith("lm_head") and not tied) else cfg.embed_lr
        adam_groups.append({"params": [param], "lr": lr})
    scalars = [p for _, p in groups.get("scalar", [])]
    if scalars:
        adam_groups.append({"params": scalars, "lr": cfg.scalar_lr})
    adam = torch.optim.Adam(adam_groups, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, fused=fused)
    for opt in (muon, adam):
        if opt is not None:
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]
    return OptimizerSet(muon=muon, adam=adam, groups=groups)


def muon_momentum_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup of Muon momentum from `muon_momentum_start` to `muon_momentum`."""
    if cfg.muon_momentum_warmup_steps <= 0:
        return cfg.muon_momentum
    frac = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    return (1 - frac) * cfg.muon_momentum_start + frac * cfg.muon_momentum


def lr_multiplier(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
    """LR multiplier at `step` (warmup, flat, linear warmdown floored at `min_lr`; wallclock-aware)."""
    warm = min((step + 1) / cfg.lr_warmup_steps, 1.0) if cfg.lr_warmup_steps > 0 else 1.0
    return warm * max(_warmdown(step, elapsed_s, cfg), cfg.min_lr)


def _warmdown(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
    """The warmdown's line: 1 before it, falling to 0 at the end of training."""
    if cfg.warmdown_frac > 0:
        frac = training_fraction(step, elapsed_s, cfg)
        return min((1.0 - frac) / cfg.warmdown_frac, 1.0)
    if cfg.warmdown_steps <= 0:
        return 1.0
    start = max(cfg.iterations - cfg.warmdown_steps, 0)
    by_steps = max((cfg.iterations - step) / max(cfg.warmdown_steps, 1), 0.0) if step >= start else 1.0
    if cfg.wallclock_s <= 0:
        return by_steps
    step_s = elapsed_s / max(step, 1)
    warmdown_s = cfg.warmdown_steps * step_s
    remaining_s = max(cfg.wallclock_s - elapsed_s, 0.0)
    by_time = remaining_s / max(warmdown_s, 1e-9) if remaining_s <= warmdown_s else 1.0
    return min(by_time, by_steps)


def training_fraction(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
    """How far through training we are (0..1): by steps, or by wallclock when that ends first."""
    frac = step / max(cfg.iterations, 1)
    if cfg.wallclock_s > 0:
        frac = max(frac, elapsed_s / cfg.wallclock_s)
    return min(frac, 1.0)

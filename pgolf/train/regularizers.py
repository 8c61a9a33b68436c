"""Training-side regularizers: decay groups and schedules, penalties, clipping, stopping rules.

The training loop calls these; each is a small function of tensors and the
`RegConfig`. What is non-standard, and why:

- Parameter groups follow the optimizer split of the reference: `matrix` =
  the 2-D `.weight`s under `blocks.` (Muon), `embed` = `tok_emb`/`lm_head`,
  `scalar` = the rest (gains, scales, `resid_mix`, `skip_weights`; Adam).
  `resid_mix` is 2-D but is not a `.weight`, so it stays a scalar.
- Weight decay is decoupled and identical in form for every group,
  `p <- p * (1 - lr * wd)`, applied by the loop after the optimizer step.
- L1 is applied as a proximal soft-threshold step after the optimizer step
  (`apply_l1_prox`): a subgradient `l1 * sign(w)` in the loss only makes
  weights oscillate around zero, never *exactly* zero, and exact zeros are
  what the compressor rewards. `penalties.penalty_terms` still reports the L1 value, but
  detached, so adding every term to the loss never applies L1 twice.
- L2, z-loss, the quantization-error penalty and the singular-value penalty
  are loss terms in `penalties.py`, imported only when a coefficient is set
  (a packed script carries them only then).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.errors import ConfigError, TrainingError
from pgolf.schema import RegConfig
from pgolf.train.qat import canonical_name

NamedParams = Iterable[tuple[str, Tensor]]
GROUPS = ("matrix", "embed", "scalar")

# --------------------------------------------------------------------------- groups


def param_group(name: str, param: Tensor) -> str:
    """matrix (2-D `.weight` under `blocks.`), embed (`tok_emb`, `lm_head`) or scalar (the rest)."""
    name = canonical_name(name)
    if name.startswith("blocks.") and name.endswith(".weight") and param.ndim == 2:
        return "matrix"
    if name.startswith(("tok_emb.", "lm_head.")):
        return "embed"
    return "scalar"


def param_groups(named_params: NamedParams, cfg: RegConfig) -> dict[str, list[tuple[str, Tensor]]]:
    """Parameters by group, with plain names; checks `cfg.no_decay` against these names."""
    groups: dict[str, list[tuple[str, Tensor]]] = {group: [] for group in GROUPS}
    for name, param in named_params:
        groups[param_group(name, param)].append((canonical_name(name), param))
    check_no_decay_names([pair for group in groups.values() for pair in group], cfg)
    return groups


def check_no_decay_names(named_params: NamedParams, cfg: RegConfig) -> None:
    """Every `reg.no_decay` entry must match a parameter name.

    The schema's default entries are exempt: they name optional parameters of
    the reference GPT (`ln_scale` exists only when learned, `skip_weights` only
    with two or more blocks), so the defaults fit every model size.
    """
    names = [canonical_name(name) for name, _ in named_params]
    optional = set(RegConfig().no_decay)
    for fragment in cfg.no_decay:
        if fragment not in optional and not any(fragment in name for name in names):
            raise ConfigError(f"reg.no_decay entry {fragment!r} matches no parameter")


def decay_for(name: str, group: str, cfg: RegConfig) -> float:
    """Weight decay of one parameter: 0 when its name contains a `no_decay` fragment, else its group's."""
    if any(fragment in canonical_name(name) for fragment in cfg.no_decay):
        return 0.0
    return {"matrix": cfg.weight_decay, "embed": cfg.embed_weight_decay, "scalar": cfg.scalar_weight_decay}[group]


def describe_decay(groups: dict[str, list[tuple[str, Tensor]]], cfg: RegConfig) -> list[str]:
    """Lines for the start of training: which groups get which decay, and what is excluded."""
    lines = []
    excluded: list[tuple[str, Tensor]] = []
    for group in GROUPS:
        by_wd: dict[float, list[tuple[str, Tensor]]] = {}
        for name, param in groups.get(group, []):
            wd = decay_for(name, group, cfg)
            (by_wd.setdefault(wd, []) if wd > 0 else excluded).append((name, param))
        for wd, members in sorted(by_wd.items()):
            numel = sum(p.numel() for _, p in members)
            lines.append(f"decay {group}: wd {wd:g} on {len(members)} tensors ({numel:,} params)")
    schedule = cfg.decay_schedule
    if schedule != "constant":
        schedule += f" to x{cfg.decay_schedule_factor:g} from {cfg.decay_schedule_start:g} of training"
    lines.append(f"decay schedule: {schedule}")
    if excluded:
        numel = sum(p.numel() for _, p in excluded)
        names = ", ".join(sorted({re.sub(r"^blocks\.\d+\.", "blocks.*.", name) for name, _ in excluded}))
        lines.append(f"no decay: {len(excluded)} tensors ({numel:,} params): {names}")
    return lines


# --------------------------------------------------------------------------- decay


def decay_multiplier(progress_frac: float, cfg: RegConfig) -> float:
    """Multiplier on every group's decay at this point of training (0..1).

    `constant` is 1 throughout. `ramp` and `taper` share one shape: 1 until
    `decay_schedule_start`, then linear to `decay_schedule_factor` at the end.
    They differ in intent: `ramp` (factor > 1) pushes small weights toward
    zero during warmdown, just before quantization; `taper` (factor < 1)
    relaxes decay late so the final weights fit the data rather than the prior.
    """
    if cfg.decay_schedule == "constant" or progress_frac <= cfg.decay_schedule_start:
        return 1.0
    span = 1.0 - cfg.decay_schedule_start
    frac = 1.0 if span <= 0 else min((progress_frac - cfg.decay_schedule_start) / span, 1.0)
    return 1.0 + (cfg.decay_schedule_factor - 1.0) * frac


@torch.no_grad()
def apply_decoupled_decay(params: Iterable[Tensor], lr: float, wd: float) -> None:
    """p <- p * (1 - lr * wd), in place, after the optimizer step (lr = the scheduled LR)."""
    if wd == 0 or lr == 0:
        return
    torch._foreach_mul_(list(params), 1.0 - lr * wd)  # one kernel launch for the group


@torch.no_grad()
def apply_l1_prox(params: Iterable[Tensor], threshold: float) -> None:
    """Soft-threshold in place: p <- sign(p) * max(|p| - threshold, 0); threshold = lr * l1.

    The proximal step of `l1 * sum|w|`: weights that end up within
    `threshold` of zero become exactly zero.
    """
    if threshold <= 0:
        return
    for p in params:
        p.copy_(torch.sign(p) * (p.abs() - threshold).clamp_min_(0))


# --------------------------------------------------------------------------- loss terms


def cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean training CE, optionally label-smoothed; (..., V) logits, (...) targets.

    Only for the training loss: val_bpb is always plain CE (see evaluate.py).
    """
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           label_smoothing=label_smoothing)


# --------------------------------------------------------------------------- gradients and guards


def clip_gradients(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """Clip the global gradient norm to `max_norm` (0 = no clipping); returns the pre-clip norm.

    The norm comes back as a 0-d tensor so the loop does not force a device
    sync every step; `float(norm)` it when logging.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm).detach()
    return torch.nn.utils.get_total_norm([p.grad for p in params]).detach()


def check_finite(loss: Tensor | float, step: int, last_good_step: int) -> None:
    """Raise TrainingError when the loss is NaN or infinite; names the step and the weights kept."""
    value = float(loss)
    if not math.isfinite(value):
        raise TrainingError(f"loss became {value} at step {step}; kept the weights from step {last_good_step}")


class EarlyStopping:
    """Stop after `patience` validations in a row without a new best val BPB (0 = never stop)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = math.inf
        self.bad_checks = 0

    def update(self, val_bpb: float) -> bool:
        """Record one validation; True when training should stop."""
        if val_bpb < self.best:
            self.best = val_bpb
            self.bad_checks = 0
        else:
            self.bad_checks += 1
        return self.patience > 0 and self.bad_checks >= self.patience


class GapMonitor:
    """Warn when val BPB - train BPB exceeds `threshold` and has grown since the last check."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.last_gap = -math.inf

    def update(self, train_bpb: float, val_bpb: float) -> str | None:
        """Record one check; a one-line warning, or None."""
        gap, last = val_bpb - train_bpb, self.last_gap
        self.last_gap = gap
        if gap > self.threshold and gap > last:
            grew = f", up from {last:.4f}" if math.isfinite(last) else ""
            return (f"val BPB {val_bpb:.4f} is {gap:.4f} above train BPB {train_bpb:.4f} "
                    f"(reg.gap_warn {self.threshold:g}){grew}: the model may be overfitting")
        return None


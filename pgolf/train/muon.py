"""Muon with other Newton-Schulz coefficients than torch's (`train.muon_coefficients` other than standard).

One (a, b, c) for every iteration goes to torch's Muon as it is; several go to `PerStepMuon`, which overrides only
the step (torch has no hook for the orthogonalisation alone) and keeps torch's state_dict. With more iterations
than tuples the last tuple repeats (the record's code would stop after its 5). Imported only when the config
asks for it (bundle.graph.GATED).
"""

from __future__ import annotations

import math

import torch

from pgolf.errors import ConfigError
from pgolf.schema import TrainConfig

Coefficients = tuple[tuple[float, float, float], ...]

MUON_COEFFICIENTS: dict[str, Coefficients] = {
    "standard": ((3.4445, -4.7750, 2.0315),),  # torch's default (Keller Jordan's quintic), every iteration
    "polar_express": (  # the best record's per-iteration tuples (its _PE_COEFFS, from PR #1344)
        (8.156554524902461, -22.48329292557795, 15.878769915207462),
        (4.042929935166739, -2.808917465908714, 0.5000178451051316),
        (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
        (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
        (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
    ),
}
"""`train.muon_coefficients` names -> their (a, b, c) per Newton-Schulz iteration."""


def build_muon(matrices: list[torch.nn.Parameter], cfg: TrainConfig, kwargs: dict) -> torch.optim.Muon:
    """torch's Muon for one tuple, PerStepMuon for several."""
    coefficients = muon_coefficients(cfg)
    if len(coefficients) == 1:
        return torch.optim.Muon(matrices, ns_coefficients=coefficients[0], **kwargs)
    return PerStepMuon(matrices, coefficients, **kwargs)


def muon_coefficients(cfg: TrainConfig) -> Coefficients:
    """`train.muon_coefficients` as (a, b, c) tuples: a named set, or the explicit list."""
    spec = cfg.muon_coefficients
    if isinstance(spec, str):
        if spec not in MUON_COEFFICIENTS:
            raise ConfigError(f"train.muon_coefficients must be one of {', '.join(MUON_COEFFICIENTS)} or a list of "
                              f"[a, b, c], got {spec!r}")
        return MUON_COEFFICIENTS[spec]
    return tuple((float(a), float(b), float(c)) for a, b, c in spec)


def newton_schulz(update: torch.Tensor, coefficients: Coefficients, eps: float) -> torch.Tensor:
    """Orthogonalise a 2-D update in bf16 as torch's Muon does, iteration i with `coefficients[i]`."""
    x = update.bfloat16()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T  # (rows <= cols)
    x = x / x.norm().clamp(min=eps)  # spectral norm <= 1
    for a, b, c in coefficients:
        gram = x @ x.T  # (rows, rows)
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # a x + (b G + c G^2) x
    return x.T if tall else x


class PerStepMuon(torch.optim.Muon):
    """torch's Muon with its own (a, b, c) for each Newton-Schulz iteration, the last repeating.

    Only the orthogonalisation differs; momentum, Nesterov, the decay and the LR adjustment (always "original",
    sqrt(max(1, rows/cols)), as pgolf builds it) are torch's, and so is the state_dict (the groups keep torch's one
    `ns_coefficients`: the first tuple). No closure: pgolf's loop never passes one.
    """

    def __init__(self, params, coefficients: Coefficients, **kwargs):
        super().__init__(params, ns_coefficients=coefficients[0], **kwargs)
        self.coefficients = coefficients

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)
            last = len(self.coefficients) - 1
            per_step = tuple(self.coefficients[min(i, last)] for i in range(group["ns_steps"]))
            lr, momentum = group["lr"], group["momentum"]
            for param, grad, buf in zip(params, grads, bufs):
                buf.lerp_(grad, 1 - momentum)
                update = grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = newton_schulz(update, per_step, group["eps"])
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update, alpha=-lr * math.sqrt(max(1, param.size(0) / param.size(1))))

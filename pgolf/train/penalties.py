"""Penalty terms added to the training loss: L2, z-loss, quantization error, singular-value balance (and L1, logged).

Each is returned scaled by its coefficient and by name, so the loop logs each
beside the CE. The loop imports this module only when one of `reg.l1`, `reg.l2`,
`reg.z_loss`, `reg.qerr_penalty` or `reg.sv_penalty` is set, so a packed script
whose config uses none does not carry it. L1 itself is applied as a proximal
step (`regularizers.apply_l1_prox`); its term here is detached and only logged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pgolf.schema import RegConfig
from pgolf.train.qat import check_bits, row_step
from pgolf.train.regularizers import NamedParams, param_group


def z_loss(logits: Tensor) -> Tensor:
    """mean(logsumexp(logits)^2): keeps the softmax normalizer near 1."""
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


def quant_error(w: Tensor, bits: int) -> Tensor:
    """sum(w^2 * delta^2 / 12), delta = the row's quantization step at `bits` (CROWN-Q style).

    delta^2/12 is the variance of uniform rounding noise on a grid of step
    delta. delta is *not* detached: its gradient reaches each row's largest
    |w| and pulls it in, which makes the grid finer for the whole row; a
    detached delta would reduce this to an L2 weighted by row range.
    """
    delta = row_step(w, bits)  # (R, 1)
    return (w.float().square() * delta.square()).sum() / 12


def sv_imbalance(w: Tensor) -> Tensor:
    """Squared coefficient of variation of the squared singular values of w (0 = perfectly balanced).

    r * sum(s^4) / (sum s^2)^2 - 1 over the r = min(rows, cols) singular values,
    computed without an SVD: sum s^2 = tr(G), sum s^4 = ||G||_F^2 for the Gram
    matrix G = W W^T of the smaller side. One r x r matmul per matrix, so it is
    cheap enough to add every step (SIGReg spirit: use all directions).
    """
    w = w.float()
    gram = w @ w.T if w.size(0) <= w.size(1) else w.T @ w  # (r, r)
    r = gram.size(0)
    return r * gram.square().sum() / gram.diagonal().sum().square().clamp_min(1e-30) - 1


def penalty_terms(named_params: NamedParams, logits: Tensor | None, cfg: RegConfig,
                  export_bits: int) -> dict[str, Tensor]:
    """The enabled penalty terms, each already scaled by its coefficient; add their sum to the CE.

    l1, l2, qerr and sv act on the block matrices. `l1` is detached (L1 is
    applied by `apply_l1_prox`) and only logged. `z_loss` needs the logits.
    """
    matrices = [p for name, p in named_params if param_group(name, p) == "matrix"]
    terms: dict[str, Tensor] = {}
    if cfg.l1 > 0 and matrices:
        terms["l1"] = cfg.l1 * sum(p.detach().float().abs().sum() for p in matrices)
    if cfg.l2 > 0 and matrices:
        terms["l2"] = cfg.l2 * sum(p.float().square().sum() for p in matrices)
    if cfg.z_loss > 0 and logits is not None:
        terms["z_loss"] = cfg.z_loss * z_loss(logits)
    if cfg.qerr_penalty > 0 and matrices:
        check_bits(export_bits, "export.bits")
        terms["qerr"] = cfg.qerr_penalty * sum(quant_error(p, export_bits) for p in matrices)
    if cfg.sv_penalty > 0 and matrices:
        terms["sv"] = cfg.sv_penalty * sum(sv_imbalance(p) for p in matrices)
    return terms

"""Symmetric per-row int-N quantization (N = 2..8) with four clip strategies.

What is non-standard here:
- Every tensor is quantized as rows: a matrix row by row, a higher-rank tensor
  as (shape[0], -1), a vector or scalar as one row. One fp16 scale per row;
  values are stored one per int8 whatever N is (the codec removes the slack).
- The integer grid is rounded against the *stored* fp16 scale, so the
  dequantized value is always the nearest grid point (error <= step/2 inside
  the clip). The reference script rounds against the fp32 scale and then
  stores it as fp16; on int8 that moves about 1% of values by one step.
- `scale_min` reproduces the reference's floor `scale >= 1/127` (it binds on
  rows whose clip is below 1.0, i.e. most rows of a trained baseline); pgolf's
  own strategies use no floor.
- Clip strategies per row: `max` (row max |w|), `percentile` (torch.quantile of
  |w|, linear interpolation, as the reference), `sdclip` (k * std(row), not
  capped at the row max: a k past the max makes the step coarser, which is how
  SDClip trades accuracy for bytes) and `mse` (GPTQ-lite: the clip among
  fractions of the row max with the smallest squared error, a coarse grid of
  20 then a fine grid of 10 around each row's best).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pgolf.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from pgolf.export.lqer import Factors

GROUPS = ("embed", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_out", "other")
CLIPS = ("max", "percentile", "sdclip", "mse")
CONTROL_PATTERNS = ("q_gain", "attn_scale", "mlp_scale", "resid_mix", "skip_weight", "ln_scale", "skip_gates",
                    "attn_gate_w", "smear_gate", "smear_lambda", "parallel_post_lambdas", "parallel_resid_lambdas")
"""Name fragments of control tensors, kept float whatever their size (export.control_dtype: fp32 as the reference)."""

_GROUP_PATTERNS = (
    (".attn.c_q.", "attn_q"), (".attn.c_k.", "attn_k"), (".attn.c_v.", "attn_v"), (".attn.proj.", "attn_out"),
    (".mlp.fc.", "mlp_in"), (".mlp.proj.", "mlp_out"),
)
_FP16_MAX = 65504.0
_FP16_TINY = 2.0**-24  # smallest positive fp16 (subnormal): keeps all-zero rows divisible
_QUANTILE_MAX_NUMEL = 2**24 - 1  # torch.quantile refuses larger inputs
_MSE_COARSE = torch.linspace(0.05, 1.0, 20)
_MSE_FINE = torch.linspace(-0.05, 0.05, 11)


def tensor_group(name: str) -> str:
    """The tensor group of a state-dict key: embed, attn_q/k/v/out, mlp_in/out or other."""
    dotted = f".{name}."
    if ".tok_emb." in dotted or ".lm_head." in dotted:
        return "embed"
    for pattern, group in _GROUP_PATTERNS:
        if pattern in dotted:
            return group
    return "other"


def is_control(name: str) -> bool:
    """True for gains, scales, mixes, skip weights and the record-era gates and lane mixes, which stay float."""
    return any(pattern in name for pattern in CONTROL_PATTERNS)


def check_bits(bits: int, where: str = "bits") -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ConfigError(f"{where} must be an integer in 2..8, got {bits!r}")


def qmax_of(bits: int) -> int:
    """Largest integer level of symmetric int-`bits`: 2^(bits-1) - 1 (int6 -> 31)."""
    return 2 ** (bits - 1) - 1


@dataclass
class QuantizedTensor:
    q: Tensor
    """int8 levels in [-qmax, qmax], same shape as the original tensor."""
    scale: Tensor
    """float16 step per row, shape (rows,)."""
    bits: int
    lqer: Factors | None = None
    """The low-rank correction of its quantization error (export.lqer_rank), added when dequantized."""


def as_rows(w: Tensor) -> Tensor:
    """A float32 (rows, cols) view: (shape[0], -1) for rank >= 2, one row otherwise."""
    w = w.detach().float()
    return w.reshape(w.shape[0], -1) if w.ndim >= 2 else w.reshape(1, -1)


def _percentile_rows(a: Tensor, percentile: float) -> Tensor:
    rows_per_chunk = max(1, _QUANTILE_MAX_NUMEL // max(1, a.shape[1]))
    parts = [torch.quantile(chunk, percentile / 100.0, dim=1) for chunk in a.split(rows_per_chunk)]
    return torch.cat(parts)


def _stored_scale(clip: Tensor, qmax: int, scale_min: float) -> Tensor:
    """fp32 values of the fp16 scales for per-row clips (rows,)."""
    scale = (clip / qmax).clamp_min(max(scale_min, _FP16_TINY))
    if bool((scale > _FP16_MAX).any()):
        raise ArtifactError(f"a row scale of {float(scale.max()):.4g} does not fit float16 (|w| too large)")
    return scale.to(torch.float16).float()


def _row_sq_error(rows: Tensor, clip: Tensor, qmax: int) -> Tensor:
    scale = _stored_scale(clip, qmax, 0.0)[:, None]  # (R, 1)
    q = torch.clamp(torch.round(rows / scale), -qmax, qmax)
    return ((q * scale - rows) ** 2).sum(dim=1)  # (R,)


def _mse_clip(rows: Tensor, qmax: int) -> Tensor:
    """Per-row clip minimizing squared error, searched over fractions of the row max."""
    row_max = rows.abs().amax(dim=1)  # (R,)
    best_ratio = torch.ones_like(row_max)
    best_err = _row_sq_error(rows, row_max, qmax)
    for ratio in _MSE_COARSE.tolist():
        err = _row_sq_error(rows, row_max * ratio, qmax)
        better = err < best_err
        best_err, best_ratio = torch.where(better, err, best_err), torch.where(better, ratio, best_ratio)
    centre = best_ratio.clone()
    for offset in _MSE_FINE.tolist():
        ratio = (centre + offset).clamp(0.01, 1.0)
        err = _row_sq_error(rows, row_max * ratio, qmax)
        better = err < best_err
        best_err, best_ratio = torch.where(better, err, best_err), torch.where(better, ratio, best_ratio)
    return row_max * best_ratio


def row_clip(rows: Tensor, bits: int, clip: str, clip_percentile: float = 99.99984, clip_k: float = 12.0) -> Tensor:
    """Per-row clip |w| (rows,) of a (rows, cols) float tensor under strategy `clip`."""
    a = rows.abs()
    if clip == "max":
        return a.amax(dim=1)
    if clip == "percentile":
        return _percentile_rows(a, clip_percentile)
    if clip == "sdclip":
        std = rows.std(dim=1) if rows.shape[1] > 1 else a[:, 0]
        return clip_k * std
    if clip == "mse":
        return _mse_clip(rows, qmax_of(bits))
    raise ConfigError(f"export.clip must be one of {', '.join(CLIPS)}, got {clip!r}")


def quantize_rows(w: Tensor, bits: int, clip: str = "max", clip_percentile: float = 99.99984,
                  clip_k: float = 12.0, scale_min: float = 0.0) -> QuantizedTensor:
    """Symmetric per-row int-`bits` quantization of `w` (any shape) with an fp16 scale per row."""
    check_bits(bits)
    rows = as_rows(w)  # (R, C)
    if not bool(torch.isfinite(rows).all()):
        raise ArtifactError("cannot quantize a tensor with NaN or inf values")
    qmax = qmax_of(bits)
    clip_abs = row_clip(rows, bits, clip, clip_percentile, clip_k)[:, None]  # (R, 1)
    scale = _stored_scale(clip_abs[:, 0], qmax, scale_min)  # (R,)
    clipped = torch.maximum(torch.minimum(rows, clip_abs), -clip_abs)  # a scale floor widens the grid, not the clip
    q = torch.clamp(torch.round(clipped / scale[:, None]), -qmax, qmax).to(torch.int8)
    return QuantizedTensor(q=q.reshape(w.shape), scale=scale.to(torch.float16), bits=bits)


def dequantize(qt: QuantizedTensor) -> Tensor:
    """float32 tensor q * scale (+ its LQER correction), in the original shape."""
    rows = qt.q.reshape(qt.scale.shape[0], -1).float() * qt.scale.float()[:, None]
    if qt.lqer is not None:
        from pgolf.export.lqer import correction  # only then: a packed script carries lqer.py only then

        rows = rows + correction(qt.lqer)
    return rows.reshape(qt.q.shape)

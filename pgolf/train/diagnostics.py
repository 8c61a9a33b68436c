"""Weight statistics that predict the artifact size, logged per parameter group during training.

Per group (matrix / embed / scalar, as in `regularizers.param_group`):
- `rms`: root mean square of the weights (compressed size tracks it closely);
- `zero_frac`: fraction of exact zeros (pruning, L1);
- `near_zero_frac`: fraction that rounds to 0 at the export bits, |w| < half
  the row's step (row max / (2^(bits-1)-1)). Relative to the row, not an
  absolute threshold, because export quantizes per row: it is the fraction the
  export will turn into zeros whatever the weights' scale;
- `entropy_bits`: order-0 entropy of the per-row integer codes at `bits`
  (row-max clip), pooled over the group: bits per weight an ideal entropy
  coder would need without context, a lower bound a byte codec approaches.
Tensors are quantized as (rows = first dim, the rest flattened); a vector is one row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from pgolf.export.quantize import qmax_of
from pgolf.train.qat import check_bits, quantize_rows
from pgolf.train.regularizers import param_group


@torch.no_grad()
def weight_diagnostics(named_params: Iterable[tuple[str, Tensor]], bits: int) -> dict[str, dict[str, float]]:
    """{group: {numel, rms, zero_frac, near_zero_frac, entropy_bits}} for the groups present."""
    check_bits(bits, "export.bits")
    qmax = qmax_of(bits)
    acc: dict[str, dict[str, float]] = {}
    counts: dict[str, Tensor] = {}
    for name, param in named_params:
        group = param_group(name, param)
        w = param.detach().float().reshape(param.shape[0] if param.ndim > 1 else 1, -1)  # (R, C)
        codes, _ = quantize_rows(w, bits)
        stats = acc.setdefault(group, {"numel": 0.0, "sum_sq": 0.0, "zeros": 0.0, "near_zeros": 0.0})
        stats["numel"] += w.numel()
        stats["sum_sq"] += float(w.square().sum())
        stats["zeros"] += float((w == 0).sum())
        stats["near_zeros"] += float((codes == 0).sum())
        hist = torch.bincount(codes.flatten().long().cpu() + qmax, minlength=2 * qmax + 1)
        counts[group] = counts[group] + hist if group in counts else hist
    out = {}
    for group, stats in acc.items():
        n = stats["numel"]
        p = counts[group].double() / n
        p = p[p > 0]
        out[group] = {
            "numel": n,
            "rms": math.sqrt(stats["sum_sq"] / n),
            "zero_frac": stats["zeros"] / n,
            "near_zero_frac": stats["near_zeros"] / n,
            "entropy_bits": float(-(p * p.log2()).sum()),
        }
    return out

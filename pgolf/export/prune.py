"""Export-time pruning: zero weights before quantization, or small levels after.

Each function returns the new tensor and how many entries it set to zero, so
the export table can show what pruning did. Counts are exact:
`round(fraction * n)` entries (or rows, columns, heads), ties broken by index.

What is non-standard here:
- `heads` removes whole attention heads per layer: a query head's rows of
  c_q and its columns of proj together (a head with zero queries still
  attends, uniformly, so only its proj columns make it silent), and the rows
  of c_k and c_v of a KV group all of whose query heads are gone. A head's
  score is the size of its output path, |proj columns| x |its KV group's
  c_v rows|.
- `prune_selective` acts on quantized levels: it zeroes the nonzero levels
  whose removal adds the least squared error, (|w| - 0)^2 - (w - q*s)^2, which
  is the "zero small quantized values until it fits" trick of the records made
  error-aware. Its fraction counts all entries of the tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pgolf.errors import ConfigError
from pgolf.export.quantize import QuantizedTensor, as_rows

STRUCTURED = ("rows", "cols", "heads")


def _count(fraction: float, n: int, what: str) -> int:
    if not 0 <= fraction < 1:
        raise ConfigError(f"export.prune must be in [0, 1), got {fraction} ({what})")
    return round(fraction * n)


def _smallest(scores: Tensor, k: int) -> Tensor:
    """Indices of the k smallest entries of a 1-D tensor (stable: lower index first on ties)."""
    return torch.sort(scores, stable=True).indices[:k]


def prune_magnitude(w: Tensor, fraction: float) -> tuple[Tensor, int]:
    """Zero the round(fraction * numel) entries of smallest |w|."""
    k = _count(fraction, w.numel(), "magnitude")
    flat = w.detach().clone().reshape(-1)
    flat[_smallest(flat.abs().float(), k)] = 0
    return flat.reshape(w.shape), k


def prune_global(tensors: dict[str, Tensor], fraction: float) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Zero the round(fraction * total) entries of smallest |w| across all tensors together."""
    names = list(tensors)
    sizes = [tensors[n].numel() for n in names]
    k = _count(fraction, sum(sizes), "global")
    flat = torch.cat([tensors[n].detach().float().reshape(-1) for n in names])
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[_smallest(flat.abs(), k)] = False
    pruned, zeros = {}, {}
    for name, part in zip(names, mask.split(sizes), strict=True):
        w = tensors[name].detach().clone()
        w.reshape(-1)[~part] = 0
        pruned[name], zeros[name] = w, int((~part).sum())
    return pruned, zeros


def prune_rows(w: Tensor, fraction: float) -> tuple[Tensor, int]:
    """Zero the round(fraction * rows) rows of smallest L2 norm; returns entries zeroed."""
    rows = as_rows(w)  # (R, C)
    k = _count(fraction, rows.shape[0], "rows")
    out = rows.clone()
    out[_smallest(rows.norm(dim=1), k)] = 0
    return out.reshape(w.shape).to(w.dtype), k * rows.shape[1]


def prune_cols(w: Tensor, fraction: float) -> tuple[Tensor, int]:
    """Zero the round(fraction * cols) columns of smallest L2 norm; returns entries zeroed."""
    rows = as_rows(w)  # (R, C)
    k = _count(fraction, rows.shape[1], "cols")
    out = rows.clone()
    out[:, _smallest(rows.norm(dim=0), k)] = 0
    return out.reshape(w.shape).to(w.dtype), k * rows.shape[0]


def _head_blocks(w: Tensor, head_dim: int, dim: int, what: str) -> Tensor:
    """(heads, head_dim * other) view of w's blocks of `head_dim` rows (dim 0) or columns (dim 1)."""
    if w.ndim != 2 or head_dim <= 0 or w.shape[dim] % head_dim:
        raise ConfigError(f"prune_kind=heads needs {what} whose dim {dim} is a multiple of head_dim {head_dim}, "
                          f"got shape {tuple(w.shape)}")
    return w.detach().float().transpose(0, dim).reshape(w.shape[dim] // head_dim, -1)


def _zero_heads(w: Tensor, heads: Tensor, head_dim: int, dim: int) -> Tensor:
    out = w.detach().clone()
    for h in heads.tolist():
        out.narrow(dim, h * head_dim, head_dim).zero_()
    return out


def prune_heads(attn: dict[str, Tensor], fraction: float,
                head_dim: int) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Remove the round(fraction * heads) query heads of least output-path norm from one attention layer.

    `attn` holds "q", "k", "v", "proj" (the c_q, c_k, c_v, proj weights). Returns the pruned tensors and the
    entries zeroed in each, under the same keys.
    """
    q = _head_blocks(attn["q"], head_dim, 0, "c_q")
    proj = _head_blocks(attn["proj"], head_dim, 1, "proj")
    v = _head_blocks(attn["v"], head_dim, 0, "c_v")
    _head_blocks(attn["k"], head_dim, 0, "c_k")
    heads, kv_heads = q.shape[0], v.shape[0]
    if proj.shape[0] != heads or heads % kv_heads:
        raise ConfigError(f"prune_kind=heads: {heads} query heads, {proj.shape[0]} proj heads and {kv_heads} "
                          "KV heads do not form an attention layer")
    group = torch.arange(heads) // (heads // kv_heads)  # KV head of each query head
    dead = _smallest(proj.norm(dim=1) * v.norm(dim=1)[group], _count(fraction, heads, "heads"))
    alive_groups = set(group[[h for h in range(heads) if h not in set(dead.tolist())]].tolist())
    dead_groups = torch.tensor([g for g in range(kv_heads) if g not in alive_groups], dtype=torch.long)
    out = {
        "q": _zero_heads(attn["q"], dead, head_dim, 0),
        "proj": _zero_heads(attn["proj"], dead, head_dim, 1),
        "k": _zero_heads(attn["k"], dead_groups, head_dim, 0),
        "v": _zero_heads(attn["v"], dead_groups, head_dim, 0),
    }
    zeros = {"q": len(dead) * q.shape[1], "proj": len(dead) * proj.shape[1],
             "k": len(dead_groups) * v.shape[1], "v": len(dead_groups) * v.shape[1]}
    return out, zeros


def prune_selective(qt: QuantizedTensor, w: Tensor, fraction: float) -> tuple[QuantizedTensor, int]:
    """Zero the round(fraction * numel) nonzero levels whose removal adds the least squared error."""
    rows = as_rows(w)  # (R, C)
    q = qt.q.reshape(rows.shape)
    scale = qt.scale.float()[:, None]  # (R, 1)
    k = _count(fraction, q.numel(), "selective")
    cost = rows**2 - (rows - q.float() * scale) ** 2  # added squared error if zeroed
    flat_q = q.clone().reshape(-1)
    nonzero = torch.nonzero(flat_q).squeeze(1)
    k = min(k, nonzero.numel())
    flat_q[nonzero[_smallest(cost.reshape(-1)[nonzero], k)]] = 0
    return QuantizedTensor(q=flat_q.reshape(qt.q.shape), scale=qt.scale, bits=qt.bits), k

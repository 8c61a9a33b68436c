"""LQER: low-rank quantization-error correction, stored beside a tensor's levels (`export.lqer_rank`).

For a quantized tensor W (rows x cols, its row view) with levels Q, the error E = W - deq(Q) is approximated by
its top `rank` singular directions, E ~ A B with A = U_r S_r (rows x r) and B = V_r^T (r x cols), and the tensor
loads as deq(Q) + deq(A) deq(B). The factors are quantized as the best record stores them (its LQER "asym" path):
- A: signed 2-bit levels -2..1 with one scale for the matrix (max |A| / 1.5);
- B: signed `bits`-bit levels -2^(bits-1)..2^(bits-1)-1 in groups of `group` consecutive values of B (row-major),
  one fp16 scale per group (group max / (2^(bits-1) - 0.5)).
With `group` 0 both factors are symmetric per row at `bits` instead (the record's plain path). Which tensors get
factors: the `top_k` with the largest Frobenius error, or those named. Imported only when an export or an
artifact uses it (bundle.graph.GATED).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from pgolf.errors import ConfigError

if TYPE_CHECKING:
    from pgolf.schema import ExportConfig

A_LEVELS = (-2, 1)
"""A's 2-bit levels: the record's asymmetric signed range."""


@dataclass
class Factors:
    """Quantized low-rank factors of one tensor's quantization error."""

    a: Tensor
    """int8 levels of A, (rows, rank)."""
    a_scale: Tensor
    """fp16 scales of A: one (group mode) or one per row (per-row mode)."""
    b: Tensor
    """int8 levels of B, (rank, cols)."""
    b_scale: Tensor
    """fp16 scales of B: one per group of `group` values, or one per row."""
    bits: int
    group: int

    @property
    def rank(self) -> int:
        return self.a.shape[1]


def _per_row(x: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    qmax = 2 ** (bits - 1) - 1
    scale = (x.abs().amax(dim=1).clamp_min(1e-10) / qmax).to(torch.float16)
    q = torch.clamp(torch.round(x / scale.float()[:, None]), -qmax, qmax).to(torch.int8)
    return q, scale


def _grouped(x: Tensor, bits: int, group: int) -> tuple[Tensor, Tensor]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    flat = x.reshape(-1, group)
    scale = (flat.abs().amax(dim=1).clamp_min(1e-10) / (high + 0.5)).to(torch.float16)
    q = torch.clamp(torch.round(flat / scale.float()[:, None]), low, high).to(torch.int8)
    return q.reshape(x.shape), scale


def factorize(error: Tensor, rank: int, bits: int, group: int) -> Factors:
    """The quantized rank-`rank` factors of `error` (rows, cols)."""
    U, S, Vh = torch.linalg.svd(error.double(), full_matrices=False)
    r = min(rank, S.numel())
    A, B = (U[:, :r] * S[:r]).float(), Vh[:r].float().contiguous()
    if group:
        a_scale = (A.abs().amax().clamp_min(1e-10) / 1.5).to(torch.float16).reshape(1)
        a = torch.clamp(torch.round(A / a_scale.float()), *A_LEVELS).to(torch.int8)
        b, b_scale = _grouped(B, bits, group)
    else:
        (a, a_scale), (b, b_scale) = _per_row(A, bits), _per_row(B, bits)
    return Factors(a, a_scale, b, b_scale, bits, group)


def correction(f: Factors) -> Tensor:
    """deq(A) deq(B): what the factors add to the tensor's row view (rows, cols), float32."""
    if f.group:
        A = f.a.float() * f.a_scale.float()
        B = (f.b.reshape(-1, f.group).float() * f.b_scale.float()[:, None]).reshape(f.b.shape)
    else:
        A = f.a.float() * f.a_scale.float()[:, None]
        B = f.b.float() * f.b_scale.float()[:, None]
    return A @ B


def level_range(f: Factors, which: str) -> tuple[int, int]:
    """The levels a stored factor may hold (the decoder checks them)."""
    if which == "a" and f.group:
        return A_LEVELS
    return -(2 ** (f.bits - 1)) if f.group else -(2 ** (f.bits - 1) - 1), 2 ** (f.bits - 1) - 1


def chosen(errors: dict[str, float], top_k: int, names: list[str]) -> list[str]:
    """The tensors that get factors: those named, else the `top_k` largest errors (ties by name)."""
    if names:
        return [n for n in errors if n in names]
    return sorted(errors, key=lambda n: (-errors[n], n))[:top_k]


def _rows(t: Tensor) -> Tensor:
    """The float32 (rows, cols) view export quantizes (quantize.as_rows)."""
    t = t.detach().float()
    return t.reshape(t.shape[0], -1) if t.ndim >= 2 else t.reshape(1, -1)


def add_factors(out: dict[str, object], targets: dict[str, Tensor], cfg: ExportConfig) -> None:
    """Attach factors to the chosen quantized tensors of `out` (quantize.QuantizedTensor: those with `q` levels;
    not imported, quantize imports this module), correcting the error against `targets` (the weights the levels
    stand for, pruning included)."""
    quant = {n: v for n, v in out.items() if hasattr(v, "q")}
    for name in cfg.lqer_tensors:
        if name not in quant:
            raise ConfigError(f"export.lqer_tensors names {name!r}, not a quantized tensor of this model")
    errors, error_rows = {}, {}
    for name, qt in quant.items():
        rows = _rows(targets[name])
        fits = not cfg.lqer_group or rows.shape[1] % cfg.lqer_group == 0
        if cfg.lqer_tensors and name in cfg.lqer_tensors and not fits:
            raise ConfigError(f"export.lqer_group ({cfg.lqer_group}) does not divide the row of {name} "
                              f"({rows.shape[1]} values)")
        if fits and (not cfg.lqer_tensors or name in cfg.lqer_tensors):
            levels = qt.q.reshape(rows.shape).float() * qt.scale.float()[:, None]
            error_rows[name] = rows - levels
            errors[name] = float(error_rows[name].norm())
    if not errors:
        raise ConfigError(f"export.lqer_group ({cfg.lqer_group}) divides the row of no quantized tensor")
    for name in chosen(errors, cfg.lqer_top_k, cfg.lqer_tensors):
        smaller = min(error_rows[name].shape)
        if cfg.lqer_rank > smaller:
            raise ConfigError(f"export.lqer_rank ({cfg.lqer_rank}) is above the smaller dimension of {name} "
                              f"({smaller})")
        quant[name].lqer = factorize(error_rows[name], cfg.lqer_rank, cfg.lqer_bits, cfg.lqer_group)


def read_factors(info: object, read: Callable[[str, int, int, int], bytes], rows: int, cols: int, fail) -> Factors:
    """A record's factors from its `lqer` field and `read(stream, bytes, item size, row length)`, every size and
    level checked (`fail(problem)` makes the error)."""
    if not isinstance(info, dict) or not all(isinstance(info.get(k), int) and not isinstance(info.get(k), bool)
                                             for k in ("rank", "bits", "group")):
        raise fail(f"has a bad lqer field {info!r}")
    rank, bits, group = info["rank"], info["bits"], info["group"]
    if not 1 <= rank <= min(rows, cols) or not 2 <= bits <= 8 or group < 0 or (group and (rank * cols) % group):
        raise fail(f"has an lqer field that cannot fit its shape: {info!r}")

    def levels(key: str, n: int, row_len: int) -> Tensor:
        return torch.from_numpy(np.frombuffer(read(key, n, 1, row_len), dtype=np.int8).copy())

    def scales(key: str, n: int) -> Tensor:
        s = np.frombuffer(read(key, 2 * n, 2, 0), dtype="<f2")
        if not np.isfinite(s).all():
            raise fail(f"has non-finite {key}")
        return torch.from_numpy(s.copy())

    f = Factors(levels("lqer_a", rows * rank, rank).reshape(rows, rank), scales("lqer_a_scale", 1 if group else rows),
                levels("lqer_b", rank * cols, cols).reshape(rank, cols),
                scales("lqer_b_scale", rank * cols // group if group else rank), bits, group)
    for which, tensor in (("a", f.a), ("b", f.b)):
        low, high = level_range(f, which)
        if int(tensor.min()) < low or int(tensor.max()) > high:
            raise fail(f"has lqer_{which} levels outside {low}..{high}")
    return f

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

from dataclasses import dataclass

import torch
from torch import Tensor

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

"""GPTQ: round each linear layer's levels in column order, pushing every column's rounding error onto the
columns not yet rounded, so that the layer's outputs on calibration inputs move the least.

- The Hessian of a layer is E[x x^T] over its inputs x on calibration tokens
  (`layer_hessians`: forward hooks on every nn.Linear, mean over tokens).
  The tied embedding is not an nn.Linear; it keeps the clip-only rounding.
- Scales stay those of the configured clip (`quantize_rows`); GPTQ only
  chooses levels on that grid, so the artifact format does not change.
- Columns go in descending Hessian diagonal ("act order": the most used
  inputs first, while the most columns are left to absorb their error),
  in blocks of 128 with the lazy batched update of the GPTQ paper.
- Dampening adds `damp` x mean(diag H) to the diagonal; a Hessian that is
  still not positive definite gets 10x more, up to three times.
- Entries that are zero before quantization (pruned) stay at level 0; their
  error is compensated like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from pgolf.errors import ArtifactError
from pgolf.export.quantize import QuantizedTensor, as_rows, qmax_of

_BLOCK = 128
_DAMP_RETRIES = 3


@torch.no_grad()
def layer_hessians(model: nn.Module, batches: Iterable[Tensor]) -> dict[str, Tensor]:
    """E[x x^T] of the inputs of every nn.Linear of `model` over the token batches, keyed by weight name."""
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}

    def hook_for(name: str):
        def hook(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()  # (tokens, in_features)
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    handles = [module.register_forward_pre_hook(hook_for(f"{name}.weight"))
               for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        for tokens in batches:
            model(tokens)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: (total / counts[name]).cpu() for name, total in sums.items()}


def _inverse_cholesky(hessian: Tensor, damp: float, name: str) -> Tensor:
    """Upper Cholesky factor of the dampened Hessian's inverse."""
    for attempt in range(_DAMP_RETRIES + 1):
        h = hessian.clone()
        h.diagonal().add_(damp * 10**attempt * float(h.diagonal().mean()))
        factor, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True)
    raise ArtifactError(f"GPTQ: the Hessian of {name} is not positive definite even with {damp * 10**_DAMP_RETRIES:g} "
                        "dampening (export.gptq_damp)")


def gptq_levels(w: Tensor, hessian: Tensor, qt: QuantizedTensor, damp: float = 0.01, name: str = "") -> QuantizedTensor:
    """`qt` (w quantized per row by its clip) with its levels re-chosen by GPTQ under `hessian` (cols x cols)."""
    return gptq_levels_many(w, hessian, [qt], damp, name)[0]


def gptq_levels_many(w: Tensor, hessian: Tensor, qts: list[QuantizedTensor], damp: float = 0.01,
                     name: str = "") -> list[QuantizedTensor]:
    """`gptq_levels` of `w` on several grids (bits, scales) at once, bit for bit what one call per grid gives:
    the Hessian is factored once and the column loop runs once for all grids (fit-budget quantizes each tensor
    on every grid of its search space)."""
    rows = as_rows(w)  # (R, C)
    n_cols = rows.shape[1]
    if hessian.shape != (n_cols, n_cols):
        raise ArtifactError(f"GPTQ: Hessian of shape {tuple(hessian.shape)} does not fit {name} ({n_cols} columns)")
    h = hessian.double().clone()
    dead = h.diagonal() == 0  # inputs that were always zero: any level does, take the clip's
    h[dead, dead] = 1.0
    order = torch.argsort(h.diagonal(), descending=True, stable=True)
    h = h[order][:, order]
    grids = len(qts)
    work = rows.double()[:, order].expand(grids, -1, -1).clone()  # (G, R, C), in processing order
    keep_zero = work[0] == 0  # (R, C)
    scale = torch.stack([qt.scale.double() for qt in qts])[:, :, None]  # (G, R, 1)
    qmax = torch.tensor([float(qmax_of(qt.bits)) for qt in qts], dtype=torch.float64)[:, None, None]  # (G, 1, 1)
    u = _inverse_cholesky(h, damp, name)
    levels = torch.empty_like(work)
    for start in range(0, n_cols, _BLOCK):
        end = min(start + _BLOCK, n_cols)
        block = work[:, :, start:end].clone()
        errors = torch.empty_like(block)
        u_block = u[start:end, start:end]
        for j in range(end - start):
            q = torch.minimum(torch.maximum(torch.round(block[:, :, j : j + 1] / scale), -qmax), qmax)  # (G, R, 1)
            q[:, keep_zero[:, start + j]] = 0
            levels[:, :, start + j : start + j + 1] = q
            err = (block[:, :, j : j + 1] - q * scale) / u_block[j, j]
            block[:, :, j + 1 :] -= err * u_block[j : j + 1, j + 1 :]
            errors[:, :, j : j + 1] = err
        for g in range(grids):  # one product per grid: the same arithmetic as a single grid's, bit for bit
            work[g, :, end:] -= errors[g] @ u[start:end, end:]
    out = []
    for g, qt in enumerate(qts):
        grid_levels = levels[g]
        grid_levels[:, dead[order]] = qt.q.reshape(rows.shape)[:, order][:, dead[order]].double()
        restored = torch.empty_like(grid_levels)
        restored[:, order] = grid_levels
        out.append(QuantizedTensor(q=restored.to(torch.int8).reshape(qt.q.shape), scale=qt.scale, bits=qt.bits))
    return out

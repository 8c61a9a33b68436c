"""Quantization-aware training with a straight-through estimator, applied from outside the model.

`enable_qat` registers a parametrization on chosen weight matrices, so the
model's forward sees `w + (fake_quant(w) - w).detach()`: the quantized values
in the forward pass, the identity in the backward pass (the gradient w.r.t.
the quantized weights lands unchanged on the latent float weights). The model
itself has no quantization flags.

Non-standard on purpose:
- The on/off switch is a 0-d bool *buffer*, not a Python bool. A Python flag
  read inside a compiled forward gets baked into the graph; one of the records
  lost its QAT that way (torch.compile constant-folded the "QAT enabled" flag,
  so QAT never ran). A buffer is a graph input, so `set_active(True)` changes
  the compiled forward without recompiling. Enable QAT (inactive) before
  `torch.compile`, then flip it at `reg.qat_start`.
- The buffer is non-persistent and `QATHandle.remove()` restores the plain
  parameters, so state-dict keys stay baseline-compatible
  (`blocks.0.attn.c_q.weight`, not `...parametrizations.weight.original`).
  `canonical_name` maps the parametrized names back for code that runs while
  QAT is on (decay groups, averaging, diagnostics).
- The grid is symmetric per row with the row max as clip and 2^(bits-1)-1
  levels each side: export's `clip=max`. Other export clip strategies use a
  slightly finer grid, so QAT at the export bits is a close, not exact, match.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from pgolf.errors import ConfigError
from pgolf.export.quantize import qmax_of

_PARAM_SUFFIX = ".original"
_PARAM_INFIX = ".parametrizations."


def check_bits(bits: int, key: str = "reg.qat_bits") -> None:
    """Bit-widths the row quantizer supports (2..8); `key` names the config field in the error."""
    if not 2 <= bits <= 8:
        raise ConfigError(f"{key} must be in 2..8, got {bits}")


def row_step(w: Tensor, bits: int) -> Tensor:
    """Quantization step of each row: row max |w| / (2^(bits-1) - 1), in float32. (R, C) -> (R, 1)."""
    qmax = qmax_of(bits)
    return w.float().abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / qmax


def quantize_rows(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Integer codes in [-qmax, qmax] (int8) and the per-row step; w ~= codes * step."""
    qmax = qmax_of(bits)
    step = row_step(w, bits)  # (R, 1)
    codes = torch.round(w.float() / step).clamp_(-qmax, qmax).to(torch.int8)  # (R, C)
    return codes, step


def fake_quantize_rows(w: Tensor, bits: int) -> Tensor:
    """w rounded to its row's grid, in w's dtype (no gradient rule of its own)."""
    codes, step = quantize_rows(w, bits)
    return (codes.float() * step).to(w.dtype)


def canonical_name(name: str) -> str:
    """The plain parameter name of a parametrized one: `a.parametrizations.weight.original` -> `a.weight`."""
    if _PARAM_INFIX in name and name.endswith(_PARAM_SUFFIX):
        return name[: -len(_PARAM_SUFFIX)].replace(_PARAM_INFIX, ".")
    return name


def plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict under plain names, also while QAT is on (latent float weights)."""
    return {canonical_name(key): value for key, value in model.state_dict().items()}


class FakeQuantRows(nn.Module):
    """Parametrization: per-row fake quantization with a straight-through gradient, when `active`."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.register_buffer("active", torch.zeros((), dtype=torch.bool), persistent=False)

    def forward(self, w: Tensor) -> Tensor:
        q = fake_quantize_rows(w.detach(), self.bits)
        return torch.where(self.active, w + (q - w).detach(), w)


class QATHandle:
    """The fake-quantizers installed by `enable_qat`: switch them together, or take them out."""

    def __init__(self, model: nn.Module, names: list[str], quantizers: list[FakeQuantRows]) -> None:
        self.model = model
        self.names = names
        self._quantizers = quantizers

    @property
    def active(self) -> bool:
        return bool(self._quantizers) and bool(self._quantizers[0].active)

    def set_active(self, active: bool) -> None:
        """Switch fake quantization on or off in place (a buffer write: compiled graphs follow)."""
        for quantizer in self._quantizers:
            quantizer.active.fill_(active)

    def remove(self) -> None:
        """Restore plain parameters (the latent float weights, same Parameter objects)."""
        for name in self.names:
            module_name, _, tensor_name = name.rpartition(".")
            module = self.model.get_submodule(module_name)
            parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=False)
        self._quantizers = []
        self.names = []


def enable_qat(model: nn.Module, bits: int, names: Iterable[str], active: bool = False) -> QATHandle:
    """Fake-quantize the named 2-D weights of `model` at `bits` (STE); starts inactive unless `active`.

    `names` are plain parameter names, e.g. the `matrix` group of
    `regularizers.param_groups`. The Parameter objects are kept, so an
    optimizer built before keeps training them.
    """
    check_bits(bits)
    names = list(names)
    params = dict(model.named_parameters())
    quantizers = []
    for name in names:
        if name not in params:
            raise ConfigError(f"QAT: model has no parameter {name!r}")
        if params[name].ndim != 2:
            raise ConfigError(f"QAT: parameter {name!r} is not a matrix (shape {tuple(params[name].shape)})")
        module_name, _, tensor_name = name.rpartition(".")
        quantizer = FakeQuantRows(bits).to(params[name].device)
        parametrize.register_parametrization(model.get_submodule(module_name), tensor_name, quantizer)
        quantizers.append(quantizer)
    handle = QATHandle(model, names, quantizers)
    handle.set_active(active)
    return handle

"""The one device switch: which device, which autocast dtype, whether to compile.

Everything GPU-specific lives here so the rest of the loop is device-agnostic:
CUDA runs bf16 autocast with the flash-attention SDPA kernel only (a shape it
cannot run is an error, not a slower kernel) and torch.compile when
`train.compile` asks; CPU runs float32, uncompiled unless `train.compile=true`
asks (so the compiled path is tested without a GPU). Asking for CUDA where
there is none is an error, never a silent fallback to CPU; `auto` picks CUDA
when present and says which it chose.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from pgolf.errors import ConfigError


@dataclass(frozen=True)
class DeviceSetup:
    device: torch.device
    autocast_dtype: torch.dtype | None
    """bf16 on CUDA, None (plain float32) on CPU."""
    compile: bool
    description: str


def resolve_device(requested: str, compile_model: bool = False) -> DeviceSetup:
    """Map the `device` config value to a concrete setup (CUDA: bf16 autocast, optional compile)."""
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise ConfigError("device=cuda but no CUDA device is available (use device=cpu or device=auto)")
    if requested == "cuda" or (requested == "auto" and cuda):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name(device)
        return DeviceSetup(device, torch.bfloat16, compile_model, f"cuda:{local_rank} ({name}), bf16 autocast"
                           + (", torch.compile" if compile_model else ""))
    reason = "" if requested == "cpu" else " (no CUDA device found)"
    return DeviceSetup(torch.device("cpu"), None, compile_model,
                       f"cpu{reason}, float32" + (", torch.compile" if compile_model else ""))


@contextlib.contextmanager
def autocast(setup: DeviceSetup):
    """Context for forward passes on this setup: bf16 autocast and flash attention on CUDA, nothing on CPU."""
    if setup.autocast_dtype is None:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.autocast(setup.device.type, dtype=setup.autocast_dtype), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        yield


def maybe_compile(model: torch.nn.Module, setup: DeviceSetup) -> torch.nn.Module:
    """torch.compile when asked; the original module keeps the parameters."""
    if not setup.compile:
        return model
    return torch.compile(model, dynamic=False)

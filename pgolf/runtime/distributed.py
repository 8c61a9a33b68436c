"""torchrun integration: one process per device, NCCL on CUDA, gloo on CPU.

Without torchrun's environment (RANK/WORLD_SIZE) everything is a single
process and no process group is created. Gloo lets the multi-process path be
tested on CPU with two processes.

Decisions every rank must take together (stop at the wallclock cap, stop on
a signal, the elapsed time the schedule reads) go through `agree_max`: one
all-reduce of a few CPU floats per step on a gloo group, so ranks whose clocks
drift still stop at the same step (a rank that stopped alone would hang the
others in their next collective), and on CUDA the step never waits for the
device.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pgolf.errors import TrainingError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    control: Any = None
    """Process group for host-side agreement (gloo; None = the default group, already gloo on CPU)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join torchrun's process group when launched by it; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    cuda = device.type == "cuda"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", device_id=device if cuda else None)
    control = dist.new_group(backend="gloo") if cuda else None
    return DistInfo(rank=dist.get_rank(), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                    control=control)


def wrap_ddp(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.AVG if value.device.type == "cuda" else dist.ReduceOp.SUM)
        if value.device.type != "cuda":
            value /= info.world_size
    return value


def agree_max(values: list[float], info: DistInfo) -> list[float]:
    """The largest of each value over all ranks (host floats; no device sync)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=info.control)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier(group=info.control)


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's decision (e.g. stop now) shared with every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.broadcast(t, src=0, group=info.control)
    return bool(t.item())


def broadcast_text(text: str, info: DistInfo) -> str:
    """Rank 0's `text` (e.g. the run directory it made) on every rank."""
    if not info.enabled:
        return text
    data = torch.tensor(list(text.encode()), dtype=torch.uint8)
    size = torch.tensor([data.numel()])
    dist.broadcast(size, src=0, group=info.control)
    if info.rank != 0:
        data = torch.zeros(int(size), dtype=torch.uint8)
    dist.broadcast(data, src=0, group=info.control)
    return bytes(data.tolist()).decode()


def weights_checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 (16 hex digits) of the tensors' names, dtypes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]


def check_replicas_agree(state: dict[str, torch.Tensor], info: DistInfo) -> str:
    """The weights' checksum, gathered from every rank; a TrainingError when any rank holds other weights."""
    checksum = weights_checksum(state)
    if not info.enabled:
        return checksum
    mine = torch.tensor([int(checksum, 16) - 2**63], dtype=torch.int64)
    gathered = [torch.zeros(1, dtype=torch.int64) for _ in range(info.world_size)]
    dist.all_gather(gathered, mine, group=info.control)
    sums = [format(int(t) + 2**63, "016x") for t in gathered]
    if len(set(sums)) > 1:
        raise TrainingError(f"ranks ended with different weights (checksums by rank: {', '.join(sums)})")
    return checksum


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

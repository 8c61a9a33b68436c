"""Training checkpoints: everything a run needs to go on exactly where it stopped.

`run_dir/checkpoints/step-<N>/` holds `train_state.pt` (written by rank 0:
model, optimizers, weight average, pruning masks, early-stopping and gap
state, step, elapsed training time, last validation) and one `rank<R>.pt` per
rank (that rank's torch/CUDA/numpy/Python RNG states and data position).
`checkpoints/latest.json`, rewritten atomically by rank 0 after every rank has
written its files, names the newest complete one; older ones are then
deleted. A checkpoint the pointer does not name is never read, so a crash
while writing leaves the previous one in force.

Files are `torch.save` dicts of tensors and plain values, read back with
`weights_only=True` (no pickle code runs); the data position is JSON text.
On CPU a resumed run continues the loss curve of an uninterrupted one step for
step.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgolf.atomic import atomic_write_bytes, atomic_write_json
from pgolf.errors import ArtifactError, ConfigError
from pgolf.runtime.distributed import DistInfo, barrier

FOLDER = "checkpoints"
POINTER = "latest.json"
FORMAT = 1


def latest_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The pointer to a run's newest complete checkpoint ({step, dir, world_size, train_time_s}), or None."""
    path = Path(run_dir) / FOLDER / POINTER
    if not path.is_file():
        return None
    try:
        pointer = json.loads(path.read_text())
        return {"step": int(pointer["step"]), "dir": str(pointer["dir"]),
                "world_size": int(pointer["world_size"]), "train_time_s": float(pointer["train_time_s"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: not a checkpoint pointer ({exc})") from exc


class CheckpointStore:
    """The checkpoints of one run directory, as seen by one rank."""

    def __init__(self, run_dir: Path, info: DistInfo, device: torch.device):
        self.folder = Path(run_dir) / FOLDER
        self.info, self.device = info, device
        self.in_use = False
        """This run resumed from or wrote a checkpoint (the same on every rank): its last one must be its end."""

    def latest(self) -> dict[str, Any] | None:
        return latest_checkpoint(self.folder.parent)

    def save(self, parts: dict[str, Any], step: int, train_time_s: float, last_val: dict[str, float]) -> Path:
        """Write step `step`'s checkpoint (every rank calls this at the same step) and point `latest` at it."""
        name = f"step-{step:06d}"
        where = self.folder / name
        self.in_use = True
        _write(where / f"rank{self.info.rank}.pt", _rank_state(parts["batches"], self.device))
        if self.info.is_main:
            _write(where / "train_state.pt", _shared_state(parts, step, train_time_s, last_val, self.info))
        barrier(self.info)
        if self.info.is_main:
            atomic_write_json(self.folder / POINTER, {
                "step": step, "dir": name, "world_size": self.info.world_size, "train_time_s": train_time_s,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
            for old in self.folder.glob("step-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        barrier(self.info)
        return where

    def load(self, parts: dict[str, Any]) -> dict[str, Any]:
        """Restore `parts` from the newest checkpoint; returns {step, train_time_s, last_val}."""
        pointer = self.latest()
        if pointer is None:
            raise ArtifactError(f"{self.folder}: no checkpoint to resume from")
        if pointer["world_size"] != self.info.world_size:
            raise ConfigError(f"the checkpoint in {self.folder} was written by {pointer['world_size']} processes; "
                              f"resume with the same number (this run has {self.info.world_size})")
        where = self.folder / pointer["dir"]
        self.in_use = True
        shared = _read(where / "train_state.pt")
        mine = _read(where / f"rank{self.info.rank}.pt")
        try:
            parts["model"].load_state_dict(shared["model"])
            parts["opts"].load_state_dict(shared["optim"])
            _load_extras(parts, shared, self.device)
            parts["batches"].load_state_dict(json.loads(mine["data"]))
            torch.set_rng_state(mine["torch_rng"])
            if self.device.type == "cuda" and "cuda_rng" in mine:
                torch.cuda.set_rng_state(mine["cuda_rng"], self.device)
            np.random.set_state(("MT19937", mine["numpy_keys"].numpy(), *json.loads(mine["numpy_rest"])))
            random.setstate(_python_state(json.loads(mine["python_rng"])))
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ArtifactError(f"{where}: checkpoint does not match this run ({str(exc).splitlines()[0]})") from exc
        return {"step": int(shared["step"]), "train_time_s": float(shared["train_time_s"]),
                "last_val": dict(shared["last_val"])}


def _write(path: Path, obj: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint file missing")
    try:
        obj = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise ArtifactError(f"{path}: checkpoint is truncated or corrupt ({str(exc).splitlines()[0]})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a pgolf training checkpoint (format {FORMAT})")
    return obj


def _shared_state(parts, step, train_time_s, last_val, info: DistInfo) -> dict[str, Any]:
    state: dict[str, Any] = {
        "format": FORMAT, "step": step, "train_time_s": train_time_s, "last_val": dict(last_val),
        "world_size": info.world_size, "model": parts["model"].state_dict(), "optim": parts["opts"].state_dict(),
    }
    if parts.get("averager") is not None:
        avg = parts["averager"]
        state["averager"] = {"n_averaged": avg.n_averaged, "averaged": dict(avg.averaged)}
    if parts.get("pruner") is not None:
        state["pruner"] = {"sparsity": parts["pruner"].sparsity, "masks": dict(parts["pruner"].masks)}
    if parts.get("stopper") is not None:
        state["stopper"] = {"best": parts["stopper"].best, "bad_checks": parts["stopper"].bad_checks}
    state["gap"] = {"last_gap": parts["gap"].last_gap}
    return state


def _load_extras(parts: dict[str, Any], shared: dict[str, Any], device: torch.device) -> None:
    """Weight average, pruning masks, early stopping and gap monitor, on the devices of the live weights."""
    if parts.get("averager") is not None and "averager" in shared:
        avg = parts["averager"]
        avg.n_averaged = int(shared["averager"]["n_averaged"])
        avg.averaged = {k: v.to(device) for k, v in shared["averager"]["averaged"].items()}
    if parts.get("pruner") is not None and "pruner" in shared:
        pruner = parts["pruner"]
        pruner.sparsity = float(shared["pruner"]["sparsity"])
        pruner.masks = {k: v.to(device) for k, v in shared["pruner"]["masks"].items()}
    if parts.get("stopper") is not None and "stopper" in shared:
        parts["stopper"].best = float(shared["stopper"]["best"])
        parts["stopper"].bad_checks = int(shared["stopper"]["bad_checks"])
    parts["gap"].last_gap = float(shared["gap"]["last_gap"])


def _rank_state(batches, device: torch.device) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "format": FORMAT, "data": json.dumps(batches.state_dict()), "torch_rng": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_rest": json.dumps([int(pos), int(has_gauss), float(gauss)]),
        "python_rng": json.dumps([version, list(internal), gauss_next]),
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _python_state(saved: list) -> tuple:
    version, internal, gauss_next = saved
    return version, tuple(internal), gauss_next

"""A run directory's layout, in one place: where a run keeps its files, and how they are named.

```
<root>/<YYYY-MM-DD>/<HH-MM-SS>-<name>/   config.yaml state.json train.log metrics.jsonl summary.json
  model.safetensors                       float weights
  artifacts/<label>.pgolf                 exports; artifacts/<label>.json: each one's record (config + score)
  fit/fit-<bytes>.{csv,json,yaml}          fit-budget's tables and chosen config
  checkpoints/                            training checkpoints (train/checkpoints.py)
<root>/latest -> the newest run
```
A run directory's `state.json` says where the run is: running, completed, interrupted (Ctrl-C or SIGTERM;
resumable when it has a checkpoint) or failed. A run killed outright (SIGKILL, power loss) still says running:
its `pid` and `host` tell whether that is still true.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from pgolf.atomic import atomic_write_json, atomic_write_text
from pgolf.schema import Config, to_dict

CONFIG = "config.yaml"
STATE = "state.json"
TRAIN_LOG = "train.log"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
FLOAT_WEIGHTS = "model.safetensors"
ARTIFACTS = "artifacts"
ARTIFACT_SUFFIX = ".pgolf"
FIT = "fit"


def create_run_dir(root: Path | str, name: str) -> Path:
    """A new `root/<YYYY-MM-DD>/<HH-MM-SS>-<name>/`, with `root/latest` pointing at it."""
    root = Path(root)
    now = time.localtime()
    day = root / time.strftime("%Y-%m-%d", now)
    base = f"{time.strftime('%H-%M-%S', now)}-{name}"
    run_dir = day / base
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = day / f"{base}-{suffix}"
    run_dir.mkdir(parents=True)
    point_latest(root, run_dir)
    return run_dir


def point_latest(root: Path, run_dir: Path) -> None:
    """Atomically repoint `root/latest` at `run_dir` (a relative symlink)."""
    link = root / "latest"
    tmp = root / f".latest.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(run_dir, root), tmp)
    os.replace(tmp, link)


class MetricsLog:
    """Append-only JSON-lines metrics (one object per line, flushed each write)."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, **record: Any) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def write_run_state(run_dir: Path, state: str, **fields: Any) -> None:
    """`run_dir/state.json`: the state (running, completed, interrupted or failed), when it was written, and by which
    process (plus `fields`)."""
    atomic_write_json(Path(run_dir) / STATE, {
        "state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(),
        "host": socket.gethostname(), **fields})


def keep_metrics_through(path: Path, step: int) -> None:
    """Drop the metrics lines written after `step` (a resumed run writes them again), atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except ValueError:
            continue  # a line cut short by a kill
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY).read_text())


def is_run_dir(path: Path) -> bool:
    """A folder pgolf ran in: it holds the run's config.yaml."""
    return Path(path).is_dir() and (Path(path) / CONFIG).is_file()


def float_weights(source: Path) -> Path:
    """What export and fit-budget quantize: a run directory's float weights (never one of its artifacts, which would
    be quantized twice), or the file given."""
    return Path(source) / FLOAT_WEIGHTS if Path(source).is_dir() else Path(source)


def artifacts_of(run_dir: Path) -> list[Path]:
    """A run directory's artifacts, oldest first (the newest is fit-budget's choice after the training's own)."""
    return sorted((Path(run_dir) / ARTIFACTS).glob(f"*{ARTIFACT_SUFFIX}"), key=lambda p: p.stat().st_mtime)


def run_dir_of(artifact: Path) -> Path | None:
    """The run directory an artifact was exported into, or None for an artifact elsewhere."""
    parent = Path(artifact).parent
    return parent.parent if parent.name == ARTIFACTS and is_run_dir(parent.parent) else None


_SCORING_ONLY = ("code_bytes", "code_files", "eval_stride")
"""Export fields that do not change the artifact's bytes (left out of its name's hash)."""


def artifact_label(cfg: Config) -> str:
    """Readable name of an export (bits, clip, codec, pruning, gptq) plus a hash of every field that shapes the
    bytes, so exports that differ only in, say, group_bits never overwrite each other."""
    e = cfg.export
    shaping = {k: v for k, v in to_dict(cfg)["export"].items() if k not in _SCORING_ONLY}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:6]
    return (f"int{e.bits}-{e.clip}-{e.codec}" + (f"-prune{e.prune:g}{e.prune_kind}" if e.prune > 0 else "")
            + ("-gptq" if e.gptq else "") + f"-{digest}")


def record_path(artifact: Path) -> Path:
    return Path(artifact).with_suffix(".json")


def default_artifact_path(source: Path, cfg: Config) -> Path:
    """Inside a run directory: artifacts/<label>.pgolf; beside a file: <stem>.<label>.pgolf."""
    source = Path(source)
    label = artifact_label(cfg)
    if source.is_dir():
        return source / ARTIFACTS / f"{label}{ARTIFACT_SUFFIX}"
    return source.with_name(f"{source.stem}.{label}{ARTIFACT_SUFFIX}")


def budget_label(max_bytes: int) -> str:
    """File-name label of a budget: fit-<bytes>."""
    return f"fit-{max_bytes}"


def output_paths(source: Path, max_bytes: int) -> dict[str, Path]:
    """Artifact, CSV, JSON and config paths: <run>/artifacts/ and <run>/fit/ for a run dir, beside a file otherwise."""
    source = Path(source)
    label = budget_label(max_bytes)
    if source.is_dir():
        return {"artifact": source / ARTIFACTS / f"{label}{ARTIFACT_SUFFIX}",
                "csv": source / FIT / f"{label}.csv", "json": source / FIT / f"{label}.json",
                "config": source / FIT / f"{label}.yaml"}
    stem = f"{source.stem}.{label}"
    return {"artifact": source.with_name(stem + ARTIFACT_SUFFIX), "csv": source.with_name(stem + ".csv"),
            "json": source.with_name(stem + ".json"), "config": source.with_name(stem + ".yaml")}

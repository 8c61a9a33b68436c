"""Run directories, atomic writes, metrics logs, run states and summaries.

Every file is written through `atomic_write_*` (temp file in the same folder,
fsync, rename) so an interrupted run never leaves a half-written file.
A run directory's `state.json` says where the run is: running, completed,
interrupted (Ctrl-C or SIGTERM; resumable when it has a checkpoint) or failed.
A run killed outright (SIGKILL, power loss) still says running: its `pid` and
`host` tell whether that is still true.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


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


class NullMetrics:
    """A metrics log that keeps nothing (non-main ranks, the shipped script)."""

    def write(self, **record: Any) -> None:
        pass

    def close(self) -> None:
        pass


def write_run_state(run_dir: Path, state: str, **fields: Any) -> None:
    """`run_dir/state.json`: the state (running, completed, interrupted or failed), when it was written, and by which
    process (plus `fields`)."""
    atomic_write_json(Path(run_dir) / "state.json", {
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
    return json.loads((Path(run_dir) / "summary.json").read_text())

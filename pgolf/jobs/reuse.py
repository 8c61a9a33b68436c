"""What a verb that trains many runs (sweep cells, search trials) may reuse of a run directory it made before: a
training that finished and was scored, or an unfinished one of the same config to resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgolf import config as C
from pgolf.jobs.layout import CONFIG, FLOAT_WEIGHTS, SUMMARY, is_run_dir, read_summary
from pgolf.train.checkpoints import latest_checkpoint


def finished_training(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a training that ran to its end and was scored, else None."""
    if not (run_dir / SUMMARY).is_file() or not (run_dir / FLOAT_WEIGHTS).is_file():
        return None
    summary = read_summary(run_dir)
    return summary if "error" not in summary and "val_bpb_roundtrip" in summary else None


def resumable(run_dir: Path, cfg: C.Config) -> bool:
    """Whether `run_dir` holds an unfinished training of exactly `cfg` with a checkpoint to go on from."""
    if not is_run_dir(run_dir) or latest_checkpoint(run_dir) is None:
        return False
    return C.to_dict(C.load_yaml(run_dir / CONFIG)) == C.to_dict(cfg)

"""A crash while a checkpoint is written leaves the previous one in force (train/checkpoints.py).

`latest.json` may name a step only once every file of that step is on disk: a process killed (or a disk filling
up) part-way through `step-<N>/` must leave `latest_checkpoint()` naming the step before, and a resume must load
that one. test_resume.py covers the stop-and-resume path itself; here the writer fails part-way.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pgolf.config import compose
from pgolf.data.loader import TrainBatches
from pgolf.jobs.layout import MetricsLog, keep_metrics_through
from pgolf.jobs.models import build_model
from pgolf.runtime.device import resolve_device
from pgolf.runtime.distributed import DistInfo
from pgolf.train import checkpoints
from pgolf.train.checkpoints import CheckpointStore, latest_checkpoint
from pgolf.train.loop import train_model

from .conftest import VOCAB


class Position:
    """A data position that checkpoints as JSON (what TrainBatches gives)."""

    def __init__(self, pos: int = 0) -> None:
        self.pos = pos

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = state["pos"]


def parts_at(step: int) -> dict:
    """Model, optimizer, data position and gap monitor as a run holds them at `step` (values depend on it)."""
    torch.manual_seed(step)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {"model": model, "opts": opt, "batches": Position(100 * step), "gap": SimpleNamespace(last_gap=step / 10)}


def crash_writing(monkeypatch, step: int, file: str) -> None:
    """From now on, writing `step-<step>/<file>` leaves half of it on disk and raises (a full disk, a kill)."""
    write = checkpoints._write

    def failing(path: Path, obj: dict) -> None:
        if path.parent.name == f"step-{step:06d}" and path.name == file:
            write(path, obj)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            raise OSError(28, "No space left on device")
        write(path, obj)

    monkeypatch.setattr(checkpoints, "_write", failing)


@pytest.mark.parametrize("file", ["rank0.pt", "train_state.pt"])
def test_a_crash_mid_checkpoint_leaves_the_previous_one_in_force(tmp_path, monkeypatch, file):
    store = CheckpointStore(tmp_path, DistInfo(), torch.device("cpu"))
    saved = parts_at(3)
    store.save(saved, 3, train_time_s=1.5, last_val={"val_bpb": 2.0})
    assert latest_checkpoint(tmp_path)["step"] == 3

    crash_writing(monkeypatch, 6, file)
    with pytest.raises(OSError, match="No space left"):
        store.save(parts_at(6), 6, train_time_s=3.0, last_val={"val_bpb": 1.9})
    monkeypatch.undo()

    assert latest_checkpoint(tmp_path) == {"step": 3, "dir": "step-000003", "world_size": 1, "train_time_s": 1.5}
    assert (tmp_path / "checkpoints" / "step-000003" / "train_state.pt").is_file()  # not deleted by step 6

    fresh = parts_at(0)
    restored = CheckpointStore(tmp_path, DistInfo(), torch.device("cpu")).load(fresh)
    assert restored == {"step": 3, "train_time_s": 1.5, "last_val": {"val_bpb": 2.0}}
    for name, value in saved["model"].state_dict().items():
        assert torch.equal(fresh["model"].state_dict()[name], value), name
    momentum = [s["momentum_buffer"] for s in fresh["opts"].state_dict()["state"].values()]
    expected = [s["momentum_buffer"] for s in saved["opts"].state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, expected, strict=True))
    assert fresh["batches"].pos == 300 and fresh["gap"].last_gap == pytest.approx(0.3)

    # the next checkpoint that completes replaces both, the torn folder included
    store.save(parts_at(9), 9, train_time_s=4.5, last_val={})
    assert latest_checkpoint(tmp_path)["step"] == 9
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.json", "step-000009"]


# ---- the same through the training loop: crash at the second periodic checkpoint, resume from the first ----

ITERS = 12
BASE = ["model.num_layers=2", "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1",
        f"model.vocab_size={VOCAB}", "train.seq_len=64", "train.batch_tokens=1024", f"train.iterations={ITERS}",
        "train.warmup_steps=0", "train.lr_warmup_steps=2", "train.warmdown_steps=4", "train.val_every=0",
        "train.log_every=1", "train.wallclock_s=0", "train.checkpoint_every=4", "reg=none", "reg.ema_decay=0.9",
        "device=cpu"]


def _train(corpus, val_data, cfg, run_dir: Path, resume: bool = False):
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    batches = TrainBatches(corpus.train_files, cfg.train.batch_tokens, cfg.train.seq_len, cfg.train.grad_accum,
                           sampling=cfg.train.sampling, seed=cfg.seed)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    store = CheckpointStore(run_dir, DistInfo(), torch.device("cpu"))
    lines: list[str] = []
    try:
        result = train_model(cfg, model, batches, *val_data, resolve_device("cpu"), DistInfo(), metrics, lines.append,
                             checkpoints=store, resume=resume)
    finally:
        metrics.close()
    return result, lines


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


def test_a_run_that_crashed_writing_a_checkpoint_resumes_from_the_one_before(tmp_path, monkeypatch, corpus, val_data):
    cfg = compose(BASE)
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    straight.mkdir(), crashed.mkdir()
    whole, _ = _train(corpus, val_data, cfg, straight)

    crash_writing(monkeypatch, 8, "train_state.pt")
    with pytest.raises(OSError, match="No space left"):
        _train(corpus, val_data, cfg, crashed)
    monkeypatch.undo()
    assert latest_checkpoint(crashed)["step"] == 4

    keep_metrics_through(crashed / "metrics.jsonl", latest_checkpoint(crashed)["step"])  # as `pgolf train --resume`
    rest, lines = _train(corpus, val_data, cfg, crashed, resume=True)
    assert any(line.startswith("resumed at step 4 ") for line in lines)
    assert rest.steps == whole.steps == ITERS and rest.stop_reason == "completed"
    assert _losses(crashed) == _losses(straight)
    assert rest.checksum == whole.checksum

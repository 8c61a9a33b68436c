"""Checkpoints and resume: a run stopped by a signal and resumed continues the uninterrupted run step for step.

Every case trains the same 2-layer GPT twice from the same seed: once straight through, once stopped by a
signal request after a few steps (the loop then writes a checkpoint) and resumed in fresh objects (model,
optimizers, batches, RNG) from that checkpoint. On CPU the two loss curves and final weights are equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pgolf.config import compose
from pgolf.data.loader import TrainBatches
from pgolf.errors import ArtifactError, ConfigError
from pgolf.jobs.layout import MetricsLog
from pgolf.jobs.models import build_model
from pgolf.runtime.device import resolve_device
from pgolf.runtime.distributed import DistInfo
from pgolf.train.checkpoints import CheckpointStore
from pgolf.train.loop import train_model

from .conftest import VOCAB, SignalAfter

ITERS = 16
BASE = ["model.num_layers=2", "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1",
        f"model.vocab_size={VOCAB}", "train.seq_len=64", "train.batch_tokens=1024", f"train.iterations={ITERS}",
        "train.warmup_steps=2", "train.lr_warmup_steps=2", "train.warmdown_steps=6", "train.val_every=6",
        "train.val_tokens=1024", "train.log_every=1", "train.wallclock_s=0", "reg=none", "device=cpu"]


def _train(corpus, val_data, cfg, run_dir: Path, signals=None, resume=False):
    """A fresh model, optimizers and batches (seeded as `pgolf train` seeds them), trained in `run_dir`."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    batches = TrainBatches(corpus.train_files, cfg.train.batch_tokens, cfg.train.seq_len, cfg.train.grad_accum,
                           sampling=cfg.train.sampling, seed=cfg.seed)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    store = CheckpointStore(run_dir, DistInfo(), torch.device("cpu"))
    lines: list[str] = []
    try:
        result = train_model(cfg, model, batches, *val_data, resolve_device("cpu"), DistInfo(), metrics, lines.append,
                             signals=signals, checkpoints=store, resume=resume)
    finally:
        metrics.close()
    return result, lines


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


@pytest.mark.parametrize("extra", [
    (),
    ("train.sampling=random", "reg.dropout=0.1"),
    ("reg.ema_decay=0.9", "reg.prune_sparsity=0.3", "reg.prune_start=0.2", "reg.qat_bits=6", "reg.qat_start=0.5",
     "reg.weight_decay=0.05", "reg.early_stop_patience=5", "train.checkpoint_every=4"),
], ids=["stream", "random-windows-and-dropout", "ema-pruning-qat-decay-periodic"])
def test_a_resumed_run_continues_the_uninterrupted_one_step_for_step(tmp_path, corpus, val_data, extra):
    cfg = compose([*BASE, *extra])
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir(), stopped.mkdir()
    whole, _ = _train(corpus, val_data, cfg, straight)
    part, _ = _train(corpus, val_data, cfg, stopped, signals=SignalAfter(7))
    assert part.stop_reason == "terminated" and part.steps == 7
    pointer = json.loads((stopped / "checkpoints" / "latest.json").read_text())
    assert pointer["step"] == 7 and len(list((stopped / "checkpoints").glob("step-*"))) == 1
    rest, lines = _train(corpus, val_data, cfg, stopped, resume=True)
    assert any(line.startswith("resumed at step 7") for line in lines)
    assert rest.steps == whole.steps == ITERS and rest.stop_reason == whole.stop_reason == "completed"
    assert _losses(stopped) == _losses(straight)  # every step's loss, bit for bit
    assert rest.checksum == whole.checksum
    assert rest.train_time_s > part.train_time_s  # the elapsed time carried over


def test_a_truncated_or_missing_checkpoint_is_a_one_line_error(tmp_path, corpus, val_data):
    cfg = compose(BASE)
    _train(corpus, val_data, cfg, tmp_path, signals=SignalAfter(3))
    state = next((tmp_path / "checkpoints").glob("step-*/train_state.pt"))
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="truncated or corrupt") as info:
        _train(corpus, val_data, cfg, tmp_path, resume=True)
    assert "\n" not in str(info.value) and str(state) in str(info.value)
    state.unlink()
    with pytest.raises(ArtifactError, match="checkpoint file missing"):
        _train(corpus, val_data, cfg, tmp_path, resume=True)


def test_a_checkpoint_of_another_world_size_is_refused(tmp_path, corpus, val_data):
    cfg = compose(BASE)
    _train(corpus, val_data, cfg, tmp_path, signals=SignalAfter(3))
    pointer = tmp_path / "checkpoints" / "latest.json"
    pointer.write_text(json.dumps({**json.loads(pointer.read_text()), "world_size": 2}))
    with pytest.raises(ConfigError, match="written by 2 processes"):
        _train(corpus, val_data, cfg, tmp_path, resume=True)

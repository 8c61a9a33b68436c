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
from pgolf.train.qat import plain_state_dict

from .conftest import VOCAB, SignalAfter

ITERS = 16
BASE = ["model.num_layers=2", "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1",
        f"model.vocab_size={VOCAB}", "train.seq_len=64", "train.batch_tokens=1024", f"train.iterations={ITERS}",
        "train.warmup_steps=2", "train.lr_warmup_steps=2", "train.warmdown_steps=6", "train.val_every=6",
        "train.val_tokens=1024", "train.log_every=1", "train.wallclock_s=0", "reg=none", "device=cpu"]


class StepClock:
    """A fake clock for `train_model(clock=...)` that moves only when a micro-batch is read: one second per step
    (grad_accum 1), starting at `start` seconds (a resumed run's step), so elapsed time is the step count. Each
    read also keeps the live weights of the step before it: `weights[k]` holds the weights after step k."""

    def __init__(self, start: int = 0) -> None:
        self.now = start
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def wrap(self, batches: TrainBatches, model: torch.nn.Module) -> StepClock:
        self.batches, self.model, self.local_tokens = batches, model, batches.local_tokens
        return self

    def __call__(self) -> float:
        return float(self.now)

    def next_batch(self):
        self.weights[self.now] = {k: v.detach().clone().float() for k, v in plain_state_dict(self.model).items()}
        self.now += 1
        return self.batches.next_batch()

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)


def _train(corpus, val_data, cfg, run_dir: Path, signals=None, resume=False, clock: StepClock | None = None):
    """A fresh model, optimizers and batches (seeded as `pgolf train` seeds them), trained in `run_dir`."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    batches = TrainBatches(corpus.train_files, cfg.train.batch_tokens, cfg.train.seq_len, cfg.train.grad_accum,
                           sampling=cfg.train.sampling, seed=cfg.seed)
    timing = {}
    if clock is not None:
        batches, timing = clock.wrap(batches, model), {"clock": clock}
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    store = CheckpointStore(run_dir, DistInfo(), torch.device("cpu"))
    lines: list[str] = []
    try:
        result = train_model(cfg, model, batches, *val_data, resolve_device("cpu"), DistInfo(), metrics, lines.append,
                             signals=signals, checkpoints=store, resume=resume, **timing)
    finally:
        metrics.close()
    return result, lines


def _records(run_dir: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if "train_loss" in r}


def _losses(run_dir: Path) -> dict[int, float]:
    return {step: r["train_loss"] for step, r in _records(run_dir).items()}


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


CAP, WARMDOWN, QAT_START, SWA_START, SWA_EVERY, STOP = 16, 6, 0.45, 0.6, 3, 7


def test_a_wallclock_capped_run_resumes_its_elapsed_time(tmp_path, corpus, val_data):
    """With train.wallclock_s set, the cap and every schedule run on elapsed time: a run stopped after 7 s (7 steps)
    and resumed goes on from 7 s, not from 0. A fake clock makes each step take exactly 1 s, so what each step
    must see is written out here from the config alone: lr warmdown over the last 6 s, QAT from 45% of the cap,
    SWA snapshots every 3 steps from 60% of it, the stop at 16 s."""
    cfg = compose([*BASE, "train.iterations=1000", f"train.wallclock_s={CAP}", "train.warmup_steps=0",
                   "train.lr_warmup_steps=0", f"train.warmdown_steps={WARMDOWN}", "train.val_every=0", "reg.qat_bits=6",
                   f"reg.qat_start={QAT_START}", f"reg.swa_start={SWA_START}", f"reg.swa_every={SWA_EVERY}"])
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir(), stopped.mkdir()
    whole_clock, rest_clock = StepClock(), StepClock(start=STOP)
    whole, _ = _train(corpus, val_data, cfg, straight, clock=whole_clock)
    part, _ = _train(corpus, val_data, cfg, stopped, signals=SignalAfter(STOP), clock=StepClock())
    assert part.stop_reason == "terminated" and part.steps == STOP and part.train_time_s == STOP
    rest, lines = _train(corpus, val_data, cfg, stopped, resume=True, clock=rest_clock)
    assert any(line.startswith(f"resumed at step {STOP}") for line in lines)

    for run_dir in (straight, stopped):
        records = _records(run_dir)
        for step in range(1, CAP + 1):
            elapsed = step - 1  # seconds of training before this step ran
            remaining = CAP - elapsed
            lr_mult = remaining / WARMDOWN if remaining <= WARMDOWN else 1.0
            assert records[step]["lr_mult"] == pytest.approx(lr_mult), step
            assert records[step]["qat_active"] == (elapsed / CAP >= QAT_START), step
            assert records[step]["time_s"] == step
    swa_steps = [k for k in range(1, CAP + 1) if k % SWA_EVERY == 0 and k / CAP >= SWA_START]
    assert swa_steps == [12, 15]  # both after the resume at step 7
    for clock, result in ((whole_clock, whole), (rest_clock, rest)):
        expected = {k: sum(clock.weights[s][k] for s in swa_steps) / len(swa_steps) for k in result.state_dict}
        assert set(result.state_dict) == set(clock.weights[swa_steps[0]])
        for k, v in result.state_dict.items():
            torch.testing.assert_close(v, expected[k], msg=lambda m, k=k: f"{k}: {m}")
    for result, run_dir in ((whole, straight), (rest, stopped)):  # the cap: 16 steps of 1 s from the first start
        assert (result.steps, result.stop_reason, result.train_time_s) == (CAP, "wallclock", CAP)
        assert max(_records(run_dir)) == CAP
    assert _losses(stopped) == _losses(straight) and rest.checksum == whole.checksum


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

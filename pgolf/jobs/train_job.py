"""`pgolf train` as a job: train -> save -> export -> read back -> score, in a run directory.

It owns the order of the stages and the run directory's files (config.yaml, train.log, metrics.jsonl,
model.safetensors, artifacts/, summary.json, state.json); the stages live in train/, export/ and evaluate.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

import pgolf
from pgolf import config as C
from pgolf.atomic import atomic_write_json, atomic_write_text
from pgolf.errors import ConfigError, Interrupted, Terminated, TrainingError, one_line
from pgolf.jobs.export_job import export_and_score, score_fields
from pgolf.jobs.float_checkpoint import save_checkpoint
from pgolf.jobs.layout import (
    ARTIFACT_SUFFIX,
    ARTIFACTS,
    CONFIG,
    FLOAT_WEIGHTS,
    METRICS,
    SUMMARY,
    TRAIN_LOG,
    MetricsLog,
    artifact_label,
    create_run_dir,
    keep_metrics_through,
    write_run_state,
)
from pgolf.jobs.start import TrainingStart, start_training
from pgolf.progress import ProgressFn, no_progress
from pgolf.runtime.distributed import broadcast_text, shutdown
from pgolf.runtime.signals import StopSignals
from pgolf.train.checkpoints import CheckpointStore, latest_checkpoint
from pgolf.train.loop import NullMetrics, Rungs, TrainResult, train_model
from pgolf.train.regularizers import check_no_decay_names


def run_train(cfg: C.Config, progress: ProgressFn = no_progress, echo: Callable[[str], None] = print,
              run_dir: Path | None = None, resume: bool = False, rungs: Rungs | None = None) -> dict:
    """`pgolf train`: the whole job. Returns the summary (also written to summary.json).

    `run_dir` (a sweep cell) is used as given and leaves `runs/latest` alone; by default a new dated run
    directory is made and `latest` points at it. `resume=True` continues `run_dir` from its newest checkpoint
    (`cfg` from `resume_config`). Ctrl-C and SIGTERM stop training after the current step and save the weights,
    a checkpoint and the summary (exit 130 or 143); `state.json` follows the run. `rungs` (a search trial) may stop
    training at a rung: then nothing is exported and the summary returned says `stop_reason: pruned`.
    """
    with StopSignals() as signals:
        try:
            return _train_job(cfg, progress, echo, run_dir, resume, signals, rungs)
        except KeyboardInterrupt as exc:  # a signal outside training (setup, export, scoring)
            error = Terminated if signals.reason == "terminated" else Interrupted
            raise error(f"{signals.reason or 'interrupted'} before the run finished") from exc


class _TrainRun:
    """One `pgolf train` in its run directory: the log, the run state and the order of the stages."""

    def __init__(self, cfg: C.Config, job: TrainingStart, run_dir: Path | None, resume: bool,
                 echo: Callable[[str], None]):
        self.cfg, self.job, self.resume, self.echo = cfg, job, resume, echo
        self.main = job.dist_info.is_main
        if self.main:
            if run_dir is None:
                run_dir = create_run_dir(cfg.run.root, cfg.run.name)
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.dir = Path(broadcast_text(str(run_dir) if self.main else "", job.dist_info))
        self.checkpoints = CheckpointStore(self.dir, job.dist_info, job.setup.device)
        log_path = self.dir / TRAIN_LOG
        self.log_lines = log_path.read_text().splitlines() if resume and log_path.is_file() else []
        self.started = time.time()

    def log(self, message: str) -> None:
        if self.main:
            self.log_lines.append(message)
            atomic_write_text(self.dir / TRAIN_LOG, "\n".join(self.log_lines) + "\n")
            self.echo(message)

    def state(self, name: str, **fields) -> None:
        if self.main:
            pointer = self.checkpoints.latest()
            write_run_state(self.dir, name, checkpoint_step=pointer["step"] if pointer else None, **fields)

    def ended(self, exc: BaseException) -> None:
        """Record how an exception ended the run: a signal or submitit's requeue interrupts it, the rest fail it."""
        self.state("interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed",
                   error=one_line(exc))

    def open(self) -> None:
        """Write the config (and trim metrics a resume writes again), say where the run is and what it trains."""
        job, cfg = self.job, self.cfg
        if self.main:
            atomic_write_text(self.dir / CONFIG, C.to_yaml(cfg))
            if self.resume:
                keep_metrics_through(self.dir / METRICS, self.checkpoints.latest()["step"])
        self.state("running")
        self.log(f"run: {self.dir}" + (" (resumed)" if self.resume else ""))
        dist = job.dist_info
        self.log(f"device: {job.setup.description}" + (f", {dist.world_size} processes" if dist.enabled else ""))
        self.log(f"model: {_params(job.model):,} parameters; data: {cfg.data.name} ({len(job.train_files)} train "
                 f"shards, {job.scorer.val.tokens.numel() - 1:,} val tokens)")

    def train(self, progress: ProgressFn, signals: StopSignals, rungs: Rungs | None = None) -> TrainResult:
        job = self.job
        metrics = MetricsLog(self.dir / METRICS) if self.main else NullMetrics()
        try:
            return train_model(self.cfg, job.model, job.batches, job.scorer.val.tokens, job.scorer.val.luts,
                               job.setup, job.dist_info, metrics, self.log, progress, signals=signals,
                               checkpoints=self.checkpoints, resume=self.resume, rungs=rungs)
        except BaseException as exc:
            self.ended(exc)
            raise
        finally:
            metrics.close()

    def summary(self, result: TrainResult) -> dict:
        cfg, job = self.cfg, self.job
        return {
            "run_dir": str(self.dir), "name": cfg.run.name, "seed": cfg.seed, "params": _params(job.model),
            "stop_reason": result.stop_reason, "steps": result.steps, "train_time_s": result.train_time_s,
            "tokens_per_s": result.tokens_per_s, "device": job.setup.description,
            "world_size": job.dist_info.world_size, "weights_sha256": result.checksum,
            "export": C.to_dict(cfg)["export"],
            "versions": {"pgolf": pgolf.__version__, "torch": torch.__version__, "python": platform.python_version()},
        }

    def stopped(self, result: TrainResult, summary: dict) -> None:
        """A run a signal or a NaN stopped: its summary says so, and the error names what to do next."""
        summary["error"] = result.error or f"{result.stop_reason} after {result.steps} steps"
        summary["wall_time_s"] = time.time() - self.started
        atomic_write_json(self.dir / SUMMARY, summary)
        self.state("failed" if result.stop_reason == "nan" else "interrupted", stop_reason=result.stop_reason)
        shutdown(self.job.dist_info)
        weights = self.dir / FLOAT_WEIGHTS
        if result.stop_reason == "nan":
            raise TrainingError(f"{result.error} (saved in {weights})")
        resumable = f"; resume with `pgolf train --resume {self.dir}`" if self.checkpoints.latest() else ""
        error = Terminated if result.stop_reason == "terminated" else Interrupted
        raise error(f"{result.stop_reason} after {result.steps} steps; weights saved in {weights}{resumable}")

    def export(self, result: TrainResult, summary: dict) -> dict:
        """Score the float weights, export them through the round trip, and write the summary."""
        cfg, model, scorer = self.cfg, self.job.model, self.job.scorer
        try:
            self.log(f"trained {result.steps} steps ({result.stop_reason}): train_time {result.train_time_s:.1f}s")
            model.load_state_dict(result.state_dict)
            float_eval = scorer.score(model)
            self.log(f"float model: val_loss {float_eval.loss:.4f} val_bpb {float_eval.bpb:.4f}")
            out_path = self.dir / ARTIFACTS / f"{artifact_label(cfg)}{ARTIFACT_SUFFIX}"
            exported = export_and_score(result.state_dict, model, dict(model.config), cfg, out_path, scorer)
        except BaseException as exc:
            self.ended(exc)
            raise
        self.log(f"round trip: val_loss {exported['val_loss_roundtrip']:.8f} val_bpb "
                 f"{exported['val_bpb_roundtrip']:.8f}, {exported['bytes']['total']:,} bytes total")
        if "val_bpb_ttt" in exported:
            self.log(f"ttt={exported['ttt']}: val_loss {exported['val_loss_ttt']:.8f} val_bpb "
                     f"{exported['val_bpb_ttt']:.8f} eval_time {exported['ttt_seconds']:.1f}s")
        summary.update({**score_fields(float_eval), **exported, "weight_diagnostics": result.diagnostics,
                        "wall_time_s": time.time() - self.started})
        atomic_write_json(self.dir / SUMMARY, summary)
        self.state("completed", stop_reason=result.stop_reason)
        return summary


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _train_job(cfg: C.Config, progress: ProgressFn, echo: Callable[[str], None], run_dir: Path | None,
               resume: bool, signals: StopSignals, rungs: Rungs | None = None) -> dict:
    job = start_training(cfg, cfg.device, progress)
    check_no_decay_names(list(job.model.named_parameters()), cfg.reg)  # before anything is written
    run = _TrainRun(cfg, job, run_dir, resume, echo)
    run.open()
    result = run.train(progress, signals, rungs)
    if not run.main:
        shutdown(job.dist_info)
        if result.stop_reason in ("interrupted", "terminated"):
            raise (Terminated if result.stop_reason == "terminated" else Interrupted)("stopped by a signal")
        return {}
    if result.stop_reason == "pruned":  # a search's loser: no export; its rung checkpoint stays for a resume
        run.state("interrupted", stop_reason="pruned")
        shutdown(job.dist_info)
        return {"run_dir": str(run.dir), "stop_reason": "pruned", "steps": result.steps,
                "train_time_s": result.train_time_s}
    save_checkpoint(run.dir / FLOAT_WEIGHTS, result.state_dict, dict(job.model.config))
    summary = run.summary(result)
    if result.stop_reason in ("interrupted", "terminated", "nan"):
        run.stopped(result, summary)
    summary = run.export(result, summary)
    shutdown(job.dist_info)
    return summary


RESUMABLE_KEYS = ("train.iterations", "train.wallclock_s")
"""The only settings `pgolf train --resume` may change (raise), so the continued run is the run it was."""


def resume_config(run_dir: Path, overrides: list[str]) -> C.Config:
    """The saved config of `run_dir` with `train.iterations` / `train.wallclock_s` raised by `overrides`; a
    ConfigError for a folder that is not a resumable run or for any other override."""
    run_dir = Path(run_dir)
    saved_path = run_dir / CONFIG
    if not saved_path.is_file():
        raise ConfigError(f"{run_dir} is not a pgolf run directory (no {CONFIG})")
    others = [item for item in overrides if C.override_key(item) not in RESUMABLE_KEYS]
    if others:
        raise ConfigError(f"--resume continues {run_dir} with its saved config; only {' and '.join(RESUMABLE_KEYS)} "
                          f"may be raised, not {' '.join(others)}")
    saved = C.load_yaml(saved_path)
    cfg = C.merge_dotted(saved, list(overrides))
    for key in RESUMABLE_KEYS:
        section, name = key.split(".")
        old, new = getattr(getattr(saved, section), name), getattr(getattr(cfg, section), name)
        if new < old or (key == "train.wallclock_s" and old > 0 and new <= 0):
            raise ConfigError(f"--resume may raise {key}, not lower it ({old} -> {new})")
    pointer = latest_checkpoint(run_dir)
    if pointer is None:
        raise ConfigError(f"{run_dir} has no checkpoint to resume from (it ran with train.checkpoint_every=0 and "
                          "no signal stopped it)")
    t = cfg.train
    if pointer["step"] >= t.iterations or 0 < t.wallclock_s <= pointer["train_time_s"]:
        raise ConfigError(f"{run_dir} has trained {pointer['step']} steps, all that train.iterations={t.iterations} "
                          f"and train.wallclock_s={t.wallclock_s:g} allow; raise one of them to train on")
    return cfg

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
from pgolf.jobs.export_job import export_and_score
from pgolf.jobs.float_checkpoint import save_checkpoint
from pgolf.jobs.layout import (
    ARTIFACT_SUFFIX,
    MetricsLog,
    artifact_label,
    create_run_dir,
    keep_metrics_through,
    write_run_state,
)
from pgolf.jobs.scorer import score
from pgolf.jobs.start import start_training
from pgolf.progress import ProgressFn, no_progress
from pgolf.runtime.distributed import broadcast_text, shutdown
from pgolf.runtime.signals import StopSignals
from pgolf.train.checkpoints import CheckpointStore, latest_checkpoint
from pgolf.train.loop import NullMetrics, train_model
from pgolf.train.regularizers import check_no_decay_names


def run_train(cfg: C.Config, progress: ProgressFn = no_progress, echo: Callable[[str], None] = print,
              run_dir: Path | None = None, resume: bool = False) -> dict:
    """`pgolf train`: the whole job. Returns the summary (also written to summary.json).

    `run_dir` (a sweep cell) is used as given and leaves `runs/latest` alone; by default a new dated run
    directory is made and `latest` points at it. `resume=True` continues `run_dir` from its newest checkpoint
    (`cfg` from `resume_config`). Ctrl-C and SIGTERM stop training after the current step and save the weights,
    a checkpoint and the summary (exit 130 or 143); `state.json` follows the run.
    """
    with StopSignals() as signals:
        try:
            return _train_job(cfg, progress, echo, run_dir, resume, signals)
        except KeyboardInterrupt as exc:  # a signal outside training (setup, export, scoring)
            error = Terminated if signals.reason == "terminated" else Interrupted
            raise error(f"{signals.reason or 'interrupted'} before the run finished") from exc


def _train_job(cfg: C.Config, progress: ProgressFn, echo: Callable[[str], None], run_dir: Path | None,
               resume: bool, signals: StopSignals) -> dict:
    job = start_training(cfg, cfg.device)
    setup, dist_info, val, model, train_files = job.setup, job.dist_info, job.val, job.model, job.train_files
    t = cfg.train
    check_no_decay_names(list(model.named_parameters()), cfg.reg)  # before anything is written
    if dist_info.is_main:
        if run_dir is None:
            run_dir = create_run_dir(cfg.run.root, cfg.run.name)
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    run_dir = Path(broadcast_text(str(run_dir) if dist_info.is_main else "", dist_info))
    checkpoints = CheckpointStore(run_dir, dist_info, setup.device)
    log_path = run_dir / "train.log"
    log_lines: list[str] = log_path.read_text().splitlines() if resume and log_path.is_file() else []

    def log(message: str) -> None:
        if dist_info.is_main:
            log_lines.append(message)
            atomic_write_text(log_path, "\n".join(log_lines) + "\n")
            echo(message)

    def state(name: str, **fields) -> None:
        if dist_info.is_main:
            pointer = checkpoints.latest()
            write_run_state(run_dir, name, checkpoint_step=pointer["step"] if pointer else None, **fields)

    def ended(exc: BaseException) -> None:
        """Record how an exception ended the run: a signal or submitit's requeue interrupts it, the rest fail it."""
        state("interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed", error=one_line(exc))

    if dist_info.is_main:
        atomic_write_text(run_dir / "config.yaml", C.to_yaml(cfg))
        if resume:
            keep_metrics_through(run_dir / "metrics.jsonl", checkpoints.latest()["step"])
    state("running")
    log(f"run: {run_dir}" + (" (resumed)" if resume else ""))
    log(f"device: {setup.description}" + (f", {dist_info.world_size} processes" if dist_info.enabled else ""))
    model_config = dict(model.config)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters; data: {cfg.data.name} ({len(train_files)} train shards, "
        f"{val.tokens.numel() - 1:,} val tokens)")
    metrics = MetricsLog(run_dir / "metrics.jsonl") if dist_info.is_main else NullMetrics()
    started = time.time()
    try:
        result = train_model(cfg, model, job.batches, val.tokens, val.luts, setup, dist_info, metrics, log, progress,
                             signals=signals, checkpoints=checkpoints, resume=resume)
    except BaseException as exc:
        ended(exc)
        raise
    finally:
        metrics.close()
    if not dist_info.is_main:
        shutdown(dist_info)
        if result.stop_reason in ("interrupted", "terminated"):
            raise (Terminated if result.stop_reason == "terminated" else Interrupted)("stopped by a signal")
        return {}
    save_checkpoint(run_dir / "model.safetensors", result.state_dict, model_config)
    summary = {
        "run_dir": str(run_dir), "name": cfg.run.name, "seed": cfg.seed, "params": n_params,
        "stop_reason": result.stop_reason, "steps": result.steps, "train_time_s": result.train_time_s,
        "tokens_per_s": result.tokens_per_s, "device": setup.description, "world_size": dist_info.world_size,
        "weights_sha256": result.checksum, "export": C.to_dict(cfg)["export"],
        "versions": {"pgolf": pgolf.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    if result.stop_reason in ("interrupted", "terminated", "nan"):
        summary["error"] = result.error or f"{result.stop_reason} after {result.steps} steps"
        summary["wall_time_s"] = time.time() - started
        atomic_write_json(run_dir / "summary.json", summary)
        state("failed" if result.stop_reason == "nan" else "interrupted", stop_reason=result.stop_reason)
        shutdown(dist_info)
        if result.stop_reason == "nan":
            raise TrainingError(f"{result.error} (saved in {run_dir / 'model.safetensors'})")
        pointer = checkpoints.latest()
        resumable = f"; resume with `pgolf train --resume {run_dir}`" if pointer else ""
        error = Terminated if result.stop_reason == "terminated" else Interrupted
        raise error(f"{result.stop_reason} after {result.steps} steps; weights saved in "
                    f"{run_dir / 'model.safetensors'}{resumable}")

    try:
        model.load_state_dict(result.state_dict)
        float_eval = score(model, val, t.seq_len, cfg.export.eval_stride, setup, progress)
        log(f"float model: val_loss {float_eval.loss:.4f} val_bpb {float_eval.bpb:.4f}")
        out_path = run_dir / "artifacts" / f"{artifact_label(cfg)}{ARTIFACT_SUFFIX}"
        exported = export_and_score(result.state_dict, model, model_config, cfg, out_path, val, setup, progress)
    except BaseException as exc:
        ended(exc)
        raise
    log(f"round trip: val_bpb {exported['val_bpb_roundtrip']:.4f}, {exported['bytes']['total']:,} bytes total")
    summary.update({
        "val_loss": float_eval.loss, "val_bpb": float_eval.bpb,
        "val_tokens": float_eval.tokens, "val_bytes": float_eval.bytes,
        **exported,
        "weight_diagnostics": result.diagnostics,
        "wall_time_s": time.time() - started,
    })
    atomic_write_json(run_dir / "summary.json", summary)
    state("completed", stop_reason=result.stop_reason)
    shutdown(dist_info)
    return summary


RESUMABLE_KEYS = ("train.iterations", "train.wallclock_s")


"""The only settings `pgolf train --resume` may change (raise), so the continued run is the run it was."""


def resume_config(run_dir: Path, overrides: list[str]) -> C.Config:
    """The saved config of `run_dir` with `train.iterations` / `train.wallclock_s` raised by `overrides`; a
    ConfigError for a folder that is not a resumable run or for any other override."""
    run_dir = Path(run_dir)
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"{run_dir} is not a pgolf run directory (no config.yaml)")
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

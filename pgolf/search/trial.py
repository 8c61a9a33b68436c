"""One trial: train (or reuse, or resume) a run directory, report its rungs to the pruner, score the objective.

What is non-standard here:
- A trial's run directory is named by its training values and seed (`trials/<values>-seed=<s>-<hash>`), as a
  sweep cell is, so a retried trial, a trial that differs only in export keys and a finalist's first seed all
  reuse one training: a finished training is never redone, an unfinished one resumes from its checkpoint.
- Rungs at fixed fractions of training (of train.iterations, or of train.wallclock_s when that ends first):
  RUNG_FRACTIONS = 1/9 and 1/3, the successive-halving ladder of reduction factor 3 below the finished run. The
  rung k is reported to Optuna at step 3**k (its resource), so the pruners' rungs line up whatever the run's
  length. At a rung the loop validates and checkpoints, then the pruner decides; a pruned trial keeps that
  checkpoint. Rung scores are written to the run's rungs.json, and replayed when the training is reused.
- The rung's score is `val_bpb` (the loop's validation at the rung, free) or `cooldown_bpb`: a branch from the
  rung's checkpoint that decays the LR linearly to 0 over the same fraction of its steps as the run's own
  warmdown (warmup-stable-decay, Hägele et al. 2024), exported and scored through the round trip; it runs in
  `cooldown/step-<N>/` with the trial's RNG state kept, so the trial goes on exactly as without it.
- The objective is the number a user submits: fit-budget's round-trip val_bpb at `max_bytes` (with the trial's
  export keys as the base export), else the round-trip val_bpb of the trial's export. Each one is cached in the
  run's objectives.json, so a trial killed after scoring is not scored again.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgolf import config as C
from pgolf.atomic import atomic_write_json
from pgolf.errors import UsageError
from pgolf.fit.budget import fit_budget
from pgolf.jobs.export_job import run_export
from pgolf.jobs.layout import budget_label
from pgolf.jobs.reuse import finished_training, resumable
from pgolf.jobs.sources import config_for_source
from pgolf.jobs.train_job import run_train
from pgolf.results.report import scored_columns
from pgolf.train.checkpoints import FOLDER as CHECKPOINTS
from pgolf.train.checkpoints import POINTER, latest_checkpoint
from pgolf.train.optim import training_fraction

REDUCTION_FACTOR = 3
RUNG_FRACTIONS = (1 / 9, 1 / 3)
PROXIES = ("val_bpb", "cooldown_bpb")
RUNGS_FILE = "rungs.json"
OBJECTIVES_FILE = "objectives.json"
TRIALS = "trials"

Report = Callable[[int, float], bool]
"""(resource, score) -> whether to stop the trial (an Optuna trial's report + should_prune)."""


def never_prune(_resource: int, _score: float) -> bool:
    return False


@dataclass
class TrialSetup:
    """What every trial of a search shares (plain data: it crosses process boundaries as JSON)."""

    folder: str
    base: list[str]
    train_keys: list[str]
    export_keys: list[str]
    max_bytes: int | None
    margin: int
    proxy: str = "val_bpb"
    """The rung score the pruner sees: val_bpb or cooldown_bpb."""
    cooldown: bool = False
    """Branch a cooldown at every rung (always when proxy is cooldown_bpb)."""


@dataclass
class TrialOutcome:
    run_dir: str
    pruned: bool
    rungs: list[dict[str, Any]]
    seconds: float
    row: dict[str, Any] = field(default_factory=dict)
    """The scored columns (point, params, bytes, val_bpb, val_bpb_roundtrip ...); empty when pruned."""

    @property
    def objective(self) -> float | None:
        return self.row.get("val_bpb_roundtrip")


def rung_steps(train: C.TrainConfig) -> list[int]:
    """The rungs' steps of a run bound by train.iterations (a wallclock-bound run's rungs follow its clock)."""
    return [math.ceil(f * train.iterations - 1e-9) for f in RUNG_FRACTIONS]


def check_rungs(train: C.TrainConfig, pruner: str) -> None:
    """A pruner needs every rung strictly inside training: distinct steps, after step 0, before the last."""
    if pruner == "none" or train.wallclock_s > 0:
        return
    steps = rung_steps(train)
    if len(set(steps)) < len(steps) or steps[0] < 1 or steps[-1] >= train.iterations:
        raise UsageError(f"--pruner {pruner} needs a rung at 1/9 and 1/3 of training, but train.iterations="
                         f"{train.iterations} is too few steps for them (at least 4); raise it or give --pruner none")


def run_id(values: dict[str, str], seed: int) -> str:
    """`matrix_lr=0.0123-ema_decay=0.98-seed=1337-1a2b3c`: readable (cut at 80 characters) plus a hash."""
    readable = "-".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in values.items())
    readable = re.sub(r"[^A-Za-z0-9._=+-]+", "_", f"{readable}-seed={seed}" if readable else f"seed={seed}")[:80]
    digest = hashlib.sha256(json.dumps({"values": values, "seed": seed}, sort_keys=True).encode()).hexdigest()[:6]
    return f"{readable}-{digest}"


def _short(value: str) -> str:
    try:
        return f"{float(value):.4g}" if not value.lstrip("-").isdigit() else value
    except ValueError:
        return value


def trial_overrides(setup: TrialSetup, values: dict[str, str], seed: int) -> tuple[list[str], list[str]]:
    """(training overrides: base, training values, seed; export overrides)."""
    base = [o for o in setup.base if C.override_key(o) != "seed"]
    train = [f"{k}={v}" for k, v in values.items() if k in setup.train_keys]
    export = [f"{k}={v}" for k, v in values.items() if k in setup.export_keys]
    return base + train + [f"seed={seed}"], export


def run_trial(setup: TrialSetup, values: dict[str, str], seed: int, report: Report = never_prune) -> TrialOutcome:
    """Train or reuse the training of `values` at `seed`, report its rungs (stopping when `report` says so), and
    score the objective. Errors propagate (the caller records a failed trial)."""
    started = time.perf_counter()
    overrides, export = trial_overrides(setup, values, seed)
    train_values = {k: v for k, v in values.items() if k in setup.train_keys}
    run_dir = Path(setup.folder) / TRIALS / run_id(train_values, seed)
    cfg = C.compose(overrides)
    rungs = RungReporter(cfg, run_dir, report, setup.proxy, setup.cooldown or setup.proxy == "cooldown_bpb")
    summary = finished_training(run_dir)
    if summary is not None:
        if rungs.replay(math.inf):
            return TrialOutcome(str(run_dir), True, rungs.records, time.perf_counter() - started)
    else:
        resume = resumable(run_dir, cfg)
        if resume and rungs.replay(latest_checkpoint(run_dir)["step"]):
            return TrialOutcome(str(run_dir), True, rungs.records, time.perf_counter() - started)
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)  # an unfinished training without a checkpoint: nothing in it is a result
        summary = run_train(cfg, echo=_quiet, run_dir=run_dir, resume=resume, rungs=rungs)
        if summary.get("stop_reason") == "pruned":
            return TrialOutcome(str(run_dir), True, rungs.records, time.perf_counter() - started)
    row = objective(setup, run_dir, overrides, export, summary)
    return TrialOutcome(str(run_dir), False, rungs.records, time.perf_counter() - started, row)


def _quiet(_line: str) -> None:
    pass


def objective(setup: TrialSetup, run_dir: Path, overrides: list[str], export: list[str],
              summary: dict[str, Any]) -> dict[str, Any]:
    """The scored row of a finished training: fit-budget at max_bytes, else the export of the trial's export keys,
    else the training's own export. Cached per (export keys, budget) in objectives.json."""
    key = json.dumps({"export": export, "max_bytes": setup.max_bytes, "margin": setup.margin}, sort_keys=True)
    path = run_dir / OBJECTIVES_FILE
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if key in cache:
        return cache[key]
    if setup.max_bytes is not None:
        scored = fit_budget(run_dir, config_for_source(run_dir, overrides + export), setup.max_bytes,
                            setup.margin).summary
        point = budget_label(setup.max_bytes)
    elif export:
        scored = run_export(run_dir, config_for_source(run_dir, overrides + export))
        point = " ".join(export)
    else:
        scored, point = summary, "train"
    row = {"point": point, "params": summary["params"], "steps": summary["steps"],
           "train_time_s": summary["train_time_s"], **scored_columns(scored)}
    atomic_write_json(path, {**cache, key: row})
    return row


class RungReporter:
    """The training loop's `rungs` for one trial: when a rung is due, its score, the pruner's answer."""

    def __init__(self, cfg: C.Config, run_dir: Path, report: Report, proxy: str, cooldown: bool):
        if proxy not in PROXIES:
            raise UsageError(f"the rung score must be one of {', '.join(PROXIES)}, got {proxy!r}")
        self.cfg, self.run_dir, self.report_fn, self.proxy, self.cooldown = cfg, run_dir, report, proxy, cooldown
        self.records: list[dict[str, Any]] = []

    def replay(self, through_step: float) -> bool:
        """Report the rungs recorded up to `through_step` again (a reused or resumed training); True when the
        pruner stops the trial at one of them."""
        path = self.run_dir / RUNGS_FILE
        recorded = json.loads(path.read_text()) if path.is_file() else []
        self.records = []
        for record in (r for r in recorded if r["step"] <= through_step):
            self.records.append(record)
            if self.report_fn(record["resource"], record[self.proxy]):
                return True
        return False

    def due(self, step: int, elapsed_s: float) -> bool:
        k = len(self.records)
        if k >= len(RUNG_FRACTIONS):
            return False
        return training_fraction(step, elapsed_s, self.cfg.train) >= RUNG_FRACTIONS[k] - 1e-9

    def report(self, step: int, elapsed_s: float, last_val: dict[str, float]) -> bool:
        k = len(self.records)
        record = {"rung": k, "resource": REDUCTION_FACTOR ** k, "step": step, "train_time_s": elapsed_s,
                  "val_bpb": last_val["val_bpb"]}
        if self.cooldown:
            record["cooldown_bpb"] = cooldown_bpb(self.run_dir, self.cfg, step)
        self.records.append(record)
        atomic_write_json(self.run_dir / RUNGS_FILE, self.records)
        return self.report_fn(record["resource"], record[self.proxy])


def cooldown_steps(train: C.TrainConfig, step: int) -> int:
    """The branch's decay length: the run's own warmdown share of `step` steps (at least one)."""
    share = train.warmdown_frac if train.warmdown_frac > 0 else min(train.warmdown_steps / max(train.iterations, 1), 1)
    return max(1, round(step * share))


def cooldown_bpb(run_dir: Path, cfg: C.Config, step: int) -> float:
    """Round-trip val_bpb of a branch from `run_dir`'s checkpoint at `step` whose LR decays linearly to 0."""
    branch = run_dir / "cooldown" / f"step-{step:06d}"
    done = finished_training(branch)
    if done is not None:
        return float(done["val_bpb_roundtrip"])
    pointer = latest_checkpoint(run_dir)
    if pointer is None or pointer["step"] != step:
        raise UsageError(f"{run_dir}: no checkpoint at rung step {step} to branch a cooldown from")
    if branch.exists():
        shutil.rmtree(branch)
    shutil.copytree(run_dir / CHECKPOINTS / pointer["dir"], branch / CHECKPOINTS / pointer["dir"])
    shutil.copy2(run_dir / CHECKPOINTS / POINTER, branch / CHECKPOINTS / POINTER)
    branch_cfg = copy.deepcopy(cfg)
    t = branch_cfg.train
    t.warmdown_steps = cooldown_steps(t, step)
    t.iterations, t.warmdown_frac, t.wallclock_s, t.val_every, t.checkpoint_every = step + t.warmdown_steps, 0, 0, 0, 0
    with _rng_kept():
        summary = run_train(branch_cfg, echo=_quiet, run_dir=branch, resume=True)
    shutil.rmtree(branch / CHECKPOINTS, ignore_errors=True)  # scored; its checkpoint has no further use
    return float(summary["val_bpb_roundtrip"])


@contextlib.contextmanager
def _rng_kept():
    """The trial's RNG states, restored after a branch (its resume sets them to the checkpoint's, then advances)."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

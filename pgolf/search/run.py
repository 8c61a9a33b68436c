"""`pgolf search`: the study's trials (here, in worker processes, or as submitit jobs), then the finalists, then
the summary files `pgolf report` reads. The entry of the search verb.

- Trials run until --trials count (complete, pruned, failed) or --time has passed (no trial starts after it;
  one that is running finishes). Re-running the command resumes the study: finished trials stay, trials a
  killed process left running are retried on their run directory (study.recover_stale).
- Ctrl-C or SIGTERM stops the running trial after its step (a checkpoint is written), marks it for a retry,
  writes the trials table and exits 130 or 143.
- Finalists: the K best distinct configs and the baseline (the space's defaults) are trained with S seeds
  (seed, seed+1, ...: the trial's own run is the first) and scored by the same objective; their rows are a
  sweep-shaped folder `finalists/` (sweep.yaml + results.csv/parquet), so `pgolf report` compares them with
  the sweep's statistics (mean, std, delta, one-sided Welch and paired p).
- search.json: counts, the best trial, fANOVA parameter importances (optuna's evaluator; it needs scikit-learn,
  part of the extra), this invocation's wall time, the trials' own seconds and the runner's overhead.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pgolf import config as C
from pgolf.atomic import atomic_write_json, atomic_write_text
from pgolf.errors import ConfigError, Interrupted, Terminated, UsageError, one_line
from pgolf.progress import ProgressFn, no_progress
from pgolf.results.tables import write_csv, write_parquet
from pgolf.runtime.signals import StopSignals
from pgolf.search import study as S
from pgolf.search.space import Param, Space, parse_space
from pgolf.search.trial import TrialSetup, check_rungs, run_trial

SUMMARY_FILE = "search.json"
FINALISTS = "finalists"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class SearchSettings:
    """A whole search, as plain data (workers get it as JSON)."""

    name: str
    folder: str
    space: dict[str, Any]
    """Space.record() plus each parameter's key."""
    max_bytes: int | None = None
    margin: int = 0
    trials: int | None = 20
    time_s: float | None = None
    sampler: str = "tpe"
    pruner: str = "asha"
    proxy: str = "val_bpb"
    measure_proxies: bool = False
    finalists: int = 3
    seeds: int = 3
    jobs: int = 1
    launcher: str = "local"
    seed: int = 1337
    deadline: float | None = None
    """Epoch seconds after which no trial starts (set when the search starts)."""
    session: str = ""
    """This invocation (pid and start time): its trials are the ones its overhead is measured against."""

    def parsed_space(self) -> Space:
        params = [Param(key=k, **v) for k, v in self.space["params"].items()]
        return Space(list(self.space["base"]), params)

    def trial_setup(self) -> TrialSetup:
        params = self.parsed_space().params
        return TrialSetup(self.folder, list(self.space["base"]), [p.key for p in params if not p.exports],
                          [p.key for p in params if p.exports], self.max_bytes, self.margin, self.proxy,
                          self.measure_proxies)


@dataclass
class SearchOutcome:
    settings: SearchSettings
    trials: pd.DataFrame
    finalists: list[dict[str, Any]] = field(default_factory=list)
    ran: int = 0
    """Trials run by this invocation."""
    wall_time_s: float = 0.0


def parse_duration(text: str) -> float:
    """`2h`, `30m`, `90s`, `1.5h` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([hms]?)\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--time must be a positive duration such as 2h, 30m or 600s, got {text!r}")
    return float(match.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[match.group(2)]


def make_settings(overrides: list[str], name: str | None = None, trials: int | None = None, time_s: float | None = None,
                  max_bytes: int | None = None, margin: int = 0, finalists: int = 3, seeds: int = 3,
                  sampler: str = "tpe", pruner: str = "asha", proxy: str = "val", measure_proxies: bool = False,
                  jobs: int = 1, launcher: str = "local") -> SearchSettings:
    """Check every option and the whole space (unknown keys, bounds, types, rungs) before anything runs."""
    if trials is not None and trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if finalists < 0 or seeds < 1:
        raise UsageError(f"--finalists must be >= 0 and --seeds >= 1, got {finalists} and {seeds}")
    if max_bytes is not None and (max_bytes <= 0 or not 0 <= margin < max_bytes):
        raise UsageError(f"--max-bytes must be > 0 and --margin in [0, max-bytes), got {max_bytes} and {margin}")
    if launcher not in ("local", "submitit"):
        raise UsageError(f"--launcher must be local or submitit, got {launcher!r}")
    if proxy not in ("val", "cooldown"):
        raise UsageError(f"--proxy must be val or cooldown, got {proxy!r}")
    S.make_pruner(pruner)
    S.make_sampler(sampler, 0)
    if name is not None and not _NAME_RE.match(name):
        raise UsageError(f"--name {name!r} must be letters, digits, '.', '_' or '-'")
    space = parse_space(overrides)
    base_cfg = C.compose(space.base)
    check_rungs(_shortest(base_cfg, space).train, pruner)
    root = Path(base_cfg.run.root) / "searches"
    name = name or S.derived_name(space, max_bytes, margin)
    record = space.record()
    return SearchSettings(name=name, folder=str(root / name), space=record, max_bytes=max_bytes, margin=margin,
                          trials=trials if trials is not None or time_s is not None else 20, time_s=time_s,
                          sampler=sampler, pruner=pruner, proxy=f"{proxy}_bpb", measure_proxies=measure_proxies,
                          finalists=finalists, seeds=seeds, jobs=jobs, launcher=launcher, seed=base_cfg.seed)


def _shortest(base_cfg: C.Config, space: Space) -> C.Config:
    """The base config at the fewest iterations the space allows (what the rungs must fit in)."""
    low = next((p.low for p in space.params if p.key == "train.iterations" and p.kind == "int"), None)
    if low is not None:
        base_cfg.train.iterations = int(low)
    return base_cfg


def _record(settings: SearchSettings) -> dict[str, Any]:
    return {**settings.space, "max_bytes": settings.max_bytes, "margin": settings.margin, "name": settings.name}


def run_search(settings: SearchSettings, progress: ProgressFn = no_progress, echo: Callable[[str], None] = print,
               sampler: Any = None) -> SearchOutcome:
    """Run the study to its end, then the finalists; Ctrl-C/SIGTERM write what finished. `sampler` (an Optuna
    sampler) replaces --sampler (the bench's grid)."""
    S.require_optuna()
    folder = Path(settings.folder)
    started = time.perf_counter()
    S.prepare_folder(folder, _record(settings))
    if settings.time_s is not None:
        settings.deadline = time.time() + settings.time_s
    settings.session = f"{os.getpid()}-{time.time():.0f}"
    space = settings.parsed_space()
    outcome = SearchOutcome(settings, pd.DataFrame())
    with StopSignals() as signals:
        try:
            study = S.open_study(folder)
            stale = S.recover_stale(study, folder)
            before = S.counted(study)
            echo(f"search {folder}: {before} trials before" + (f", {len(stale)} to retry" if stale else "")
                 + (f"; up to {settings.trials} trials" if settings.trials else "")
                 + (f", {settings.time_s:.0f} s" if settings.time_s else ""))
            if settings.launcher == "submitit":
                _run_submitit(settings, progress)
            elif settings.jobs > 1:
                _run_processes(settings, progress)
            else:
                worker_loop(settings, 0, progress, echo, signals, sampler)
            study = S.open_study(folder)
            outcome.ran = S.counted(study) - before
            outcome.finalists = run_finalists(settings, study, space, echo, progress)
        except (KeyboardInterrupt, Interrupted) as exc:
            frame = S.write_trials(folder, S.open_study(folder), space)
            what = f"{len(frame)} trials written to {folder / S.TRIALS_CSV}"
            if signals.reason == "terminated" or isinstance(exc, Terminated):
                raise Terminated(f"terminated; {what}; re-run the command to resume") from exc
            raise Interrupted(f"interrupted; {what}; re-run the command to resume") from exc
    study = S.open_study(folder)
    outcome.trials = S.write_trials(folder, study, space)
    outcome.wall_time_s = time.perf_counter() - started
    write_summary(settings, study, space, outcome)
    return outcome


def worker_loop(settings: SearchSettings, worker: int, progress: ProgressFn = no_progress,
                echo: Callable[[str], None] = print, signals: StopSignals | None = None, sampler: Any = None) -> int:
    """Ask, run and tell trials until the study has --trials or the deadline passed; returns the trials run."""
    optuna = S.require_optuna()
    folder = Path(settings.folder)
    space = settings.parsed_space()
    setup = settings.trial_setup()
    study = S.open_study(folder)
    n_before = len(study.get_trials(deepcopy=False))
    study.sampler = sampler or S.make_sampler(settings.sampler, settings.seed + 7919 * worker + n_before)
    study.pruner = S.make_pruner(settings.pruner)
    ran = 0
    with S.WorkerLock(folder) as lock:
        S.recover_stale(study, folder)
        while _more(settings, study) and not (signals is not None and signals.requested):
            trial = study.ask()
            trial.set_user_attr("worker", lock.name)
            trial.set_user_attr("session", settings.session)
            values = {p.key: S.suggest(trial, p) for p in space.params}
            trial.set_user_attr("values", values)

            def report(resource: int, score: float, trial=trial) -> bool:
                trial.report(score, resource)
                return trial.should_prune()

            try:
                result = run_trial(setup, values, settings.seed, report)
            except (KeyboardInterrupt, Interrupted):
                trial.set_user_attr("stale", True)  # not a result: retried by the next run
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                raise
            except Exception as exc:
                trial.set_user_attr("error", one_line(exc))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                echo(f"trial {trial.number} failed: {one_line(exc)}")
                continue
            finally:
                ran += 1
            for key, value in (("run_dir", result.run_dir), ("seconds", result.seconds), ("rungs", result.rungs)):
                trial.set_user_attr(key, value)
            if result.pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, result.objective)
            S.write_trials(folder, study, space)
            state = "pruned" if result.pruned else f"{result.objective:.4f}"
            echo(f"[{S.counted(study)}{'/' + str(settings.trials) if settings.trials else ''}] trial {trial.number}: "
                 f"{state} ({result.seconds:.0f} s)")
            progress("search", S.counted(study), settings.trials)
    return ran


def _more(settings: SearchSettings, study: Any) -> bool:
    if settings.deadline is not None and time.time() >= settings.deadline:
        return False
    return settings.trials is None or S.counted(study) < settings.trials or S.waiting(study) > 0


def _worker_main(settings_json: str, worker: int, threads: int) -> None:
    """A worker process: Ctrl-C is the parent's to handle; SIGTERM stops the trial after its step."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    settings = SearchSettings(**json.loads(settings_json))
    with StopSignals() as signals:
        try:
            worker_loop(settings, worker, echo=lambda _line: None, signals=signals)
        except Interrupted:
            pass


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_processes(settings: SearchSettings, progress: ProgressFn) -> None:
    """`jobs` spawned workers on the shared journal (torch threads = cores / jobs)."""
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, _cores() // settings.jobs)
    payload = json.dumps(dataclasses.asdict(settings))
    procs = [ctx.Process(target=_worker_main, args=(payload, i, threads)) for i in range(settings.jobs)]
    for proc in procs:
        proc.start()
    try:
        _wait(settings, lambda: all(not p.is_alive() for p in procs), progress)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker's trial stops after its step with a checkpoint
        for proc in procs:
            proc.join()


def _wait(settings: SearchSettings, finished: Callable[[], bool], progress: ProgressFn) -> None:
    while not finished():
        progress("search", S.counted(S.open_study(Path(settings.folder))), settings.trials)
        time.sleep(1.0)


class SearchWorker:
    """What a submitit job runs: a worker loop on the shared journal; requeued with the same arguments when
    preempted (its running trial is then retried from its checkpoint)."""

    def __call__(self, settings_json: str, worker: int, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        worker_loop(SearchSettings(**json.loads(settings_json)), worker, echo=lambda _line: None)

    def checkpoint(self, *args: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)


def _run_submitit(settings: SearchSettings, progress: ProgressFn) -> None:
    """`jobs` submitit jobs (the launcher config group: local or slurm), each a worker on the shared journal."""
    try:
        import submitit
    except ImportError as exc:
        raise UsageError("--launcher submitit needs submitit: pip install 'pgolf[submitit]'") from exc
    lc = C.compose(settings.space["base"]).launcher
    executor = submitit.AutoExecutor(folder=Path(settings.folder) / "submitit", cluster=lc.cluster)
    params: dict[str, Any] = {"timeout_min": lc.timeout_min, "nodes": 1, "tasks_per_node": 1,
                              "cpus_per_task": lc.cpus_per_task, "name": f"pgolf-search-{settings.name}"}
    if lc.gpus_per_node:
        params["gpus_per_node"] = 1
    if lc.cluster == "slurm" and lc.partition:
        params["slurm_partition"] = lc.partition
    executor.update_parameters(**params)
    threads = max(1, _cores() // settings.jobs) if lc.cluster == "local" else lc.cpus_per_task
    payload = json.dumps(dataclasses.asdict(settings))
    jobs = [executor.submit(SearchWorker(), payload, i, threads) for i in range(settings.jobs)]
    try:
        _wait(settings, lambda: all(job.done() for job in jobs), progress)
    finally:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)
    errors = [one_line(job.exception()) for job in jobs if job.exception() is not None]
    if errors:
        raise ConfigError(f"{len(errors)} submitit search worker(s) failed: {errors[0]}")


# --------------------------------------------------------------------------- finalists

def finalist_configs(study: Any, space: Space, k: int) -> list[tuple[str, dict[str, str]]]:
    """The baseline (the space's defaults) and the `k` best complete trials with distinct values."""
    optuna = S.require_optuna()
    complete = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: (t.value, t.number))
    configs: list[tuple[str, dict[str, str]]] = [("baseline", {p.key: p.default for p in space.params})]
    for trial in complete:
        values = trial.user_attrs["values"]
        if len(configs) > k:
            break
        if all(values != v for _, v in configs[1:]):
            configs.append((f"trial {trial.number}", values))
    return configs if len(configs) > 1 else []


def run_finalists(settings: SearchSettings, study: Any, space: Space, echo: Callable[[str], None],
                  progress: ProgressFn = no_progress) -> list[dict[str, Any]]:
    """Every finalist config and the baseline at --seeds seeds, no pruning; rows written after each training."""
    configs = finalist_configs(study, space, settings.finalists) if settings.finalists else []
    if not configs:
        return []
    folder = Path(settings.folder) / FINALISTS
    setup = settings.trial_setup()
    seeds = [settings.seed + i for i in range(settings.seeds)]
    keys = [p.key for p in space.params]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "sweep.yaml", C.plain_yaml({
        "name": f"{settings.name}-finalists", "axes": {k: list(dict.fromkeys(v[k] for _, v in configs)) for k in keys},
        "baseline": configs[0][1], "max_bytes": settings.max_bytes, "margin": settings.margin,
        "seeds": seeds, "base": list(settings.space["base"])}))
    rows = []
    total = len(configs) * len(seeds)
    for label, values in configs:
        for seed in seeds:
            row = {**values, "finalist": label, "seed": seed, "status": "ok", "error": ""}
            try:
                result = run_trial(setup, values, seed)
                row.update({"cell": Path(result.run_dir).name, "run_dir": result.run_dir, **result.row,
                            "seconds": result.seconds})
            except (KeyboardInterrupt, Interrupted):
                raise
            except Exception as exc:
                row.update({"status": "failed", "error": one_line(exc)})
            rows.append(row)
            _write_finalists(folder, rows)
            progress("finalists", len(rows), total)
            score = row.get("val_bpb_roundtrip")
            echo(f"finalist {label} seed {seed}: " + (f"{score:.4f}" if score is not None else row["error"]))
    return rows


def _write_finalists(folder: Path, rows: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(rows)
    write_csv(frame, folder / "results.csv")
    write_parquet(frame.astype({c: str for c in frame.columns if frame[c].dtype == object}), folder / "results.parquet")


# --------------------------------------------------------------------------- summary

def importances(study: Any) -> dict[str, Any]:
    """fANOVA importance of each parameter over the complete trials, or the reason there is none."""
    optuna = S.require_optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {"error": f"{len(complete)} complete trials; fANOVA needs at least 2"}
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except ImportError:
        return {"error": f"fANOVA needs scikit-learn: {S.EXTRA}"}
    except (RuntimeError, ValueError) as exc:
        return {"error": one_line(exc)}
    return {"values": {k: float(v) for k, v in found.items()}}


def write_summary(settings: SearchSettings, study: Any, space: Space, outcome: SearchOutcome) -> dict[str, Any]:
    frame = outcome.trials
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    stale = int(frame["stale"].sum()) if len(frame) else 0
    now = frame[frame["session"].eq(settings.session)] if len(frame) else frame
    finalist_s = sum(float(r.get("seconds") or 0.0) for r in outcome.finalists)
    busy_s = (float(now["seconds"].astype(float).sum()) if len(now) else 0.0) + finalist_s
    capacity_s = outcome.wall_time_s * (settings.jobs if settings.launcher == "local" else 1)
    best = None
    complete = frame[frame["state"].eq("complete")] if len(frame) else frame
    if len(complete):
        row = complete.loc[complete["objective"].astype(float).idxmin()]
        best = {"number": int(row["number"]), "objective": float(row["objective"]), "run_dir": row["run_dir"],
                "values": {p.key: row[p.key] for p in space.params}}
    summary = {
        "name": settings.name, "folder": settings.folder, "settings": dataclasses.asdict(settings),
        "counts": {"complete": states.get("complete", 0), "pruned": states.get("pruned", 0),
                   "failed": states.get("fail", 0) - stale, "retried": stale, "running": states.get("running", 0)},
        "best": best, "importances": importances(study), "wall_time_s": outcome.wall_time_s,
        "trials_seconds": busy_s, "trials_run": int(len(now)),
        "overhead": 1.0 - busy_s / capacity_s if capacity_s > 0 else None,
    }
    atomic_write_json(Path(settings.folder) / SUMMARY_FILE, summary)
    return summary


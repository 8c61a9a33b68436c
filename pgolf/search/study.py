"""The study on disk: its folder and search.yaml, Optuna's journal, samplers and pruners, the liveness of trials,
and the trials table written after every trial.

- Storage: Optuna's JournalStorage on `journal.log` (JSON lines appended under a file lock; a line cut short by
  a kill is ignored), which any number of processes and submitit workers share. Nothing is unpickled.
- A trial that was running when its process died (SIGKILL, a lost node) stays RUNNING in the journal. Every worker
  holds an flock on `locks/<host>-<pid>.lock` for its life and names it in each trial it runs; a search that
  starts finds RUNNING trials whose lock is free, marks them failed (`stale`, not counted) and enqueues their
  values again, so the retry reuses or resumes their run directory.
- Samplers are seeded by the config's seed, the worker and the trials already in the study, so a resumed or
  parallel search does not draw the same points again. TPE starts after 5 random trials (Optuna's default is
  10: too many for searches of 10-30 trainings), multivariate, with the constant liar when several workers run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import pandas as pd

from pgolf import config as C
from pgolf.atomic import atomic_write_text
from pgolf.errors import ConfigError, MissingExtraError, UsageError
from pgolf.results.tables import write_csv
from pgolf.search.space import Param, Space
from pgolf.search.trial import REDUCTION_FACTOR, RUNG_FRACTIONS

SEARCH_FILE = "search.yaml"
JOURNAL = "journal.log"
TRIALS_CSV = "trials.csv"
STUDY_NAME = "search"
SAMPLERS = ("tpe", "random")
PRUNERS = ("asha", "hyperband", "none")
EXTRA = "pip install 'pgolf[search]'"


def require_optuna() -> Any:
    """optuna, or a one-line error naming the extra."""
    try:
        import optuna
    except ImportError as exc:
        raise MissingExtraError(f"pgolf search needs optuna: {EXTRA}") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def derived_name(space: Space, max_bytes: int | None, margin: int) -> str:
    """The searched keys plus a hash of the space and budget: the same command resumes the same study."""
    keys = "-".join(p.key.rsplit(".", 1)[-1] for p in space.params)
    digest = hashlib.sha256(json.dumps({**space.record(), "max_bytes": max_bytes, "margin": margin},
                                       sort_keys=True).encode()).hexdigest()[:6]
    return f"{keys[:60]}-{digest}"


def prepare_folder(folder: Path, record: dict[str, Any]) -> None:
    """Write search.yaml, or check that the folder's study is this one; refuse another space or budget."""
    path = folder / SEARCH_FILE
    if path.is_file():
        old = C.load_plain_yaml(path)
        for key in ("base", "params", "max_bytes", "margin"):
            if json.dumps(old.get(key), sort_keys=True) != json.dumps(record[key], sort_keys=True):
                raise ConfigError(f"{folder} holds a study of another search ({key} differs); re-run its own command "
                                  "or give --name for a new study")
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(f"cannot make the search folder {folder}: {exc.strerror}") from exc
    atomic_write_text(path, C.plain_yaml(record))


def make_sampler(name: str, seed: int) -> Any:
    optuna = require_optuna()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UsageError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def make_pruner(name: str) -> Any:
    """Successive halving (ASHA) or Hyperband over the rungs (resource 3**k), or none."""
    optuna = require_optuna()
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION_FACTOR)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=REDUCTION_FACTOR ** len(RUNG_FRACTIONS),
                                              reduction_factor=REDUCTION_FACTOR)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UsageError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def open_study(folder: Path, sampler: Any = None, pruner: Any = None) -> Any:
    optuna = require_optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(folder / JOURNAL)))
    return optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="minimize", sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def suggest(trial: Any, param: Param) -> str:
    """The trial's value of `param`, as an override string."""
    if param.kind == "choice":
        return str(trial.suggest_categorical(param.key, param.choices))
    if param.kind == "int":
        return param.value_text(trial.suggest_int(param.key, int(param.low), int(param.high),
                                                  step=int(param.step or 1), log=param.log))
    return param.value_text(trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log))


class WorkerLock:
    """An flock held for a worker's life: its trials are live while it is held."""

    def __init__(self, folder: Path):
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.path = folder / "locks" / f"{self.name}.lock"

    def __enter__(self) -> WorkerLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")  # noqa: SIM115 - held open for the worker's life
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.path.unlink(missing_ok=True)


def _lock_is_free(folder: Path, worker: str) -> bool:
    path = folder / "locks" / f"{worker}.lock"
    if not path.is_file():
        return True
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def recover_stale(study: Any, folder: Path) -> list[int]:
    """RUNNING trials whose worker is gone: failed (`stale`, not counted) and their values enqueued again."""
    optuna = require_optuna()
    stale = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is None or not _lock_is_free(folder, worker):
            continue
        storage = study._storage  # the public API cannot end another process's trial
        storage.set_trial_user_attr(trial._trial_id, "stale", True)
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        stale.append(trial.number)
    return stale


def counted(study: Any) -> int:
    """Trials that count towards --trials: finished (complete, pruned, failed but not stale) or running."""
    optuna = require_optuna()
    states = optuna.trial.TrialState
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (states.COMPLETE, states.PRUNED, states.RUNNING)
               or (t.state == states.FAIL and not t.user_attrs.get("stale")))


def waiting(study: Any) -> int:
    optuna = require_optuna()
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def trials_frame(study: Any, space: Space) -> pd.DataFrame:
    """One row per trial: number, state, objective, the parameter values, each rung's step and scores, the run
    directory, seconds, error."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row: dict[str, Any] = {"number": t.number, "state": t.state.name.lower(),
                               "objective": t.value if t.state.name == "COMPLETE" else None}
        row.update({p.key: attrs.get("values", {}).get(p.key) for p in space.params})
        for record in attrs.get("rungs", []):
            k = record["rung"]
            row.update({f"rung{k}_step": record["step"], f"rung{k}_val_bpb": record["val_bpb"]})
            if "cooldown_bpb" in record:
                row[f"rung{k}_cooldown_bpb"] = record["cooldown_bpb"]
        row.update({"run_dir": attrs.get("run_dir"), "seconds": attrs.get("seconds"), "error": attrs.get("error", ""),
                    "stale": bool(attrs.get("stale")), "retry_of": attrs.get("retry_of"),
                    "session": attrs.get("session")})
        rows.append(row)
    return pd.DataFrame(rows)


def write_trials(folder: Path, study: Any, space: Space) -> pd.DataFrame:
    frame = trials_frame(study, space)
    write_csv(frame, folder / TRIALS_CSV)
    return frame

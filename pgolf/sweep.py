"""`pgolf sweep`: a grid of trainings and exports, resumable, with results after every cell.

What is non-standard here:
- Axes split by what they change. Training axes (model, train, reg, data keys and
  groups, and seeds) give one training per combination: a *training cell*, a normal
  run directory `cells/<id>` whose name is fixed by its values. Export axes
  (`export.*`) never retrain: every export point re-exports that cell's float
  weights into its `artifacts/`. With `max_bytes`, each training also gets one
  fit-budget. A results row is one training x one export point (or its fit).
- The cell folder is the source of truth. A cell is finished when its `cell.json`
  (its rows, written atomically last) exists; `results.csv`/`results.parquet` are
  rewritten from all finished cells after each one, in grid order, so a resumed
  sweep ends with the same table as an uninterrupted one. A cell killed after its
  training finished (complete `summary.json`) keeps the training and redoes only
  its exports; an unfinished training resumes from its checkpoint when it has one
  (a signal writes one, and `train.checkpoint_every`), else it is started over.
- A failed cell (NaN, an error) is a finished cell with `status=failed` and its
  one-line error; `retry_failed` runs those again.
- Re-running a sweep folder with a grid that only adds values (or seeds) extends it;
  any other difference is refused, so one folder never mixes two experiments.
- Launchers: cells run here one after another, in `jobs` spawned worker processes
  (torch threads = cores / jobs), or as submitit jobs (local subprocesses or
  Slurm) whose results are read back from the cells' folders. A submitit cell
  with several processes (`launcher.nodes` x `launcher.gpus_per_node`) starts its
  training through torchrun on each node (`python -m pgolf.sweep CELL_SPEC`); a
  preempted or timed-out job is requeued and resumes from the cell's newest
  checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgolf import config as C
from pgolf.errors import ConfigError, Interrupted, PgolfError, Terminated, UsageError, one_line
from pgolf.experiment import config_for_source, run_export, run_train
from pgolf.fit import budget_label, fit_budget
from pgolf.progress import ProgressFn, no_progress
from pgolf.report import scored_columns
from pgolf.runs import atomic_write_json, atomic_write_text
from pgolf.signals import StopSignals
from pgolf.tables import write_csv, write_parquet
from pgolf.train.checkpoints import latest_checkpoint

TRAINING_ROOTS = ("model", "train", "reg", "data")
"""Config roots whose values change the trained weights (plus `seed`)."""
EXPORT_ROOTS = ("export",)
"""Config roots that only change the export of saved weights."""
CELL_FILE = "cell.json"
TRAIN_POINT = "train"
"""The point label of a training's own export (used when the grid has no export axes)."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class ExportPoint:
    label: str
    """`train` (the training's own export) or the export overrides, e.g. `export.bits=5 export.prune=0.02`."""
    values: dict[str, str]
    """Export axis key -> value."""


@dataclass
class TrainingCell:
    cell_id: str
    """The run directory's name: readable values plus a hash of them."""
    values: dict[str, str]
    """Training axis key -> value."""
    seed: int
    overrides: list[str]
    """Base overrides, this cell's axis values and its seed."""


@dataclass
class Plan:
    name: str
    folder: Path
    base: list[str]
    train_axes: list[C.SweepAxis]
    export_axes: list[C.SweepAxis]
    seeds: list[int]
    baseline: dict[str, str]
    max_bytes: int | None
    margin: int
    cells: list[TrainingCell]
    points: list[ExportPoint]
    base_config: C.Config

    def grid(self) -> dict[str, Any]:
        """What sweep.yaml records, and what a re-run must agree with."""
        return {
            "name": self.name,
            "axes": {a.key: list(a.values) for a in self.train_axes + self.export_axes},
            "train_axes": [a.key for a in self.train_axes],
            "export_axes": [a.key for a in self.export_axes],
            "seeds": list(self.seeds),
            "base": list(self.base),
            "baseline": dict(self.baseline),
            "max_bytes": self.max_bytes,
            "margin": self.margin,
        }

    def cell_dir(self, cell: TrainingCell) -> Path:
        return self.folder / "cells" / cell.cell_id

    def rows_per_cell(self) -> int:
        return len(self.points) + (1 if self.max_bytes is not None else 0)


@dataclass
class SweepOutcome:
    plan: Plan
    rows: list[dict[str, Any]]
    ran: list[str] = field(default_factory=list)
    """Cell ids run by this invocation (the others were finished before)."""
    wall_time_s: float = 0.0


# --------------------------------------------------------------------------- planning

def load_sweep_file(name: str) -> tuple[list[str], list[str]]:
    """(base overrides, axis overrides) of conf/sweep/NAME.yaml: `params` (key -> sweep string) and `overrides`."""
    path = C.conf_dir() / "sweep" / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in (C.conf_dir() / "sweep").glob("*.yaml"))
        raise ConfigError(f"no sweep file {path} (available: {', '.join(shipped) or 'none'})")
    data = C.load_plain_yaml(path)
    unknown = set(data) - {"params", "overrides"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)} (expected params and overrides)")
    params = data.get("params") or {}
    overrides = data.get("overrides") or []
    if not isinstance(params, dict) or not isinstance(overrides, list):
        raise ConfigError(f"{path}: params must map keys to sweep values and overrides must be a list")
    axes = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in params.items()]
    return [str(o) for o in overrides], axes


def expand_sweep_file(overrides: list[str]) -> list[str]:
    """Replace `sweep=NAME` by its file's overrides; a key also given on the command line keeps that value."""
    named = [o for o in overrides if o.startswith("sweep=")]
    rest = [o for o in overrides if not o.startswith("sweep=")]
    if len(named) > 1:
        raise ConfigError("give sweep=NAME once")
    if not named:
        return rest
    file_base, file_axes = load_sweep_file(named[0].partition("=")[2])
    cli_keys = {C.override_key(o) for o in rest}
    kept = [o for o in file_base + file_axes if C.override_key(o) not in cli_keys]
    return kept + rest


def _root_of(key: str) -> str:
    return key.split(".", 1)[0].split("@", 1)[0]


def _classify(axes: list[C.SweepAxis]) -> tuple[list[C.SweepAxis], list[C.SweepAxis], C.SweepAxis | None]:
    train, export, seed = [], [], None
    for axis in axes:
        root = _root_of(axis.key)
        if axis.key == "seed":
            seed = axis
        elif root in TRAINING_ROOTS:
            train.append(axis)
        elif root in EXPORT_ROOTS:
            export.append(axis)
        else:
            raise ConfigError(f"{axis.key} cannot be a sweep axis: only {', '.join(TRAINING_ROOTS)}, seed (training) "
                              f"and export keys vary between cells; set {axis.key} once")
    return train, export, seed


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:6]


def cell_id(values: dict[str, str], seed: int) -> str:
    """`weight_decay=0.04-seed=1337-1a2b3c`: readable (last key parts, cut at 80 characters) plus a hash."""
    readable = "-".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items())
    readable = _slug(f"{readable}-seed={seed}" if readable else f"seed={seed}")[:80]
    return f"{readable}-{_digest({'values': values, 'seed': seed})}"


def derived_name(base: list[str], axes: list[C.SweepAxis], max_bytes: int | None, margin: int) -> str:
    """A name fixed by the grid's keys and the base overrides (not the values: adding values extends the sweep)."""
    keys = "-".join(a.key.rsplit(".", 1)[-1] for a in axes) or "seeds"
    fixed = {"base": base, "keys": [a.key for a in axes], "max": max_bytes, "margin": margin}
    return f"{_slug(keys)[:60]}-{_digest(fixed)}"


def _product(axes: list[C.SweepAxis]) -> list[dict[str, str]]:
    """Every combination of the axes' values, the first axis varying slowest."""
    combos: list[dict[str, str]] = [{}]
    for axis in axes:
        combos = [{**c, axis.key: v} for c in combos for v in axis.values]
    return combos


def _axis_overrides(axes: list[C.SweepAxis], values: dict[str, str]) -> list[str]:
    return [a.override(values[a.key]) for a in axes if a.key in values]


def make_plan(overrides: list[str], name: str | None = None, seeds: int | None = None, max_bytes: int | None = None,
              margin: int = 0, baseline: list[str] | None = None) -> Plan:
    """Parse and validate the whole grid (every training cell's and export point's config composed) before
    anything runs."""
    base, axes = C.parse_sweep(expand_sweep_file(list(overrides)))
    train_axes, export_axes, seed_axis = _classify(axes)
    if seeds is not None and seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {seeds}")
    if seeds is not None and seed_axis is not None:
        raise UsageError("give --seeds N or a seed= axis, not both")
    if max_bytes is not None and max_bytes <= 0:
        raise UsageError(f"--max-bytes must be > 0, got {max_bytes}")
    if margin < 0 or (max_bytes is not None and margin >= max_bytes):
        raise UsageError(f"--margin must be >= 0 and below --max-bytes, got {margin}")
    if not axes and (seeds or 1) < 2:
        raise UsageError("empty grid: give at least one axis (e.g. reg.weight_decay=0,0.04) or --seeds N with N >= 2")
    base_cfg = C.compose(base, allow_sweep=True)
    if seed_axis is not None:
        try:
            seed_list = [int(v) for v in seed_axis.values]
        except ValueError as exc:
            raise ConfigError(f"seed values must be integers, got {seed_axis.values}") from exc
    else:
        seed_list = [base_cfg.seed + i for i in range(seeds or 1)]
    base_no_seed = [o for o in base if C.override_key(o) != "seed"]

    cells = []
    for values in _product(train_axes):
        for seed in seed_list:
            cell_overrides = base_no_seed + _axis_overrides(train_axes, values) + [f"seed={seed}"]
            cells.append(TrainingCell(cell_id(values, seed), values, seed, cell_overrides))
    if export_axes:
        points = [ExportPoint(" ".join(_axis_overrides(export_axes, v)), v) for v in _product(export_axes)]
    else:
        points = [ExportPoint(TRAIN_POINT, {})]

    for cell in cells[:: len(seed_list)]:  # every training config once (seeds do not change validity)
        C.compose(cell.overrides, allow_sweep=True)
    for point in points if export_axes else []:
        C.compose(cells[0].overrides + _axis_overrides(export_axes, point.values), allow_sweep=True)

    baseline_values = _parse_baseline(baseline or [], train_axes + export_axes)
    root = Path(base_cfg.run.root)
    for folder in (root, root / "sweeps"):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"runs root {folder} is a file, not a folder; set run.root to a folder")
    if name is not None and not _NAME_RE.match(name):
        raise UsageError(f"--name {name!r} must be letters, digits, '.', '_' or '-'")
    name = name or derived_name(base, train_axes + export_axes + ([seed_axis] if seed_axis else []), max_bytes, margin)
    return Plan(name=name, folder=root / "sweeps" / name, base=base, train_axes=train_axes,
                export_axes=export_axes, seeds=seed_list, baseline=baseline_values, max_bytes=max_bytes,
                margin=margin, cells=cells, points=points, base_config=base_cfg)


def plan_summary(plan: Plan) -> dict[str, Any]:
    """What `--dry-run` shows: counts of trainings, export points, fit-budgets and rows, and each training cell
    with whether it has finished."""
    cells = [{"cell": c.cell_id, "seed": c.seed, **c.values, "finished": read_cell(plan, c) is not None}
             for c in plan.cells]
    return {"folder": str(plan.folder), "trainings": len(plan.cells),
            "exports_per_training": len([p for p in plan.points if p.label != TRAIN_POINT]),
            "fit_budgets": len(plan.cells) if plan.max_bytes is not None else 0,
            "rows": len(plan.cells) * plan.rows_per_cell(), "points": [p.label for p in plan.points],
            "seeds": plan.seeds, "base": plan.base, "cells": cells}


def _parse_baseline(items: list[str], axes: list[C.SweepAxis]) -> dict[str, str]:
    keys = {a.key: a for a in axes}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--baseline {item!r} must be KEY=VALUE")
        if key not in keys:
            raise UsageError(f"--baseline {key} is not a swept key (swept: {', '.join(keys) or 'none'})")
        if value not in keys[key].values:
            raise UsageError(f"--baseline {item}: {value!r} is not among {key}'s values {keys[key].values}")
        out[key] = value
    return out


# --------------------------------------------------------------------------- the sweep folder

def prepare_folder(plan: Plan) -> None:
    """Write sweep.yaml, or check that the folder's grid is this one or one it extends; refuse anything else."""
    path = plan.folder / "sweep.yaml"
    grid = plan.grid()
    if path.is_file():
        old = C.load_plain_yaml(path)
        problem = grid_mismatch(old, grid)
        if problem:
            raise ConfigError(f"{plan.folder} was made with another grid ({problem}); re-run its own command, only "
                              "add values or seeds, or give --name for a new sweep")
    try:
        plan.folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(f"cannot make the sweep folder {plan.folder}: {exc.strerror}") from exc
    atomic_write_text(path, C.plain_yaml({**grid, "config": C.to_dict(plan.base_config)}))


def grid_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Why `new` is not `old` or an extension of it ("" when it is)."""
    if list(old.get("base", [])) != new["base"]:
        return f"base overrides {old.get('base')} vs {new['base']}"
    old_axes = old.get("axes", {})
    if set(old_axes) != set(new["axes"]):
        return f"axes {sorted(old_axes)} vs {sorted(new['axes'])}"
    for key, values in old_axes.items():
        missing = [v for v in values if v not in new["axes"][key]]
        if missing:
            return f"{key} loses {missing}"
    missing_seeds = [s for s in old.get("seeds", []) if s not in new["seeds"]]
    if missing_seeds:
        return f"seeds {missing_seeds} dropped"
    for key in ("max_bytes", "margin"):
        if old.get(key) != new[key]:
            return f"{key} {old.get(key)} vs {new[key]}"
    return ""


def read_cell(plan: Plan, cell: TrainingCell) -> list[dict[str, Any]] | None:
    """The finished rows of `cell`, or None when it has not finished."""
    path = plan.cell_dir(cell) / CELL_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["rows"]
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); delete it to redo that cell") from exc


def write_results(plan: Plan, rows: list[dict[str, Any]]) -> None:
    """results.csv and results.parquet of every finished row (atomic), columns in a fixed order."""
    import pandas as pd

    keys = [a.key for a in plan.train_axes + plan.export_axes]
    frame = pd.DataFrame(rows, columns=keys + list(ROW_COLUMNS))
    for name in _INT_COLUMNS:  # nullable, so a failed row's gaps do not turn counts into floats
        frame[name] = frame[name].astype("Int64")
    write_csv(frame, plan.folder / "results.csv")
    write_parquet(frame, plan.folder / "results.parquet")


# --------------------------------------------------------------------------- one training cell

ROW_COLUMNS = ("seed", "point", "cell", "status", "error", "params", "model_bytes", "code_bytes", "total_bytes",
               "headroom_bytes", "val_bpb", "val_bpb_roundtrip", "steps", "train_time_s", "tokens_per_s",
               "artifact", "run_dir", "export_time_s", "wall_time_s")
_INT_COLUMNS = ("seed", "params", "model_bytes", "code_bytes", "total_bytes", "headroom_bytes", "steps")


@dataclass
class CellSpec:
    """Everything a worker needs to run one training cell (plain data: it crosses process boundaries as JSON)."""

    cell_id: str
    run_dir: str
    seed: int
    overrides: list[str]
    values: dict[str, str]
    points: list[dict[str, Any]]
    """[{label, values, overrides}] export points."""
    max_bytes: int | None
    margin: int
    budget_bytes: int
    """The byte budget headroom is measured against (max_bytes, else budget.max_bytes)."""


def cell_specs(plan: Plan) -> list[CellSpec]:
    budget = plan.max_bytes if plan.max_bytes is not None else C.parse_size(plan.base_config.budget.max_bytes)
    specs = []
    for cell in plan.cells:
        points = [{"label": p.label, "values": p.values,
                   "overrides": cell.overrides + _axis_overrides(plan.export_axes, p.values)} for p in plan.points]
        specs.append(CellSpec(cell.cell_id, str(plan.cell_dir(cell)), cell.seed, cell.overrides, cell.values, points,
                              plan.max_bytes, plan.margin, budget))
    return specs


def _row(spec: CellSpec, label: str, values: dict[str, str], status: str = "ok", error: str = "",
         **fields: Any) -> dict[str, Any]:
    row = {**spec.values, **values, "seed": spec.seed, "point": label, "cell": spec.cell_id, "status": status,
           "error": error, "run_dir": spec.run_dir}
    row.update(fields)
    if "total_bytes" in row:
        row["headroom_bytes"] = spec.budget_bytes - row["total_bytes"]
    return row


def _numbers(summary: dict[str, Any]) -> dict[str, Any]:
    return {"params": summary["params"], **scored_columns(summary)}


def _failed_rows(spec: CellSpec, error: str) -> list[dict[str, Any]]:
    """Every row of a cell whose training (or job) failed."""
    rows = [_row(spec, p["label"], p["values"], "failed", error) for p in spec.points]
    if spec.max_bytes is not None:
        rows.append(_row(spec, budget_label(spec.max_bytes), {}, "failed", error))
    return rows


def _finished_training(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    if not path.is_file() or not (run_dir / "model.safetensors").is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if "error" not in summary and "val_bpb_roundtrip" in summary else None


def _resumable(run_dir: Path, cfg: C.Config) -> bool:
    """Whether `run_dir` holds an unfinished training of exactly `cfg` with a checkpoint to go on from."""
    if not (run_dir / "config.yaml").is_file() or latest_checkpoint(run_dir) is None:
        return False
    return C.to_dict(C.load_yaml(run_dir / "config.yaml")) == C.to_dict(cfg)


def run_cell(spec: CellSpec, progress: ProgressFn = no_progress) -> list[dict[str, Any]]:
    """Train (or reuse a finished training), export every point, fit the budget; write cell.json last.

    Failures become `status=failed` rows with their one-line error; an interrupt propagates (the cell then
    stays unfinished and is redone by the next run).
    """
    run_dir = Path(spec.run_dir)
    started = time.perf_counter()
    summary = _finished_training(run_dir)
    train_s = 0.0
    if summary is None:
        cfg = C.compose(spec.overrides, allow_sweep=True)
        resume = _resumable(run_dir, cfg)
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)  # an unfinished training without a checkpoint: nothing in it is a result
        try:
            summary = run_train(cfg, progress=progress, echo=lambda _line: None, run_dir=run_dir, resume=resume)
        except (KeyboardInterrupt, Interrupted):
            raise
        except Exception as exc:
            _report_debug()
            rows = _failed_rows(spec, one_line(exc))
            _write_cell(run_dir, spec, rows, time.perf_counter() - started)
            return rows
        if not summary:  # a torchrun rank other than 0: rank 0 exports and writes the cell
            return []
        train_s = time.perf_counter() - started
    common = {"steps": summary["steps"], "train_time_s": summary["train_time_s"],
              "tokens_per_s": summary["tokens_per_s"], "wall_time_s": train_s}
    rows = []
    train_export = summary.get("export")
    for point in spec.points:
        t0 = time.perf_counter()
        try:
            cfg = None if point["label"] == TRAIN_POINT else config_for_source(run_dir, point["overrides"])
            if cfg is None or C.to_dict(cfg)["export"] == train_export:  # the training's own export: reuse it
                rows.append(_row(spec, point["label"], point["values"], **_numbers(summary), **common,
                                 export_time_s=0.0))
                continue
            exported = run_export(run_dir, cfg)
            rows.append(_row(spec, point["label"], point["values"], **_numbers(exported), **common,
                             export_time_s=time.perf_counter() - t0))
        except (KeyboardInterrupt, Interrupted):
            raise
        except Exception as exc:
            _report_debug()
            rows.append(_row(spec, point["label"], point["values"], "failed", one_line(exc), **common,
                             export_time_s=time.perf_counter() - t0))
    if spec.max_bytes is not None:
        rows.append(_fit_row(spec, run_dir, common))
    _write_cell(run_dir, spec, rows, time.perf_counter() - started)
    return rows


def _fit_row(spec: CellSpec, run_dir: Path, common: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    label = budget_label(spec.max_bytes)
    try:
        result = fit_budget(run_dir, config_for_source(run_dir, spec.overrides), spec.max_bytes, spec.margin)
    except (KeyboardInterrupt, Interrupted):
        raise
    except Exception as exc:
        _report_debug()
        return _row(spec, label, {}, "failed", one_line(exc), **common, export_time_s=time.perf_counter() - t0)
    return _row(spec, label, {}, **_numbers(result.summary), **common, export_time_s=time.perf_counter() - t0)


def _write_cell(run_dir: Path, spec: CellSpec, rows: list[dict[str, Any]], seconds: float) -> None:
    atomic_write_json(run_dir / CELL_FILE, {"cell": spec.cell_id, "overrides": spec.overrides, "seconds": seconds,
                                            "rows": rows})


def _report_debug() -> None:
    if os.environ.get("PGOLF_DEBUG"):
        traceback.print_exc()


# --------------------------------------------------------------------------- launchers

def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _worker_init(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    _set_threads(threads)


def _worker_run(spec_json: str) -> list[dict[str, Any]]:
    return run_cell(CellSpec(**json.loads(spec_json)))


class CellJob:
    """What a submitit job runs: one training cell, its rows read back from the cell folder afterwards.

    With several processes (nodes x processes per node) each node starts the training through torchrun. When
    the job is preempted or times out, submitit calls `checkpoint`: the job is requeued with the same arguments
    and `run_cell` resumes the training from the cell's newest checkpoint (`train.checkpoint_every`).
    """

    def __call__(self, spec_json: str, threads: int, nodes: int, procs_per_node: int) -> str:
        _set_threads(threads)
        spec = CellSpec(**json.loads(spec_json))
        if nodes * procs_per_node > 1:
            _torchrun_cell(spec, nodes, procs_per_node)
        else:
            run_cell(spec)
        return spec.run_dir

    def checkpoint(self, *args: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)


def _torchrun_cell(spec: CellSpec, nodes: int, procs_per_node: int) -> None:
    """This node's part of a multi-process cell: torchrun starts `procs_per_node` ranks of `python -m pgolf.sweep`."""
    import submitit

    env = submitit.JobEnvironment()
    spec_path = Path(spec.run_dir).with_name(f".{Path(spec.run_dir).name}.spec.json")
    atomic_write_json(spec_path, dataclasses.asdict(spec))
    port = 20000 + int(hashlib.sha256(spec.cell_id.encode()).hexdigest(), 16) % 20000
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc_per_node={procs_per_node}",
           f"--node_rank={env.node}", f"--master_addr={env.hostnames[0]}", f"--master_port={port}",
           "-m", "pgolf.sweep", str(spec_path)]
    proc = subprocess.run(cmd)
    if proc.returncode:
        raise PgolfError(f"torchrun of cell {spec.cell_id} exited with {proc.returncode} (see its job log)")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_sweep(plan: Plan, jobs: int = 1, launcher: str = "local", retry_failed: bool = False,
              progress: ProgressFn = no_progress, echo: Callable[[str], None] = print) -> SweepOutcome:
    """Run every unfinished cell of `plan`, writing results after each; Ctrl-C/SIGTERM write what finished."""
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if launcher not in ("local", "submitit"):
        raise UsageError(f"--launcher must be local or submitit, got {launcher!r}")
    if launcher == "submitit":
        _require_submitit()
    started = time.perf_counter()
    prepare_folder(plan)
    specs = cell_specs(plan)
    done: dict[str, list[dict[str, Any]]] = {}
    for cell, spec in zip(plan.cells, specs, strict=True):
        rows = read_cell(plan, cell)
        if rows is not None and not (retry_failed and any(r["status"] == "failed" for r in rows)):
            done[spec.cell_id] = rows
    todo = [s for s in specs if s.cell_id not in done]
    if retry_failed:
        for spec in todo:
            (Path(spec.run_dir) / CELL_FILE).unlink(missing_ok=True)
    outcome = SweepOutcome(plan=plan, rows=[])
    echo(f"sweep {plan.folder}: {len(plan.cells)} trainings x {plan.rows_per_cell()} rows; "
         f"{len(done)} finished before, {len(todo)} to run")

    def finished(spec: CellSpec, rows: list[dict[str, Any]]) -> None:
        done[spec.cell_id] = rows
        outcome.ran.append(spec.cell_id)
        write_results(plan, _ordered(specs, done))
        parts = [f"{r['point']} {r['val_bpb_roundtrip']:.4f}" if r["status"] == "ok" else f"{r['point']} failed"
                 for r in rows]
        failed = next((r["error"] for r in rows if r["status"] == "failed"), "")
        echo(f"[{len(done)}/{len(specs)}] {spec.cell_id}: {', '.join(parts)}" + (f" ({failed})" if failed else ""))
        progress("sweep", len(done), len(specs))

    progress("sweep", len(done), len(specs))
    with StopSignals() as signals:
        try:
            if todo and launcher == "submitit":
                _run_submitit(plan, todo, jobs, finished)
            elif todo and jobs > 1:
                _run_pool(todo, jobs, finished)
            else:
                for spec in todo:
                    finished(spec, run_cell(spec, progress=progress))
        except (KeyboardInterrupt, Interrupted) as exc:
            write_results(plan, _ordered(specs, done))
            what = f"{len(done)} of {len(specs)} cells finished and written to {plan.folder / 'results.csv'}"
            if signals.reason == "terminated" or isinstance(exc, Terminated):
                raise Terminated(f"terminated; {what}") from exc
            raise Interrupted(f"interrupted; {what}") from exc
    write_results(plan, _ordered(specs, done))
    outcome.rows = _ordered(specs, done)
    outcome.wall_time_s = time.perf_counter() - started
    return outcome


def _ordered(specs: list[CellSpec], done: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for spec in specs if spec.cell_id in done for row in done[spec.cell_id]]


def _run_pool(todo: list[CellSpec], jobs: int, finished: Callable) -> None:
    """`jobs` spawned workers (torch threads = cores / jobs), results handled as each cell ends."""
    threads = max(1, _cores() // jobs)
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(processes=jobs, initializer=_worker_init, initargs=(threads,))
    try:
        pending = {pool.apply_async(_worker_run, (json.dumps(dataclasses.asdict(s)),)): s for s in todo}
        while pending:
            ready = [r for r in pending if r.ready()]
            for result in ready:
                spec = pending.pop(result)
                finished(spec, result.get())
            if not ready:
                time.sleep(0.2)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _require_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError as exc:
        raise UsageError("--launcher submitit needs submitit: pip install 'pgolf[submitit]'") from exc


def _run_submitit(plan: Plan, todo: list[CellSpec], jobs: int, finished: Callable) -> None:
    """Each training cell a submitit job (launcher config group), at most `jobs` in flight; rows read back from
    each cell's cell.json as its job ends."""
    import submitit

    lc = plan.base_config.launcher
    executor = submitit.AutoExecutor(folder=plan.folder / "submitit", cluster=lc.cluster)
    procs = max(1, lc.gpus_per_node)  # training processes per node, started by torchrun (one task per node)
    params: dict[str, Any] = {"timeout_min": lc.timeout_min, "nodes": lc.nodes, "tasks_per_node": 1,
                              "cpus_per_task": lc.cpus_per_task * procs, "name": f"pgolf-{plan.name}"}
    if lc.gpus_per_node:
        params["gpus_per_node"] = lc.gpus_per_node
    if lc.cluster == "slurm" and lc.partition:
        params["slurm_partition"] = lc.partition
    executor.update_parameters(**params)
    threads = max(1, _cores() // jobs) if lc.cluster == "local" else lc.cpus_per_task
    queue, running = list(todo), {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                spec = queue.pop(0)
                running[executor.submit(CellJob(), json.dumps(dataclasses.asdict(spec)), threads, lc.nodes,
                                        procs)] = spec
            ended = [job for job in running if job.done()]
            for job in ended:
                spec = running.pop(job)
                finished(spec, _submitit_rows(job, spec))
            if not ended:
                time.sleep(0.5)
    finally:
        for job in running:
            job.cancel(check=False)


def _submitit_rows(job: Any, spec: CellSpec) -> list[dict[str, Any]]:
    """The cell's rows from its folder; a job that died before writing them is a failed cell."""
    path = Path(spec.run_dir) / CELL_FILE
    if path.is_file():
        return json.loads(path.read_text())["rows"]
    try:
        job.result()
        error = f"job {job.job_id} ended without writing {path}"
    except Exception as exc:
        error = f"job {job.job_id} failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}"
    rows = _failed_rows(spec, error)
    atomic_write_json(path, {"cell": spec.cell_id, "overrides": spec.overrides, "seconds": 0.0, "rows": rows})
    return rows


if __name__ == "__main__":  # one rank of a multi-process cell, started by torchrun (CellJob)
    run_cell(CellSpec(**json.loads(Path(sys.argv[1]).read_text())))

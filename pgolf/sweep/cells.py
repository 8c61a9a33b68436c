"""One training cell: train (or reuse, or resume) its run directory, re-export every export point, fit-budget,
and write its rows to `cell.json`, the cell's source of truth.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf import config as C
from pgolf.atomic import atomic_write_json
from pgolf.errors import Interrupted, one_line
from pgolf.fit.budget import fit_budget
from pgolf.jobs.export_job import run_export
from pgolf.jobs.layout import budget_label
from pgolf.jobs.reuse import finished_training, resumable
from pgolf.jobs.sources import config_for_source
from pgolf.jobs.train_job import run_train
from pgolf.progress import ProgressFn, no_progress
from pgolf.results.report import scored_columns
from pgolf.sweep.plan import CELL_FILE, TRAIN_POINT, Plan, axis_overrides


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
                   "overrides": cell.overrides + axis_overrides(plan.export_axes, p.values)} for p in plan.points]
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


def run_cell(spec: CellSpec, progress: ProgressFn = no_progress) -> list[dict[str, Any]]:
    """Train (or reuse a finished training), export every point, fit the budget; write cell.json last.

    Failures become `status=failed` rows with their one-line error; an interrupt propagates (the cell then
    stays unfinished and is redone by the next run).
    """
    run_dir = Path(spec.run_dir)
    started = time.perf_counter()
    summary = finished_training(run_dir)
    train_s = 0.0
    if summary is None:
        cfg = C.compose(spec.overrides, allow_sweep=True)
        resume = resumable(run_dir, cfg)
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

"""The grid: axes parsed and split, cells and export points composed before anything runs, the sweep
folder (`sweep.yaml`, refused when it holds another grid) and its results table.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf import config as C
from pgolf.atomic import atomic_write_text
from pgolf.errors import ConfigError, UsageError
from pgolf.results.tables import write_csv, write_parquet

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


def load_sweep_file(name: str) -> tuple[list[str], list[str]]:
    """(base overrides, axis overrides) of conf/sweep/NAME.yaml (`C.read_params_file`): `params` (key -> sweep
    string or list) and `overrides`."""
    overrides, params = C.read_params_file("sweep", name)
    return overrides, [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in params.items()]


def expand_sweep_file(overrides: list[str]) -> list[str]:
    """Replace `sweep=NAME` by its file's overrides; a key also given on the command line keeps that value."""
    return C.expand_named_file(overrides, "sweep", load_sweep_file)


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


def axis_overrides(axes: list[C.SweepAxis], values: dict[str, str]) -> list[str]:
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
            cell_overrides = base_no_seed + axis_overrides(train_axes, values) + [f"seed={seed}"]
            cells.append(TrainingCell(cell_id(values, seed), values, seed, cell_overrides))
    if export_axes:
        points = [ExportPoint(" ".join(axis_overrides(export_axes, v)), v) for v in _product(export_axes)]
    else:
        points = [ExportPoint(TRAIN_POINT, {})]

    for cell in cells[:: len(seed_list)]:  # every training config once (seeds do not change validity)
        C.compose(cell.overrides, allow_sweep=True)
    for point in points if export_axes else []:
        C.compose(cells[0].overrides + axis_overrides(export_axes, point.values), allow_sweep=True)

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


ROW_COLUMNS = ("seed", "point", "cell", "status", "error", "params", "model_bytes", "code_bytes", "total_bytes",
               "headroom_bytes", "val_bpb", "val_bpb_roundtrip", "val_bpb_ttt", "ttt_seconds", "steps", "train_time_s",
               "tokens_per_s",
               "artifact", "run_dir", "export_time_s", "wall_time_s")


_INT_COLUMNS = ("seed", "params", "model_bytes", "code_bytes", "total_bytes", "headroom_bytes", "steps")

"""`pgolf report`: any set of runs becomes one table, one row per cell, seeds aggregated.

Where rows come from (`load_results`):
- a sweep folder (sweep.yaml + results.parquet, else results.csv): its rows as the sweep wrote them;
  its axes are the keys, its `baseline` and `max_bytes` the defaults;
- a run directory (summary.json): one row for the training (point `train`) and one per
  fit/fit-<bytes>.json (point `fit-<bytes>`);
- a search folder (search.yaml) below a folder: its finalists/ (a sweep-shaped folder), never its trials;
- any other folder: every sweep folder and run directory below it. A sweep counts once, as a sweep
  (its cells are not also loose runs); symlinks such as runs/latest are not followed, so no run
  counts twice. Loose runs are keyed by the config values that differ between their config.yaml files
  (run.*, launcher.* and seed aside); `--by` picks the keys instead.

A cell is one set of key values at one point (`cell_table`); its seeds are aggregated, never picked:
mean and sample std (ddof=1) of the round-trip val_bpb, and against its baseline cell the mean delta,
a one-sided Welch t-test and a one-sided paired t-test over the seeds both ran (alternative: the
cell's val_bpb is lower). Two runs of one cell with the same seed both count in n_seeds; the paired
test uses their mean. Values compare as strings, or as numbers when both parse ("0" is "0.0").
Without --max-bytes and without a sweep's, headroom is against the challenge's 16,000,000 bytes.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pgolf import config as C
from pgolf.errors import ConfigError, DataError
from pgolf.jobs.layout import CONFIG, SUMMARY, is_run_dir
from pgolf.results import tables as T

SCORE = "val_bpb_roundtrip"
CHALLENGE_MAX_BYTES = C.parse_size(C.BudgetConfig().max_bytes)
_NOT_KEYS = ("seed",)
_NOT_KEY_PREFIXES = ("run.", "launcher.")
_MISSING = "\0missing"
CELL_STATS = ("n_seeds", "n_failed", "seeds", "bpb_mean", "bpb_std", "val_bpb_float_mean", "bpb_ttt_mean",
              "ttt_seconds_mean", "delta_vs_baseline",
              "p_welch", "p_paired", "model_bytes", "code_bytes", "total_bytes", "headroom_bytes", "within_budget",
              "frontier", "baseline")


@dataclass
class Results:
    """Rows of one or more sweeps and runs (one per training x export point) and how to group them."""

    rows: pd.DataFrame
    keys: list[str]
    """Grouping keys (swept config keys, dotted), in order."""
    baseline: dict[str, str] = field(default_factory=dict)
    """Key values of the baseline cell; empty: the first cell."""
    max_bytes: int | None = None


@dataclass
class Report:
    """The cell table and what rendering it needs: the keys it is grouped by and the budget it was cut at."""

    cells: pd.DataFrame
    keys: list[str]
    max_bytes: int


def build_report(paths: list[Path], by: list[str] | None = None, baseline: dict[str, str] | None = None,
                 max_bytes: int | None = None) -> Report:
    """`pgolf report`: load every path and aggregate it into cells; the CLI renders, prints or plots the result."""
    results = load_results(paths)
    keys = list(by) if by else results.keys
    budget = max_bytes or results.max_bytes or CHALLENGE_MAX_BYTES
    cells = cell_table(results, keys, baseline, budget)
    return Report(cells, keys, budget)


def parse_baseline(items: list[str]) -> dict[str, str]:
    """`--baseline key=value` items as a dict, or a one-line ConfigError."""
    spec = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--baseline {item}: expected key=value, e.g. reg.weight_decay=0")
        spec[key.strip()] = value.strip()
    return spec


# --------------------------------------------------------------------------- loading

def load_results(paths: list[Path]) -> Results:
    """Rows of every sweep and run found at `paths`; DataError naming the paths when there are none."""
    sweeps: list[Path] = []
    runs: list[Path] = []
    for path in map(Path, paths):
        found_sweeps, found_runs = find_sources(path)
        sweeps += [p for p in found_sweeps if p not in sweeps]
        runs += [p for p in found_runs if p not in runs]
    frames, keys, baseline, max_bytes = [], [], {}, None
    for folder in sweeps:
        s = load_sweep(folder)
        frames.append(s.rows)
        keys += [k for k in s.keys if k not in keys]
        baseline = baseline or s.baseline
        max_bytes = max_bytes if max_bytes is not None else s.max_bytes
    if runs:
        loose = load_runs(runs)
        frames.append(loose.rows)
        keys += [k for k in loose.keys if k not in keys]
    frames = [f for f in frames if len(f)]
    if not frames:
        where = ", ".join(str(p) for p in paths)
        raise DataError(f"{where}: no results (no sweep.yaml with results, no run's summary.json)")
    return Results(pd.concat(frames, ignore_index=True), keys, baseline, max_bytes)


def find_sources(path: Path) -> tuple[list[Path], list[Path]]:
    """(sweep folders, run directories) at or below `path`; symlinked folders are not followed."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if (path / "sweep.yaml").is_file():
        return [path], []
    if (path / SUMMARY).is_file():
        return [], [path]
    if not path.is_dir():
        raise DataError(f"{path}: not a sweep folder, a run directory or a folder of runs")
    sweeps, runs = [], []
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        if "search.yaml" in filenames:  # a search counts as its finalists (its trials are the search's own)
            sweeps += [here / "finalists"] if (here / "finalists" / "sweep.yaml").is_file() else []
            dirnames[:] = []
            continue
        if "sweep.yaml" in filenames or SUMMARY in filenames:
            (sweeps if "sweep.yaml" in filenames else runs).append(here)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (here / d).is_symlink())
    return sweeps, runs


def load_sweep(folder: Path) -> Results:
    """A sweep folder's rows (results.parquet, else results.csv; none yet: no rows) and its settings."""
    meta = C.load_plain_yaml(folder / "sweep.yaml")
    keys = [str(k) for k in (meta.get("axes") or {})]
    if (folder / "results.parquet").is_file():
        rows = T.read_frame(folder / "results.parquet")
    elif (folder / "results.csv").is_file():
        rows = T.read_frame(folder / "results.csv", text_columns=keys)
    else:
        rows = pd.DataFrame()
    for key in keys:
        rows[key] = rows[key].map(_text, na_action="ignore") if key in rows else None
    baseline = {str(k): _text(v) for k, v in (meta.get("baseline") or {}).items()}
    max_bytes = meta.get("max_bytes")
    return Results(rows, keys, baseline, int(max_bytes) if max_bytes is not None else None)


def load_runs(run_dirs: list[Path]) -> Results:
    """Rows of loose run directories, with every config value as a column; keys: the values that differ."""
    rows, configs = [], []
    for run_dir in run_dirs:
        config = _flat(C.load_plain_yaml(run_dir / CONFIG)) if is_run_dir(run_dir) else {}
        config = {k: _text(v) for k, v in config.items() if k not in _NOT_KEYS}
        configs.append(config)
        rows += [{**config, **row} for row in run_rows(run_dir)]
    names = list(dict.fromkeys(k for config in configs for k in config))
    keys = [k for k in names if not k.startswith(_NOT_KEY_PREFIXES)
            and len({config.get(k, _MISSING) for config in configs}) > 1]
    return Results(pd.DataFrame(rows), keys)


def run_rows(run_dir: Path) -> list[dict[str, Any]]:
    """A run's training row (point `train`) and one row per fit-budget summary (point `fit-<bytes>`)."""
    summary = _read_json(run_dir / SUMMARY)
    error = summary.get("error") or ("" if SCORE in summary else "no round-trip score in summary.json")
    common = {"seed": summary.get("seed"), "cell": run_dir.name, "run_dir": str(run_dir),
              "params": summary.get("params"), "steps": summary.get("steps"),
              "train_time_s": summary.get("train_time_s"), "tokens_per_s": summary.get("tokens_per_s"),
              "wall_time_s": summary.get("wall_time_s")}
    rows = [{**common, "point": "train", **scored_columns(summary), "status": "failed" if error else "ok",
             "error": error}]
    for path in sorted(run_dir.glob("fit/fit-*.json"), key=lambda p: (len(p.name), p.name)):
        fit = _read_json(path)
        rows.append({**common, "point": f"fit-{fit['max_bytes']}", **scored_columns(fit), "status": "ok", "error": "",
                     "params": fit.get("params", common["params"]), "headroom_bytes": fit.get("headroom_bytes"),
                     "export_time_s": fit.get("wall_time_s")})
    return rows


def scored_columns(summary: dict[str, Any]) -> dict[str, Any]:
    """The byte, score and artifact columns of a results row from a train, export or fit-budget summary."""
    b = summary.get("bytes") or {}
    return {"model_bytes": b.get("model"), "code_bytes": b.get("code"), "total_bytes": b.get("total"),
            "val_bpb": summary.get("val_bpb"), SCORE: summary.get(SCORE), "val_bpb_ttt": summary.get("val_bpb_ttt"),
            "ttt_seconds": summary.get("ttt_seconds"), "artifact": summary.get("artifact")}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _text(value: Any) -> str:
    """A config value as an override string: true/false, null, [5,6,7], 0.04."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _canon(value: Any) -> str:
    """Comparison form of a key value: numbers by value ("0" == "0.0" == "0e0"), the rest as text."""
    if _is_missing(value):
        return _MISSING
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


# --------------------------------------------------------------------------- cells

def cell_table(results: Results, by: list[str] | None = None, baseline: dict[str, str] | None = None,
               max_bytes: int | None = None) -> pd.DataFrame:
    """One row per cell (equal key values and point; seeds aggregated), compared with its baseline cell.

    `baseline` {key: value} compares each cell with the cell that has those values and the same other
    key values and point; None: the sweep's baseline; empty (or no sweep baseline): the first cell (the first
    fit-budget cell of the same budget for fit rows).
    Sorted: cells within the budget by mean val_bpb, then the others.
    """
    keys = list(by) if by else list(results.keys)
    rows = results.rows
    for key in keys:
        if key not in rows:
            raise ConfigError(f"--by {key}: not a key of these results (keys: {', '.join(results.keys) or 'none'})")
    if baseline is None:  # the sweep's own baseline, unless --by left its keys out
        spec = {k: v for k, v in results.baseline.items() if k in keys}
    else:
        spec = dict(baseline)
    for key in spec:
        if key not in keys:
            raise ConfigError(f"--baseline {key}: not a grouping key (keys: {', '.join(keys) or 'none'})")
    budget = max_bytes or results.max_bytes or CHALLENGE_MAX_BYTES

    canon = pd.DataFrame({k: rows[k].map(_canon) for k in keys}, index=rows.index)
    canon["point"] = rows["point"].astype(str).map(lambda point: _point_values(point, {}))
    groups = list(rows.groupby([canon[c] for c in canon.columns], sort=False, dropna=False))
    ids = [g if isinstance(g, tuple) else (g,) for g, _ in groups]
    cells = [_aggregate(frame, keys) for _, frame in groups]
    base_of = [_baseline_index(ids, i, keys, spec) for i in range(len(ids))]
    if spec and all(b is None for b in base_of):
        wanted = " ".join(f"{k}={v}" for k, v in spec.items())
        raise ConfigError(f"--baseline {wanted}: no cell has these values")
    for i, cell in enumerate(cells):
        cell.update(_compare(cell, cells[base_of[i]] if base_of[i] is not None else None, base_of[i] == i))
        total = cell["total_bytes"]
        cell["headroom_bytes"] = None if total is None else budget - total
        cell["within_budget"] = total is not None and not math.isnan(cell["bpb_mean"]) and total <= budget
    columns = [*keys, "point", *CELL_STATS]
    out = pd.DataFrame([{k: c.get(k) for k in columns} for c in cells], columns=columns)
    out["frontier"] = T.pareto_front(out["total_bytes"].astype(float), out["bpb_mean"].astype(float))
    out["baseline"] = [b == i for i, b in enumerate(base_of)]
    for col in ("model_bytes", "code_bytes", "total_bytes", "headroom_bytes"):
        out[col] = pd.array(out[col].tolist(), dtype="Int64")
    order = out.assign(_over=~out["within_budget"]).sort_values(["_over", "bpb_mean"], kind="stable",
                                                                na_position="last").index
    return out.loc[order].reset_index(drop=True)


def _aggregate(frame: pd.DataFrame, keys: list[str]) -> dict[str, Any]:
    """The seeds of one cell: counts, mean and sample std of the score, mean bytes over ok seeds."""
    ok = frame[frame["status"].eq("ok") & frame[SCORE].notna()]
    scores = ok[SCORE].astype(float)
    seeds = ok["seed"].dropna().astype(int)
    cell = {k: next((v for v in frame[k] if not _is_missing(v)), None) for k in keys}
    cell.update({
        "point": str(frame["point"].iloc[0]), "n_seeds": len(ok), "n_failed": len(frame) - len(ok),
        "seeds": ",".join(str(s) for s in sorted(set(seeds))),
        "bpb_mean": float(scores.mean()) if len(ok) else math.nan,
        "bpb_std": float(scores.std(ddof=1)) if len(ok) >= 2 else math.nan,
        "val_bpb_float_mean": float(ok["val_bpb"].astype(float).mean()) if len(ok) else math.nan,
        "_scores": scores.to_numpy(),
        "_by_seed": scores[seeds.index].groupby(seeds).mean(),
    })
    for col in ("model_bytes", "code_bytes", "total_bytes"):
        values = ok[col].dropna().astype(float) if col in ok else pd.Series(dtype=float)
        cell[col] = round(values.mean()) if len(values) else None
    for col, name in (("val_bpb_ttt", "bpb_ttt_mean"), ("ttt_seconds", "ttt_seconds_mean")):  # with test-time training
        values = ok[col].dropna().astype(float) if col in ok else pd.Series(dtype=float)
        cell[name] = float(values.mean()) if len(values) else math.nan
    return cell


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _baseline_index(ids: list[tuple], i: int, keys: list[str], spec: dict[str, str]) -> int | None:
    """The cell `ids[i]` is compared with. With `spec`: the cell with the spec's values, the same other values
    and the same point. Without: the first cell, among fit-budget rows of the same budget for a fit row (a fit
    and a fixed export answer different questions)."""
    want = list(ids[i])
    for key, value in spec.items():
        want[keys.index(key)] = _canon(value)
    want[-1] = _point_values(want[-1], spec)  # an export key's value is also in its point's label
    for j, cell_id in enumerate(ids):
        if spec and list(cell_id) == want:
            return j
        if not spec and _point_family(cell_id[-1]) == _point_family(want[-1]):
            return j
    return None


def _point_values(point: str, spec: dict[str, str]) -> str:
    """An export point's label (`export.bits=5 export.prune=0.02`) with `spec`'s values put in and every value in
    comparison form (`_canon`); `train` and `fit-<bytes>` unchanged."""
    parts = [part.partition("=") for part in point.split(" ")]
    return " ".join(f"{k}={_canon(spec.get(k, v))}" if sep else k for k, sep, v in parts)


def _point_family(point: str) -> str:
    """`fit-<bytes>` rows compare among themselves; the training's export and export points form one family."""
    return point if point.startswith("fit-") else "export"


def _compare(cell: dict[str, Any], base: dict[str, Any] | None, is_base: bool) -> dict[str, float]:
    """Mean delta and one-sided p-values (cell lower than base): Welch over all seeds, paired over shared seeds."""
    if base is None:
        return {"delta_vs_baseline": math.nan, "p_welch": math.nan, "p_paired": math.nan}
    delta = cell["bpb_mean"] - base["bpb_mean"]
    p_welch = p_paired = math.nan
    if not is_base:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # zero variance: scipy warns and returns NaN, which is the answer
            a, b = cell["_scores"], base["_scores"]
            if len(a) >= 2 and len(b) >= 2:
                p_welch = float(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
            shared = cell["_by_seed"].index.intersection(base["_by_seed"].index)
            if len(shared) >= 2:
                p_paired = float(stats.ttest_rel(cell["_by_seed"][shared], base["_by_seed"][shared],
                                                 alternative="less").pvalue)
    return {"delta_vs_baseline": delta, "p_welch": p_welch, "p_paired": p_paired}

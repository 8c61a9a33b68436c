"""`pgolf report` on a search folder (runs/searches/<name>): what the study found and how far to trust it.

Read from the files `pgolf search` writes (no Optuna needed here): trials.csv (one row per trial), search.json
(counts, best trial, fANOVA importances, overhead) and finalists/ (a sweep-shaped folder, aggregated by
`report.build_report`: mean, std, delta against the baseline, one-sided Welch and paired p). The rung proxies'
Spearman correlation with the objective is computed here over the complete trials that reported the rung.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table
from scipy import stats

from pgolf.errors import DataError, MissingExtraError
from pgolf.results import tables as T
from pgolf.results.report import Report, build_report

SEARCH_FILE = "search.yaml"
_RUNG_COLUMN = re.compile(r"^rung(\d+)_(val_bpb|cooldown_bpb)$")


def is_search_folder(path: Path) -> bool:
    return (Path(path) / SEARCH_FILE).is_file()


@dataclass
class SearchReport:
    folder: Path
    summary: dict[str, Any]
    trials: pd.DataFrame
    proxies: pd.DataFrame
    finalists: Report | None


def build_search_report(folder: Path) -> SearchReport:
    folder = Path(folder)
    try:
        summary = json.loads((folder / "search.json").read_text()) if (folder / "search.json").is_file() else {}
        trials = T.read_frame(folder / "trials.csv") if (folder / "trials.csv").is_file() else pd.DataFrame()
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the search in {folder}: {exc}") from exc
    if trials.empty:
        raise DataError(f"{folder}: no trials yet (run its `pgolf search` command)")
    finalists = None
    if (folder / "finalists" / "results.csv").is_file():
        finalists = build_report([folder / "finalists"])
    return SearchReport(folder, summary, trials, proxy_correlations(trials), finalists)


def proxy_correlations(trials: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of each rung score with the objective, over the complete trials that have both."""
    complete = trials[trials["state"].eq("complete") & trials["objective"].notna()]
    rows = []
    for col in trials.columns:
        match = _RUNG_COLUMN.match(col)
        if not match:
            continue
        both = complete[[col, "objective"]].dropna().astype(float)
        rho = math.nan
        if len(both) >= 3 and both[col].nunique() > 1 and both["objective"].nunique() > 1:
            rho = float(stats.spearmanr(both[col], both["objective"]).statistic)
        steps = complete[f"rung{match.group(1)}_step"].dropna() if f"rung{match.group(1)}_step" in complete else []
        rows.append({"rung": int(match.group(1)), "score": match.group(2), "step": int(steps.iloc[0]) if len(steps)
                     else None, "n": len(both), "spearman": rho})
    return pd.DataFrame(rows, columns=["rung", "score", "step", "n", "spearman"])


def counts_line(summary: dict[str, Any], trials: pd.DataFrame) -> str:
    states = trials["state"].value_counts()
    failed = int(((trials["state"] == "fail") & ~trials["stale"].astype(bool)).sum())
    line = (f"{int(states.get('complete', 0))} complete, {int(states.get('pruned', 0))} pruned, {failed} failed "
            f"trials")
    overhead = summary.get("overhead")
    if overhead is not None and summary.get("trials_run"):
        line += (f"; last run: {summary['trials_run']} trials in {summary['wall_time_s']:.0f} s, runner overhead "
                 f"{overhead:.1%}")
    return line


def trials_table(trials: pd.DataFrame, keys: list[str], title: str) -> Table:
    columns = [T.column("number", "#"), T.column("state", justify="left"),
               T.column("objective", "objective", T.fmt_bpb), *(T.column(k, justify="left") for k in keys),
               *(T.column(c, c, T.fmt_bpb) for c in trials.columns if _RUNG_COLUMN.match(c)),
               T.column("seconds", "s", lambda v: "" if pd.isna(v) else f"{float(v):.0f}")]
    shown = trials[~trials["stale"].astype(bool)].sort_values(["objective", "number"], na_position="last")
    return T.render(shown, columns, title=title, caption="objective: fit-budget's round-trip val_bpb at the "
                    "search's --max-bytes, else the round-trip val_bpb; rungN_*: the rung scores the pruner saw")


def proxies_table(proxies: pd.DataFrame) -> Table:
    columns = [T.column("rung"), T.column("step"), T.column("score", justify="left"), T.column("n", "trials"),
               T.column("spearman", "Spearman vs objective", lambda v: "" if pd.isna(v) else f"{v:+.3f}")]
    return T.render(proxies, columns, title="rung scores as predictors of the objective (complete trials)")


def importances_table(summary: dict[str, Any]) -> Table | str:
    found = summary.get("importances") or {}
    if "values" not in found:
        return f"parameter importances: {found.get('error', 'not computed yet')}"
    frame = pd.DataFrame([{"key": k, "importance": v} for k, v in found["values"].items()])
    return T.render(frame, [T.column("key", justify="left"),
                            T.column("importance", "fANOVA importance", lambda v: f"{v:.3f}")],
                    title="parameter importances (Optuna's fANOVA)")


def search_json(report: SearchReport) -> dict[str, Any]:
    return {"folder": str(report.folder), **report.summary,
            "trials": T.records(report.trials), "proxies": T.records(report.proxies),
            "finalists": T.records(report.finalists.cells) if report.finalists is not None else []}


def plot_objective(trials: pd.DataFrame, path: Path | str, title: str | None = None) -> None:
    """PNG: each complete trial's objective against its number, the best so far as a step line, pruned trials'
    last rung score as crosses. Written atomically."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError(f"the objective plot needs matplotlib: {T.PLOT_EXTRA}") from exc
    fig = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    done = trials[trials["state"].eq("complete") & trials["objective"].notna()].sort_values("number")
    ax.plot(done["number"], done["objective"].astype(float), "o", label="complete trial")
    if len(done):
        ax.step(done["number"], done["objective"].astype(float).cummin(), where="post", color="tab:green",
                label="best so far")
    rung_cols = [c for c in trials.columns if c.endswith("_val_bpb") and c.startswith("rung")]
    pruned = trials[trials["state"].eq("pruned")]
    if len(pruned) and rung_cols:
        last = pruned[rung_cols].astype(float).ffill(axis=1).iloc[:, -1]
        ax.plot(pruned["number"], last, "x", color="tab:red", label="pruned (its last rung val_bpb)")
    ax.set_xlabel("trial number")
    ax.set_ylabel("objective (round-trip val_bpb)")
    T.write_png(fig, ax, path, title)

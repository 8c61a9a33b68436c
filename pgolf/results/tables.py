"""Result tables: pandas frames in; Pareto marks, rich tables, CSV/parquet/JSON and plots out.

fit-budget's candidate table, the sweep's results and the report's cell table all pass through here,
so a number is formatted, written and plotted one way. What is not obvious:
- Frames are written through `pgolf.atomic.atomic_write_*`: text or bytes are rendered in memory first,
  then renamed into place (an interrupted sweep never leaves half a CSV or half a PNG).
- JSON is a list of records with NaN and pandas NA as null and numpy scalars as plain numbers, at full
  float precision (pandas' own `to_json` rounds to 10 digits).
- Byte counts print exactly with thousands separators, p-values with 3 significant digits, and every
  cell is escaped: fit labels such as `[i3=7]` would otherwise be read as rich markup.
- matplotlib is an optional extra (`pgolf[plot]`), imported inside `plot_frontier` only; it draws on
  a bare `Figure` with the Agg canvas, so no pyplot state or backend switch leaks into the process.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.markup import escape
from rich.table import Table

from pgolf import config as C
from pgolf.atomic import atomic_write_bytes, atomic_write_text
from pgolf.errors import DataError, MissingExtraError

PLOT_EXTRA = "install the plot extra: pip install 'pgolf[plot]'"


# --------------------------------------------------------------------------- Pareto frontier

def pareto_front(total_bytes: Sequence[float], val_bpb: Sequence[float]) -> list[bool]:
    """True for points no other point beats: one with <= bytes and lower BPB, or fewer bytes and <= BPB.

    A point with a NaN coordinate is never on the frontier and never dominates another.
    """
    points = [(float(b), float(v)) for b, v in zip(total_bytes, val_bpb, strict=True)]
    valid = [not (math.isnan(b) or math.isnan(v)) for b, v in points]
    marks = []
    for (b, v), ok in zip(points, valid):
        dominated = any(ok2 and ((b2 <= b and v2 < v) or (b2 < b and v2 <= v))
                        for (b2, v2), ok2 in zip(points, valid))
        marks.append(ok and not dominated)
    return marks


# --------------------------------------------------------------------------- formats

def fmt_bytes(value: Any) -> str:
    return "-" if _missing(value) else f"{int(value):,}"


def fmt_bpb(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):.4f}"


def fmt_delta(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):+.4f}"


def fmt_p(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):.3g}"


def fmt_text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float | np.floating) and math.isnan(value))


# --------------------------------------------------------------------------- rich tables

@dataclass(frozen=True)
class Column:
    """One rich column: a header and how a row (a mapping of the frame's columns) becomes its text."""

    header: str
    text: Callable[[dict[str, Any]], str]
    justify: str = "right"


def column(field: str, header: str | None = None, fmt: Callable[[Any], str] = fmt_text,
           justify: str = "right") -> Column:
    """A column showing one field of the frame through `fmt`."""
    return Column(header if header is not None else field, lambda row: fmt(row.get(field)), justify)


def render(frame: pd.DataFrame, columns: Sequence[Column], title: str | None = None, caption: str | None = None,
           row_style: Callable[[dict[str, Any]], str | None] | None = None,
           sections: Iterable[int] = ()) -> Table:
    """A rich Table of `frame`'s rows; a section line is drawn before each row position in `sections`."""
    table = Table(title=title, caption=caption)
    for col in columns:
        table.add_column(col.header, justify=col.justify)
    breaks = set(sections)
    for i, row in enumerate(frame.to_dict("records")):
        if i in breaks and i > 0:
            table.add_section()
        table.add_row(*(escape(col.text(row)) for col in columns),
                      style=row_style(row) if row_style is not None else None)
    return table


def fit_table(summary: dict[str, Any]) -> Table:
    """fit-budget: every BPB-evaluated candidate sorted by bytes (frontier *, choice >), then the final re-score.

    Model bytes come in two columns: the search's prediction (every candidate) and the written file's
    size (the choice only, the one candidate ever written); total and headroom use the file where there is one.
    """
    limit = summary["limit_bytes"]
    frame = pd.DataFrame(summary["candidates"])
    columns = [Column("", lambda r: ("*" if r["frontier"] else "") + (">" if r["chosen"] else ""), "left"),
               column("config", justify="left"),
               column("predicted_model_bytes", "model bytes predicted", fmt_bytes),
               column("measured_model_bytes", "model bytes measured (file)", fmt_bytes),
               column("code_bytes", "code bytes", fmt_bytes), column("total_bytes", "total", fmt_bytes),
               column("headroom_bytes", "headroom", fmt_bytes), column("val_bpb", "val_bpb", fmt_bpb),
               column("delta_bpb", "delta vs float", fmt_delta)]
    table = render(frame, columns,
                   title=f"fit-budget: {summary['max_bytes']:,} bytes - margin {summary['margin']:,} = {limit:,}",
                   caption=f"search BPB on {summary['search_val_tokens']:,} val tokens (float "
                           f"{summary['search_val_bpb_float']:.4f}); total and headroom from the measured file "
                           "where there is one (the choice), else the prediction; * = Pareto frontier; "
                           f"{summary['bpb_evaluations']} BPB evaluations in {summary['wall_time_s']:.0f} s",
                   row_style=lambda r: "bold green" if r["chosen"] else None)
    b = summary["bytes"]
    table.add_section()
    table.add_row("final", escape(f"{summary['label']} (full val, {summary['val_tokens']:,} tokens)"),
                  "", fmt_bytes(b["model"]), fmt_bytes(b["code"]), fmt_bytes(b["total"]),
                  fmt_bytes(summary["headroom_bytes"]), fmt_bpb(summary["val_bpb_roundtrip"]),
                  fmt_delta(summary["val_bpb_roundtrip"] - summary["val_bpb"]), style="bold")
    if "val_bpb_ttt" in summary:  # the search ranks static scores; only the final artifact is scored with TTT
        table.add_row("final", escape(f"with ttt={summary['ttt']} ({summary['ttt_seconds']:.0f} s; the search above "
                                      "is static)"), "", "", "", "", "", fmt_bpb(summary["val_bpb_ttt"]),
                      fmt_delta(summary["val_bpb_ttt"] - summary["val_bpb"]), style="bold green")
    return table


def cell_label(row: dict[str, Any], keys: Sequence[str]) -> str:
    """`key=value ...` of a cell's set keys, then its point unless the keys already say it."""
    parts = [f"{k}={row[k]}" for k in keys if not _missing(row.get(k))]
    if not _point_said(row, keys):
        parts.append(str(row["point"]))
    return " ".join(parts) or "train"


def _point_said(row: dict[str, Any], keys: Sequence[str]) -> bool:
    """True when the point adds nothing: the training's own export, or export points the key columns spell out."""
    point = row.get("point")
    return point in (None, "train") or set(str(point).split()) <= {f"{k}={row.get(k)}" for k in keys}


def _ttt_columns(cells: pd.DataFrame) -> list[Column]:
    """The score after test-time training and its seconds, beside the round trip's, when any cell has them."""
    if "bpb_ttt_mean" not in cells or not cells["bpb_ttt_mean"].notna().any():
        return []
    return [column("bpb_ttt_mean", "val_bpb (ttt)", fmt_bpb),
            Column("ttt s", lambda r: "" if _missing(r["ttt_seconds_mean"]) else f"{r['ttt_seconds_mean']:.0f}")]


def cells_table(cells: pd.DataFrame, keys: Sequence[str], max_bytes: int | None, title: str) -> Table:
    """The report's cell table (rows in the frame's order: within budget by BPB, then the rest).

    * marks the Pareto frontier of round-trip val_bpb against total bytes; the baseline cell says
    `baseline` in the delta column; a section line separates the cells over the budget. The point
    column is left out when the key columns already spell out every point.
    """
    show_point = not all(_point_said(row, keys) for row in cells.to_dict("records"))
    columns = [Column("", lambda r: "*" if r["frontier"] else "", "left"),
               *(column(k, justify="left") for k in keys),
               *([column("point", justify="left")] if show_point else []),
               Column("seeds", lambda r: f"{r['n_seeds']}" + (f" (+{r['n_failed']} failed)" if r["n_failed"] else "")),
               Column("val_bpb (round trip)", lambda r: fmt_bpb(r["bpb_mean"]) + (
                   "" if _missing(r["bpb_std"]) else f" ± {r['bpb_std']:.4f}")),
               *_ttt_columns(cells),
               Column("delta", lambda r: "baseline" if r["baseline"] else fmt_delta(r["delta_vs_baseline"])),
               column("p_welch", "p Welch", fmt_p), column("p_paired", "p paired", fmt_p),
               column("model_bytes", "model bytes", fmt_bytes), column("code_bytes", "code bytes", fmt_bytes),
               column("total_bytes", "total bytes", fmt_bytes), column("headroom_bytes", "headroom", fmt_bytes)]
    over = [i for i, inside in enumerate(cells["within_budget"]) if not inside]
    budget = (f"budget {max_bytes:,} bytes (cells below the line are over it or unscored); "
              if max_bytes is not None else "")
    caption = (f"{budget}* = Pareto frontier of val_bpb vs total bytes; mean ± sample std over seeds; p: one-sided "
               "t-tests that the cell is lower than the baseline (Welch, and paired by seed)")
    return render(cells, columns, title=title, caption=caption, sections=over[:1],
                  row_style=lambda r: "bold" if r["baseline"] else None)


# --------------------------------------------------------------------------- CSV / parquet / JSON

def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame as plain JSON-ready dicts: NaN and NA -> None, numpy scalars -> Python numbers."""
    return [{str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def json_text(frame: pd.DataFrame) -> str:
    return json.dumps(records(frame), indent=2) + "\n"


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def write_csv(frame: pd.DataFrame, path: Path | str) -> None:
    atomic_write_text(path, csv_text(frame))


def write_json(frame: pd.DataFrame, path: Path | str) -> None:
    atomic_write_text(path, json_text(frame))


def write_parquet(frame: pd.DataFrame, path: Path | str) -> None:
    atomic_write_bytes(path, parquet_bytes(frame))


def read_frame(path: Path | str, text_columns: Iterable[str] = ()) -> pd.DataFrame:
    """A frame written by `write_parquet` or `write_csv`; `text_columns` stay strings when read from CSV."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=dict.fromkeys(text_columns, str), keep_default_na=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from exc


# --------------------------------------------------------------------------- plot

def plot_frontier(cells: pd.DataFrame, path: Path | str, max_bytes: int | None, keys: Sequence[str] = (),
                  title: str | None = None) -> None:
    """PNG: round-trip val_bpb (mean, sample-std error bars) against total bytes, one labelled marker per
    cell, the Pareto frontier as a line and the budget as a vertical line. Written atomically."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError(f"--plot needs matplotlib: {PLOT_EXTRA}") from exc
    scored = cells[cells["bpb_mean"].notna() & cells["total_bytes"].notna()]
    fig = Figure(figsize=(9, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = scored["total_bytes"].astype(float).to_numpy()
    y = scored["bpb_mean"].astype(float).to_numpy()
    err = scored["bpb_std"].astype(float).fillna(0.0).to_numpy()
    ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label="cell (mean ± std over seeds)")
    for xi, yi, row in zip(x, y, scored.to_dict("records")):
        ax.annotate(cell_label(row, keys), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = scored[scored["frontier"].astype(bool)].sort_values("total_bytes")
    if len(front):
        ax.plot(front["total_bytes"].astype(float), front["bpb_mean"].astype(float), "-", color="tab:green",
                label="Pareto frontier")
    if max_bytes is not None and len(x) and max_bytes > 2 * x.max():
        # a budget far right of every cell would squash them into one column: say where it is instead
        ax.plot([], [], " ", label=f"budget {max_bytes:,} bytes (far right: {max_bytes - x.max():,.0f} bytes of "
                                   "headroom past the largest cell)")
    elif max_bytes is not None:
        ax.axvline(max_bytes, color="tab:red", linestyle="--", label=f"budget {max_bytes:,} bytes")
    ax.set_xlabel("total bytes (artifact + code)")
    ax.set_ylabel("val_bpb (round trip)")
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:,.0f}")
    write_png(fig, ax, path, title)


def write_png(fig, ax, path: Path | str, title: str | None) -> None:
    """A plot's grid, legend and title, then the figure written atomically as a PNG."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())


def summary_table(summary: dict, title: str, max_bytes: str) -> Table:
    """The summary of one model; headroom is against `max_bytes`, the configured budget (budget.max_bytes)."""
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    budget = C.parse_size(max_bytes)
    rows = [
        ("params", f"{summary['params']:,}"),
        ("val_loss (float)", f"{summary.get('val_loss', float('nan')):.4f}"),
        ("val_bpb (float)", f"{summary.get('val_bpb', float('nan')):.4f}"),
    ]
    if "val_bpb_roundtrip" in summary and "val_bpb_ttt" in summary:
        rows.append(("val_bpb round trip", f"{summary['val_bpb_roundtrip']:.4f}"))
        rows.append(("quantization cost", f"{summary['val_bpb_roundtrip'] - summary['val_bpb']:+.4f}"))
    elif "val_bpb_roundtrip" in summary:
        rows.append(("val_bpb round trip (score)", f"[bold green]{summary['val_bpb_roundtrip']:.4f}[/]"))
        rows.append(("quantization cost", f"{summary['val_bpb_roundtrip'] - summary['val_bpb']:+.4f}"))
    if "val_bpb_ttt" in summary:
        label = "(score)" if "val_bpb_roundtrip" in summary else ""
        rows.append((f"val_bpb with ttt={summary['ttt']} {label}".rstrip(),
                     f"[bold green]{summary['val_bpb_ttt']:.4f}[/]"))
        static = summary.get("val_bpb_roundtrip", summary.get("val_bpb"))
        rows.append((f"ttt gain ({summary['ttt_seconds']:.1f} s)", f"{summary['val_bpb_ttt'] - static:+.4f}"))
    if "bytes" in summary and "total" in summary["bytes"]:
        b = summary["bytes"]
        rows += [("model bytes", f"{b['model']:,}"), ("code bytes", f"{b['code']:,}"),
                 ("total bytes", f"{b['total']:,}"), (f"headroom to {max_bytes}", f"{budget - b['total']:,}")]
    if "entropy_bound_bytes" in summary:
        rows.append(("entropy bound", f"{summary['entropy_bound_bytes']:,}"))
    for key, label in (("val_tokens", "val tokens"), ("val_bytes", "val bytes"), ("steps", "steps")):
        if key in summary:
            rows.append((label, f"{summary[key]:,}"))
    if "eval_device" in summary:
        rows.append(("scored on", f"{summary['eval_device']} {summary['eval_dtype']}"))
    if "tokens_per_s" in summary:
        rows.append(("train tokens/s", f"{summary['tokens_per_s']:,.0f}"))
    if "train_time_s" in summary:
        rows.append(("train time", f"{summary['train_time_s']:.1f} s"))
    for label, value in rows:
        table.add_row(label, value)
    return table


def diagnostics_table(diagnostics: dict) -> Table:
    """Per parameter group: the numbers that explain why a regularizer changed the artifact size."""
    table = Table(title="final weights by group")
    for col in ("group", "params", "rms", "exact zeros", "rounds to 0", "entropy b/weight"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for group, d in diagnostics.items():
        table.add_row(group, f"{int(d['numel']):,}", f"{d['rms']:.4g}", f"{d['zero_frac']:.2%}",
                      f"{d['near_zero_frac']:.2%}", f"{d['entropy_bits']:.3f}")
    return table


def export_groups_table(summary: dict) -> Table:
    table = Table(title="export by tensor group")
    for col in ("group", "tensors", "params", "bits", "codec", "zeros", "entropy b/param", "bound bytes", "bytes"):
        table.add_column(col, justify="left" if col in ("group", "codec") else "right")
    for g in summary["export_groups"]:
        table.add_row(g["group"], str(g["tensors"]), f"{g['params']:,}", str(g["bits"]), g["codec"],
                      f"{g['zeros']:,}", f"{g['entropy_bits_per_param']:.3f}", f"{g['bound_bytes']:,}",
                      f"{g['bytes']:,}")
    groups = summary["export_groups"]
    table.add_row("total", str(sum(g["tensors"] for g in groups)), f"{sum(g['params'] for g in groups):,}", "", "",
                  f"{sum(g['zeros'] for g in groups):,}", "", f"{summary['entropy_bound_bytes']:,}",
                  f"{sum(g['bytes'] for g in groups):,}", style="bold")
    return table

def pack_table(summary: dict) -> Table:
    """What `pgolf pack` wrote: the score (mean of the seeds for a sweep cell), code and total bytes, headroom."""
    table = Table(title=f"pgolf pack: {summary['out']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    rows = [("val_bpb" + (f" (mean of {len(summary['seeds'])} seeds)" if "seeds" in summary else ""),
             f"[bold green]{summary['val_bpb']:.6f}[/]")]
    if "val_bpb_std" in summary:
        rows.append(("val_bpb std", f"{summary['val_bpb_std']:.6f}"))
    rows += [("code bytes (train_gpt.py, " + summary["wrap"] + ")", f"{summary['bytes_code']:,}"),
             ("total bytes", f"{summary['bytes_total']:,}"),
             (f"headroom to {summary['budget']:,}", f"{summary['headroom_bytes']:,}"),
             ("files", ", ".join(summary["files"]))]
    for label, value in rows:
        table.add_row(label, value)
    return table


def plan_table(plan, cells: list[dict]) -> Table:
    """`pgolf sweep --dry-run`: one row per training cell and seed, and whether it has finished."""
    table = Table(title=f"pgolf sweep --dry-run: {plan.folder}")
    for col in ("cell", "seed", *[a.key for a in plan.train_axes], "finished"):
        table.add_column(col)
    for c in cells:
        table.add_row(*(str(c.get(k, "")) for k in ("cell", "seed", *[a.key for a in plan.train_axes])),
                      "yes" if c["finished"] else "")
    return table

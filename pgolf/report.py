"""Rich tables of search results (fit-budget), for the CLI to print.

Rows come from `pgolf.fit.candidate_rows`; this module only renders them.
The chosen row is highlighted, frontier rows (BPB vs bytes) are marked with
a star, and every byte count is exact. Labels are escaped: raised tensors
print as `[i3=7]`, which rich would otherwise take for markup.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table


def fit_table(summary: dict[str, Any]) -> Table:
    """Every BPB-evaluated candidate of a fit, sorted by bytes, then the final re-scored choice."""
    limit = summary["limit_bytes"]
    table = Table(title=f"fit-budget: {summary['max_bytes']:,} bytes - margin {summary['margin']:,} = {limit:,}",
                  caption=f"search BPB on {summary['search_val_tokens']:,} val tokens (float "
                          f"{summary['search_val_bpb_float']:.4f}); * = Pareto frontier; "
                          f"{summary['bpb_evaluations']} BPB evaluations in {summary['wall_time_s']:.0f} s")
    for col in ("", "config", "model bytes", "code bytes", "total", "headroom", "val_bpb", "delta vs float"):
        table.add_column(col, justify="left" if col in ("", "config") else "right")
    for row in summary["candidates"]:
        mark = ("*" if row["frontier"] else "") + (">" if row["chosen"] else "")
        table.add_row(mark, escape(row["config"]), f"{row['model_bytes']:,}", f"{row['code_bytes']:,}",
                      f"{row['total_bytes']:,}", f"{row['headroom_bytes']:,}", f"{row['val_bpb']:.4f}",
                      f"{row['delta_bpb']:+.4f}", style="bold green" if row["chosen"] else None)
    b = summary["bytes"]
    table.add_section()
    table.add_row("final", f"{escape(summary['label'])} (full val, {summary['val_tokens']:,} tokens)",
                  f"{b['model']:,}", f"{b['code']:,}", f"{b['total']:,}", f"{summary['headroom_bytes']:,}",
                  f"{summary['val_bpb_roundtrip']:.4f}", f"{summary['val_bpb_roundtrip'] - summary['val_bpb']:+.4f}",
                  style="bold")
    return table

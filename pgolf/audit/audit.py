"""`pgolf audit DIR`: every check on a records folder, one row each (pgolf/audit/__init__.py lists them).

Bad input is a DataError (exit 1): no train_gpt.py, a script that does not parse, a submission.json
that is not JSON, no log with a scored line; the same for the --against folder. A script that raises
while it loads leaves the LUT check unknown and the other checks run. The CLI exits 4 when a row fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgolf.audit.bytes_check import bytes_rows
from pgolf.audit.code import analyse
from pgolf.audit.folder import read_folder
from pgolf.audit.hygiene import hygiene_rows
from pgolf.audit.logs import parse_log
from pgolf.audit.lut import lut_rows
from pgolf.audit.replay import replay_row
from pgolf.audit.rows import FAIL, Row
from pgolf.audit.significance import scored, seed_rows, seed_summary, significance_row
from pgolf.audit.timing import time_rows
from pgolf.errors import UsageError


@dataclass
class AuditReport:
    folder: Path
    rows: list[Row]
    seeds: dict
    """The folder's seed summary: n, mean and std in bpb and nats, the nats/bpb ratio, each seed's bpb."""

    @property
    def failed(self) -> list[Row]:
        return [row for row in self.rows if row.verdict == FAIL]

    def as_dict(self) -> dict:
        return {"folder": str(self.folder), "failed": len(self.failed), "seeds": self.seeds,
                "rows": [row.as_dict() for row in self.rows]}


def folder_seeds(path: Path) -> dict:
    """The seed summary of a records folder's logs (what --against compares with)."""
    folder = read_folder(path)
    return seed_summary(scored(folder, [parse_log(p) for p in folder.logs]))


def audit_folder(path: Path, against: Path | None = None, against_bpb: float | None = None,
                 tokenizer: Path | None = None, text: Path | None = None) -> AuditReport:
    if against is not None and against_bpb is not None:
        raise UsageError("give --against or --against-bpb, not both")
    folder = read_folder(path)
    analysis = analyse(folder.root, folder.script)
    logs = scored(folder, [parse_log(p) for p in folder.logs])
    summary = seed_summary(logs)
    rows = bytes_rows(folder, analysis, logs) + seed_rows(folder, logs, summary)
    if against is not None:
        rows.append(significance_row(summary, folder_seeds(against), None, Path(against).name))
    elif against_bpb is not None:
        rows.append(significance_row(summary, None, against_bpb, f"val_bpb {against_bpb}"))
    rows += time_rows(folder, logs) + lut_rows(folder, analysis, tokenizer, text)
    if folder.is_pgolf:
        rows.append(replay_row(folder))
    rows += hygiene_rows(analysis, folder.readme)
    return AuditReport(folder.root, rows, summary)

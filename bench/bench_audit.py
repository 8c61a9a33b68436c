"""`pgolf audit` over every folder of records/track_10min_16mb in a local snapshot of openai/parameter-golf.

    PGOLF_PARAMETER_GOLF=/path/to/parameter-golf(.git) python bench/bench_audit.py

The snapshot may be a bare git directory or a checkout; the records are extracted with `git archive` into a
temporary folder. Folders are audited in date order (their names), each against its predecessor on the
leaderboard: the best 3-seed mean among the folders before it. Prints one markdown row per folder (bytes,
seeds, p, time and LUT verdicts, seconds), then every failing row with its evidence. Offline.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from pgolf.audit.audit import audit_folder
from pgolf.errors import PgolfError

TRACK = "records/track_10min_16mb"
ORDER = ("fail", "warn", "unknown", "pass")


def _extract(snapshot: str, into: Path) -> Path:
    archive = subprocess.run(["git", f"--git-dir={snapshot}" if not (Path(snapshot) / ".git").exists() else
                              f"--git-dir={Path(snapshot) / '.git'}", "archive", "HEAD", TRACK],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / TRACK


def _worst(rows, check: str) -> str:
    verdicts = {row.verdict for row in rows if row.check == check}
    return next((v for v in ORDER if v in verdicts), "-")


def main() -> None:
    snapshot = os.environ.get("PGOLF_PARAMETER_GOLF")
    if not snapshot:
        sys.exit("set PGOLF_PARAMETER_GOLF to a snapshot of openai/parameter-golf (bare git dir or checkout)")
    with tempfile.TemporaryDirectory(prefix="pgolf-bench-audit-") as tmp:
        track = _extract(snapshot, Path(tmp))
        folders = sorted(p for p in track.iterdir() if p.is_dir())
        best: tuple[float, Path] | None = None
        lines = ["| folder | bytes | seeds | p | time | LUT | s |", "|---|---|---:|---:|---|---|---:|"]
        failures = []
        for folder in folders:
            started = time.perf_counter()
            try:
                report = audit_folder(folder, against=best[1] if best else None)
            except PgolfError as exc:
                lines.append(f"| {folder.name} | error: {exc} | | | | | {time.perf_counter() - started:.1f} |")
                continue
            seconds = time.perf_counter() - started
            rows = report.rows
            sig = next((row for row in rows if row.check == "significance"), None)
            p = re.search(r"p=([^ ]+) \(", sig.detail).group(1) if sig else "-"
            p = f"{p} ({sig.verdict})" if sig else p
            lut = _worst(rows, "lut") if any(r.check == "lut" and r.item != "-" for r in rows) else "-"
            lines.append(f"| {folder.name} | {_worst(rows, 'bytes')} | {report.seeds['n']} | {p} | "
                         f"{_worst(rows, 'time')} | {lut} | {seconds:.1f} |")
            failures += [(folder.name, row) for row in report.failed]
            if best is None or report.seeds["bpb_mean"] < best[0]:
                best = (report.seeds["bpb_mean"], folder)
            print(f"audited {folder.name} in {seconds:.1f}s", file=sys.stderr, flush=True)
    print("\n".join(lines))
    print("\nFailing rows:")
    for name, row in failures:
        print(f"- {name}: {row.check} {row.item}: {row.detail} [{row.evidence}]")


if __name__ == "__main__":
    main()

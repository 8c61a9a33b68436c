"""Bytes: code (the script and every folder file it runs as code) plus the artifact, against 16,000,000
(decimal), against submission.json (`bytes_code`, `bytes_total`) and against each log's printed total.

The artifact is the weights file in the folder that the logs name, or `final_model.*`; records folders
rarely ship it, so each log's own `Serialized model ...: N bytes` is that seed's artifact. A claim below
what the files give fails (bytes not counted); a claim above them warns (counted more than ships).
"""

from __future__ import annotations

from pathlib import Path

from pgolf.audit.code import Analysis
from pgolf.audit.folder import Folder
from pgolf.audit.logs import LogFacts
from pgolf.audit.rows import FAIL, PASS, UNKNOWN, WARN, Row, where

CHALLENGE_MAX_BYTES = 16_000_000
_NOT_ARTIFACTS = {".py", ".log", ".txt", ".md", ".json", ".model", ".sh", ".yaml", ".yml"}


def find_artifact(folder: Folder, logs: list[LogFacts]) -> Path | None:
    text = "\n".join(log.path.read_text(errors="replace") for log in logs)
    files = [p for p in sorted(folder.root.iterdir()) if p.is_file() and p.suffix not in _NOT_ARTIFACTS]
    named = [p for p in files if p.name in text]
    finals = [p for p in files if p.name.startswith("final_model.")]
    return (named or finals or [None])[0]


def _compare(claimed: int, actual: int) -> str:
    return PASS if claimed == actual else FAIL if claimed < actual else WARN


def bytes_rows(folder: Folder, analysis: Analysis, logs: list[LogFacts]) -> list[Row]:
    code = analysis.code_bytes
    parts = ", ".join(f"{folder.name(f.path)} {f.path.stat().st_size:,}" for f in analysis.files)
    rows = [Row("bytes", "code", PASS, f"{code:,} bytes: {parts}",
                "; ".join(f"{folder.name(f.path)} <- {f.reason}" for f in analysis.files[1:]))]
    totals = []
    artifact = find_artifact(folder, logs)
    if artifact is not None:
        total = artifact.stat().st_size + code
        totals.append(total)
        rows.append(Row("bytes", f"total {artifact.name}", PASS if total <= CHALLENGE_MAX_BYTES else FAIL,
                        f"{artifact.stat().st_size:,} + {code:,} code = {total:,} of {CHALLENGE_MAX_BYTES:,}",
                        folder.name(artifact)))
    for log in logs:
        name = folder.name(log.path)
        if log.artifact_bytes is None:
            if artifact is None:
                rows.append(Row("bytes", f"total {name}", UNKNOWN, "no artifact in the folder and none printed"))
            continue
        total = int(log.artifact_bytes.value) + code
        totals.append(total)
        verdict = PASS if total <= CHALLENGE_MAX_BYTES else FAIL
        detail = f"{int(log.artifact_bytes.value):,} + {code:,} code = {total:,} of {CHALLENGE_MAX_BYTES:,}"
        evidence = where(name, log.artifact_bytes.lineno, log.artifact_bytes.text)
        if log.total_bytes is not None and int(log.total_bytes.value) != total:
            printed = int(log.total_bytes.value)
            verdict = FAIL if verdict == FAIL else _compare(printed, total)
            detail += f"; the log prints {printed:,}"
            evidence = where(name, log.total_bytes.lineno, log.total_bytes.text)
        rows.append(Row("bytes", f"total {name}", verdict, detail, evidence))
    rows += _submission_rows(folder, code, totals)
    return rows


def _submission_rows(folder: Folder, code: int, totals: list[int]) -> list[Row]:
    sub = folder.submission
    if sub is None:
        return [Row("bytes", "submission.json", UNKNOWN, "no submission.json")]
    rows = []
    if isinstance(sub.get("bytes_code"), int):
        claimed = sub["bytes_code"]
        rows.append(Row("bytes", "submission.json bytes_code", _compare(claimed, code),
                        f"claims {claimed:,}; the code files are {code:,}", "submission.json"))
    if isinstance(sub.get("bytes_total"), int):
        claimed = sub["bytes_total"]
        if claimed > CHALLENGE_MAX_BYTES:
            verdict, detail = FAIL, f"claims {claimed:,}, over {CHALLENGE_MAX_BYTES:,}"
        elif not totals:
            verdict, detail = UNKNOWN, f"claims {claimed:,}; no artifact size to check it against"
        else:
            verdict = PASS if claimed in totals else FAIL if claimed < max(totals) else WARN
            detail = f"claims {claimed:,}; the files and logs give {min(totals):,} to {max(totals):,}"
        rows.append(Row("bytes", "submission.json bytes_total", verdict, detail, "submission.json"))
    return rows

"""Time: training (the wallclock-stop line or the last step timing, plus any calibration the log shows
after the training loop) and evaluation, each at most 600 s, per log.

The loop checks the clock between steps (and after its validation), so a stop up to 1 s past 600 s is on
time: the baseline itself stops at 600,038 ms and the records at 600,028 to 600,137 ms. Calibration after
the loop (GPTQ Hessians, generated calibration data) is training compute and gets no such slack.
"""

from __future__ import annotations

from pgolf.audit.folder import Folder
from pgolf.audit.logs import LogFacts
from pgolf.audit.rows import FAIL, PASS, UNKNOWN, Row, where

MAX_TRAIN_S = 600.0
MAX_EVAL_S = 600.0
STOP_SLACK_S = 1.0


def time_rows(folder: Folder, logs: list[LogFacts]) -> list[Row]:
    rows = []
    for log in logs:
        name = folder.name(log.path)
        rows.append(_train_row(name, log))
        if log.eval_s is None:
            rows.append(Row("time", f"eval {name}", UNKNOWN, "no eval_time printed"))
        else:
            rows.append(Row("time", f"eval {name}", PASS if log.eval_s.value <= MAX_EVAL_S else FAIL,
                            f"{log.eval_s.value:.1f} s of {MAX_EVAL_S:.0f}",
                            where(name, log.eval_s.lineno, log.eval_s.text)))
    return rows


def _train_row(name: str, log: LogFacts) -> Row:
    if log.train_s is None:
        return Row("time", f"train {name}", UNKNOWN, "no train_time printed")
    loop_s = log.train_s.value
    calibration_s = sum(c.value for c in log.calibration)
    total_s = loop_s + calibration_s
    on_time = total_s <= MAX_TRAIN_S if log.calibration else loop_s <= MAX_TRAIN_S + STOP_SLACK_S
    detail = f"{loop_s:.1f} s loop"
    evidence = where(name, log.train_s.lineno, log.train_s.text)
    if log.calibration:
        detail += f" + {calibration_s:.1f} s calibration after it = {total_s:.1f} s"
        evidence += "; " + "; ".join(where(name, c.lineno, c.text, 60) for c in log.calibration)
    return Row("time", f"train {name}", PASS if on_time else FAIL, f"{detail} of {MAX_TRAIN_S:.0f}", evidence)

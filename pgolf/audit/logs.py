"""What a train log prints: the scored line, byte counts, training, calibration and evaluation time.

Formats differ across records (`final_int8_zlib_roundtrip_exact val_loss:2.0727 val_bpb:1.2244`,
`quantized_ttt_phased val_loss:2.3194 val_bpb:1.0599 eval_time:508785ms`, pgolf's `val_loss 6.92 val_bpb 3.85`),
so the rules are by keyword:
- scored line: the last line that prints both val_loss and val_bpb;
- training time: the wallclock-stop line (`stopping_early: wallclock_cap train_time:600038ms`), else the last
  line with `train_time` (ms, s or m);
- calibration: after that line, every duration printed on a line about collecting Hessians or making
  calibration data (`gptq:generated 64 sequences in 198.3s`, `GPTQ:collected 67 Hessians in 4.7s`): it runs
  after the training loop, so it counts toward training. Quantizing and compressing do not (`GPTQ:quantized
  in 10.2s`), nor a `done in` total that repeats the parts;
- evaluation time: `total_eval_time` when printed, else the sum of `eval_time` after training stopped;
- bytes: the last `Serialized model ...: N bytes` (the artifact), `Code size ...: N bytes` and
  `Total submission size ...: N bytes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_NUM = r"(\d+(?:\.\d+)?)"
_VAL_LOSS = re.compile(r"\bval_loss\b[:=]?\s*" + _NUM)
_VAL_BPB = re.compile(r"\bval_bpb\b[:=]?\s*" + _NUM)
_TRAIN_TIME = re.compile(r"\btrain_time\b[:=]?\s*" + _NUM + r"\s*(ms|s|m)\b")
_STOP = re.compile(r"stopping_early|wallclock_cap|wallclock cap")
_CALIBRATION = re.compile(r"hessian|calibrat|generat", re.IGNORECASE)
_DURATION = re.compile(_NUM + r"\s*(ms|s)\b")
_EVAL_TIME = re.compile(r"(?<!total_)\beval_time\b[:=]?\s*" + _NUM + r"\s*(ms|s)\b")
_TOTAL_EVAL = re.compile(r"\btotal_eval_time\b[:=]?\s*" + _NUM + r"\s*(ms|s)\b")
_ARTIFACT = re.compile(r"Serialized model[^:\n]*:\s*(\d+)\s*bytes")
_CODE = re.compile(r"Code size[^:\n]*:\s*(\d+)\s*bytes")
_TOTAL = re.compile(r"Total submission size[^:\n]*:\s*(\d+)\s*bytes")
_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class Printed:
    """A number a log prints, with the line it is on (1-based) and the line's text."""

    value: float
    lineno: int
    text: str


@dataclass
class LogFacts:
    path: Path
    val_loss: Printed | None = None
    val_bpb: Printed | None = None
    bpb_decimals: int = 0
    train_s: Printed | None = None
    calibration: list[Printed] = field(default_factory=list)
    eval_s: Printed | None = None
    artifact_bytes: Printed | None = None
    code_bytes: Printed | None = None
    total_bytes: Printed | None = None

    @property
    def seed(self) -> str:
        """The seed in the file name (`train_seed42.log` -> 42), else the file's stem."""
        found = re.search(r"seed_?(\d+)", self.path.name)
        return found.group(1) if found else self.path.stem


def _last(pattern: re.Pattern, lines: list[str], start: int = 0) -> Printed | None:
    for i in range(len(lines) - 1, start - 1, -1):
        found = pattern.search(lines[i])
        if found:
            return Printed(float(found.group(1)), i + 1, lines[i])
    return None


def parse_log(path: Path) -> LogFacts:
    lines = path.read_text(errors="replace").splitlines()
    facts = LogFacts(path)
    for i in range(len(lines) - 1, -1, -1):
        loss, bpb = _VAL_LOSS.search(lines[i]), _VAL_BPB.search(lines[i])
        if loss and bpb:
            facts.val_loss = Printed(float(loss.group(1)), i + 1, lines[i])
            facts.val_bpb = Printed(float(bpb.group(1)), i + 1, lines[i])
            facts.bpb_decimals = len(bpb.group(1).partition(".")[2])
            break
    stop = next((i for i in range(len(lines) - 1, -1, -1) if _STOP.search(lines[i]) and _TRAIN_TIME.search(lines[i])),
                None)
    if stop is None:
        stop = next((i for i in range(len(lines) - 1, -1, -1) if _TRAIN_TIME.search(lines[i])), None)
    if stop is not None:
        found = _TRAIN_TIME.search(lines[stop])
        facts.train_s = Printed(float(found.group(1)) * _SECONDS[found.group(2)], stop + 1, lines[stop])
        for i in range(stop + 1, len(lines)):
            if _CALIBRATION.search(lines[i]) and (d := _DURATION.search(lines[i])):
                facts.calibration.append(Printed(float(d.group(1)) * _SECONDS[d.group(2)], i + 1, lines[i]))
    after = 0 if stop is None else stop + 1
    total_eval = _last(_TOTAL_EVAL, lines, after)
    if total_eval is not None:
        unit = _TOTAL_EVAL.search(total_eval.text).group(2)
        facts.eval_s = Printed(total_eval.value * _SECONDS[unit], total_eval.lineno, total_eval.text)
    else:
        evals = [(i, m) for i in range(after, len(lines)) if (m := _EVAL_TIME.search(lines[i]))]
        if evals:
            seconds = sum(float(m.group(1)) * _SECONDS[m.group(2)] for _, m in evals)
            facts.eval_s = Printed(seconds, evals[-1][0] + 1, f"sum of {len(evals)} eval_time values")
    facts.artifact_bytes = _last(_ARTIFACT, lines)
    facts.code_bytes = _last(_CODE, lines)
    facts.total_bytes = _last(_TOTAL, lines)
    return facts

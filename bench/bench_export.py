"""Export choices on one checkpoint, as `pgolf export` runs them: round-trip val_bpb, bytes, seconds, peak memory.

    .venv/bin/python bench/bench_export.py runs/latest [--val-tokens 32768]

Rows: the reference export (export=int8_zlib), pgolf's default (int6 mse,
int8 embedding, best codec per group), and int4/int5/int6 with and without
GPTQ. Each row is one `pgolf export ... --json` process: it scores the float
model, exports, writes, reads the artifact back from disk and scores it, on
the first --val-tokens validation tokens. Seconds and peak memory (maximum
resident set, from the kernel's accounting of the finished process) are
those of the whole command; the first row is a float-only `pgolf eval` of
the checkpoint, the reference for both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = [
    ("reference int8 + zlib", ["export=int8_zlib"]),
    ("pgolf default", []),
    ("default + gptq", ["export.gptq=true"]),
    ("int5", ["export.bits=5"]),
    ("int5 + gptq", ["export.bits=5", "export.gptq=true"]),
    ("int4", ["export.bits=4"]),
    ("int4 + gptq", ["export.bits=4", "export.gptq=true"]),
]


def run(args: list[str]) -> tuple[dict, float, float]:
    """(JSON result, wall seconds, peak RSS MB) of one `pgolf` process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pgolf", *args, "--json"], stdout=subprocess.PIPE,
                                stderr=err, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # reaps it with its resource usage
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status):
            err.seek(0)
            raise SystemExit(f"pgolf {' '.join(args)} failed:\n{err.read()}")
    return json.loads(out), seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--val-tokens", type=int, default=32768)
    parser.add_argument("--out", type=Path, default=Path("/tmp/pgolf-bench-export"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    val = f"data.val_tokens={args.val_tokens}"
    print(f"{'export':<24}{'rt val_bpb':>11}{'vs float':>10}{'model bytes':>13}{'total bytes':>13}"
          f"{'command s':>11}{'peak MB':>9}")
    weights = args.source / "model.safetensors" if args.source.is_dir() else args.source
    result, seconds, peak = run(["eval", str(weights), val])
    print(f"{'float (pgolf eval)':<24}{result['val_bpb']:>11.4f}{'':>10}{'':>13}{'':>13}{seconds:>11.1f}{peak:>9.0f}")
    for label, overrides in ROWS:
        out = args.out / f"{label.replace(' + ', '-').replace(' ', '-')}.pgolf"
        result, seconds, peak = run(["export", str(args.source), val, *overrides, "--out", str(out)])
        rt, float_bpb, size = result["val_bpb_roundtrip"], result["val_bpb"], result["bytes"]
        print(f"{label:<24}{rt:>11.4f}{rt - float_bpb:>+10.4f}{size['model']:>13,}{size['total']:>13,}"
              f"{seconds:>11.1f}{peak:>9.0f}")


if __name__ == "__main__":
    main()

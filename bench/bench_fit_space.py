"""fit-budget's default search space against the one before issue 21 (mse clip only, rounding only, fp32 control
tensors, codec=auto searched as ctx alone), and against the record's own export recipe, at equal total bytes.

For each run: with `--records`, `pgolf export RUN export=records export.float_max_numel=4096` (the record's recipe
as pgolf keys; its small-tensor threshold scaled from width 512 to records_tiny's 128) sets the budget to its total
bytes; else `--budget`. Then `pgolf fit-budget RUN --max-bytes B` with the old space (as overrides) and with the
default one. Prints round-trip val_bpb, total bytes, the chosen label and the CPU seconds of each process (user +
sys: the figure that stays honest on a shared machine; wall seconds beside it). Run it twice: pgolf's code-bytes
cache is cold after any source change, and the second run is what a user sees.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fit_space.py --run runs/<records_tiny run> --records
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fit_space.py --run runs/<demo run> --budget 420KB
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = ["fit.clips=[]", "fit.gptq=[]", "fit.control_dtypes=[]", "fit.codecs=[ctx]", "fit.fill_candidates=3"]
"""The space before: the base export's clip (mse), its rounding and fp32 control tensors, auto searched as ctx, three
frontier points pruned to fit."""


def pgolf(*args: str) -> tuple[dict, float, float]:
    """(the --json output, CPU seconds, wall seconds) of one pgolf process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pgolf", *args, "--json"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"pgolf {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return json.loads(proc.stdout), cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run directory")
    parser.add_argument("--records", action="store_true", help="also export=records; its total is the budget")
    parser.add_argument("--budget", default=None, help="the total byte budget (without --records)")
    parser.add_argument("--val-tokens", type=int, default=32768)
    args = parser.parse_args()
    data = [f"data.val_tokens={args.val_tokens}"]
    rows = []
    budget = args.budget
    if args.records:
        with tempfile.TemporaryDirectory() as tmp:
            rec, cpu, wall = pgolf("export", args.run, "export=records", "export.float_max_numel=4096", *data,
                                   "--out", str(Path(tmp) / "records.pgolf"))
        budget = str(rec["bytes"]["total"])
        rows.append(("export=records", rec["bytes"]["total"], rec["val_bpb_roundtrip"], cpu, wall,
                     "the record's recipe"))
    if budget is None:
        raise SystemExit("give --budget or --records")
    for name, space in (("fit, space before", BEFORE), ("fit, default space", [])):
        fit, cpu, wall = pgolf("fit-budget", args.run, "--max-bytes", budget, *space, *data)
        rows.append((name, fit["bytes"]["total"], fit["val_bpb_roundtrip"], cpu, wall, fit["label"]))
    print(f"{args.run} at {budget} bytes, round trip on {args.val_tokens:,} validation tokens")
    print(f"{'':20} {'total':>9} {'val_bpb':>8} {'cpu s':>6} {'wall s':>6}  chosen")
    for name, total, bpb, cpu, wall, label in rows:
        print(f"{name:20} {total:>9,} {bpb:8.4f} {cpu:6.0f} {wall:6.0f}  {label}")


if __name__ == "__main__":
    main()

"""LQER in fit-budget, and the record's export recipe against fit-budget, on a trained `model=records_tiny`.

1. `pgolf export RUN export=records` (the record's recipe as pgolf keys, conf/export/records.yaml) with
   `export.float_max_numel` scaled to the model: the record keeps tensors of <= 65,536 values float at width
   512; records_tiny's width is 128, so 65,536 / 16 = 4,096 (at 65,536 nearly every records_tiny matrix would stay
   fp16). Its total bytes (artifact + code) set the budgets below.
2. `pgolf fit-budget RUN --max-bytes B` at B = 0.85, 0.95 and 1.0 x that total, with `fit.lqer_ranks=[0]` (the
   default) and `[0,4]`: the round-trip val_bpb, the chosen label and whether LQER was chosen.
Scores are on the first `--val-tokens` validation tokens (all three use the same).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_lqer.py --run runs/<date>/<time>-<records_tiny run>
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pgolf(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pgolf", *args, "--json"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"pgolf {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained model=records_tiny run directory")
    parser.add_argument("--val-tokens", type=int, default=32768)
    args = parser.parse_args()
    data = [f"data.val_tokens={args.val_tokens}"]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        rec = pgolf("export", args.run, "export=records", "export.float_max_numel=4096", *data,
                    "--out", str(Path(tmp) / "records.pgolf"))
        total = rec["bytes"]["total"]
        print(f"export=records: {rec['bytes']['model']:,} + {rec['bytes']['code']:,} code = {total:,} bytes, "
              f"round trip {rec['val_bpb_roundtrip']:.4f} ({time.perf_counter() - started:.0f} s)")
    print(f"\n{'budget':>10} {'lqer_ranks':>10} {'total':>9} {'val_bpb':>8} {'s':>5}  chosen")
    for share in (0.85, 0.95, 1.0):
        budget = int(total * share)
        for ranks in ("[0]", "[0,4]"):
            started = time.perf_counter()
            fit = pgolf("fit-budget", args.run, "--max-bytes", str(budget), f"fit.lqer_ranks={ranks}", *data)
            print(f"{budget:>10,} {ranks:>10} {fit['bytes']['total']:>9,} {fit['val_bpb_roundtrip']:8.4f} "
                  f"{time.perf_counter() - started:5.0f}  {fit['label']}", flush=True)


if __name__ == "__main__":
    main()

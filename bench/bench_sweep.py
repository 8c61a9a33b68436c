"""The sweep runner's own costs and guarantees, as a user runs it (`pgolf sweep` subprocesses).

1. A 3 decay x 3 prune grid of the tiny model at train.iterations=100: wall time, trainings run
   (3, not 9), and the runner's overhead = wall time minus the seconds each cell recorded for its
   training, exports and evaluations (the sum of its stage calls); then the same grid with --jobs 2.
2. Resume: a 3-training sweep killed with SIGKILL during its second training, re-run: cells redone
   (must be 0) and whether the final results equal an uninterrupted sweep's (every column but timings).
3. Seeds: two cells x --seeds 3; the report's p-values against scipy's computed here from results.csv.

    python bench/bench_sweep.py [--iterations 100] [--skip-jobs]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
SCORES = ["cell", "point", "status", "model_bytes", "total_bytes", "val_bpb", "val_bpb_roundtrip", "steps"]


def pgolf(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pgolf", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"pgolf {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - start, proc


def folder_of(cwd: Path) -> Path:
    (folder,) = (cwd / "runs" / "sweeps").iterdir()
    return folder


def cell_seconds(folder: Path) -> float:
    """What the cells recorded for their own stages: training calls plus export and fit calls."""
    total = 0.0
    for path in (folder / "cells").glob("*/cell.json"):
        rows = json.loads(path.read_text())["rows"]
        total += (rows[0].get("wall_time_s") or 0.0) + sum(r.get("export_time_s") or 0.0 for r in rows)
    return total


def grid(data: list[str], iterations: int, skip_jobs: bool, work: Path) -> None:
    args = ["sweep", "reg.weight_decay=0,0.04,0.09", "export.prune=0,0.02,0.05", f"train.iterations={iterations}",
            "train.val_every=0", *data]
    for jobs in ([1] if skip_jobs else [1, 2]):
        cwd = work / f"grid-jobs{jobs}"
        cwd.mkdir()
        wall, _ = pgolf([*args, "--jobs", str(jobs)], cwd)
        folder = folder_of(cwd)
        trainings = len(list((folder / "cells").iterdir()))
        rows = len(pd.read_csv(folder / "results.csv"))
        stages = cell_seconds(folder)
        print(f"grid 3x3, --jobs {jobs}: {wall:7.1f} s wall, {trainings} trainings, {rows} rows, "
              f"stage seconds {stages:7.1f}" + (f", runner overhead {wall - stages:6.1f} s "
                                               f"({(wall - stages) / wall:.1%} of the wall time; target < 5%)"
                                               if jobs == 1 else ""))


def resume(data: list[str], iterations: int, work: Path) -> None:
    args = ["sweep", "reg.weight_decay=0,0.04,0.09", f"train.iterations={iterations}", "train.val_every=0", *data]
    killed = work / "killed"
    killed.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pgolf", *args], cwd=killed, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while True:
        cells = sorted((killed / "runs" / "sweeps").glob("*/cells/*"))
        finished = [c for c in cells if (c / "cell.json").is_file()]
        if len(finished) == 1 and len(cells) == 2 and (cells[-1] / "metrics.jsonl").is_file():
            break
        if proc.poll() is not None:
            raise SystemExit("the sweep ended before its second training started")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = folder_of(killed)
    stamps = {p: p.stat().st_mtime_ns for p in (folder / "cells").glob("*/cell.json")}
    _, rerun = pgolf(args, killed)
    redone = sum(p.stat().st_mtime_ns != t for p, t in stamps.items())
    clean = work / "clean"
    clean.mkdir()
    pgolf(args, clean)
    a = pd.read_csv(folder / "results.csv")[SCORES]
    b = pd.read_csv(folder_of(clean) / "results.csv")[SCORES]
    same = a.equals(b)
    print(f"resume after kill -9 in training 2: {len(stamps)} finished cell(s) kept, {redone} redone (must be 0); "
          f"final results {'identical to' if same else 'DIFFERENT from'} an uninterrupted sweep's")
    if not same:
        print(pd.concat({"resumed": a, "clean": b}, axis=1).to_string())


def seeds(data: list[str], iterations: int, work: Path) -> None:
    cwd = work / "seeds"
    cwd.mkdir()
    args = ["sweep", "reg.weight_decay=0,0.09", "--seeds", "3", "--baseline", "reg.weight_decay=0",
            f"train.iterations={iterations}", "train.val_every=0", *data]
    pgolf(args, cwd)
    folder = folder_of(cwd)
    _, report = pgolf(["report", str(folder), "--json"], cwd)
    cells = {c["reg.weight_decay"]: c for c in json.loads(report.stdout)}
    rows = pd.read_csv(folder / "results.csv", dtype={"reg.weight_decay": str})
    base = rows[rows["reg.weight_decay"] == "0"].set_index("seed")["val_bpb_roundtrip"]
    other = rows[rows["reg.weight_decay"] == "0.09"].set_index("seed")["val_bpb_roundtrip"]
    welch = stats.ttest_ind(other, base, equal_var=False, alternative="less").pvalue
    paired = stats.ttest_rel(other.sort_index(), base.sort_index(), alternative="less").pvalue
    got = cells["0.09"]
    print(f"seeds 3, wd 0.09 vs 0: mean {got['bpb_mean']:.5f} (std {got['bpb_std']:.5f}) vs "
          f"{cells['0']['bpb_mean']:.5f} (std {cells['0']['bpb_std']:.5f}); delta {got['delta_vs_baseline']:+.5f}")
    print(f"  p Welch: report {got['p_welch']:.6g}, scipy by hand {welch:.6g}; "
          f"p paired: report {got['p_paired']:.6g}, scipy by hand {paired:.6g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--skip-jobs", action="store_true", help="skip the --jobs 2 run of the grid")
    opts = parser.parse_args()
    data_dir = ROOT / "data" / "builtin"
    if not (data_dir / "tokenizer.model").is_file():
        subprocess.run([sys.executable, "-m", "pgolf", "data", "prepare"], cwd=ROOT, check=True)
    data = [f"data.dir={data_dir}", f"data.tokenizer={data_dir / 'tokenizer.model'}"]
    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    try:
        grid(data, opts.iterations, opts.skip_jobs, work)
        resume(data, opts.iterations, work)
        seeds(data, opts.iterations, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

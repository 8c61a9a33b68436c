"""Polar-Express Newton-Schulz against the standard coefficients in Muon: model=records_tiny on CPU.

One `pgolf train` job (`jobs.train_job.run_train`) per coefficient set and seed on the built-in corpus (vocab 1024,
prepared into data/builtin when missing), all with `model=records_tiny train=cpu_quick reg=cpu device=cpu` and the
default export; the rows differ only in `train.muon_coefficients` (standard: torch's (3.4445, -4.775, 2.0315) at each
of the 5 iterations; polar_express: the best record's 5 per-iteration tuples). A seed gives both rows the same
initial weights and the same batches, so the per-seed difference is paired.

Printed: the training loss (mean over seeds, from each run's metrics.jsonl) at a few steps, the round-trip val_bpb
(the score) of every seed, its mean and standard deviation, and the paired difference polar_express - standard.

    .venv/bin/python bench/bench_muon.py                                    # 300 steps, 3 seeds
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_muon.py --iterations 150 --seeds 2 --json runs/bench_muon.json

On a machine whose cores are shared with other jobs, run it with OMP_NUM_THREADS=1 (see bench_reg.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from pgolf import config as C
from pgolf.atomic import atomic_write_json
from pgolf.data.prepare import prepare_data
from pgolf.jobs.layout import METRICS
from pgolf.jobs.train_job import run_train

DATA_ROOT = Path(__file__).resolve().parent.parent / "data"
ROWS = ("standard", "polar_express")
"""`train.muon_coefficients` of each row."""


def data_overrides() -> list[str]:
    """The built-in corpus at vocab 1024, prepared (or found) where `pgolf data prepare` puts it."""
    prepared = prepare_data(None, DATA_ROOT / "builtin", vocab_size=1024, name="builtin")
    return [f"data.dir={prepared.dir}", f"data.tokenizer={prepared.tokenizer}"]


def train_quietly(overrides: list[str], root: str, name: str) -> dict:
    cfg = C.compose([*overrides, f"run.root={root}", f"run.name={name}"])
    started = time.perf_counter()
    summary = run_train(cfg, echo=lambda _line: None, run_dir=Path(root) / name)
    print(f"{name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return summary


def train_losses(run_dir: Path) -> dict[int, float]:
    """Step -> training loss, from the run's metrics lines."""
    lines = (run_dir / METRICS).read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300, help="training steps of each run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row, from the config's seed up")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    base = ["model=records_tiny", "train=cpu_quick", "reg=cpu", "device=cpu", f"train.iterations={args.iterations}",
            *data_overrides()]
    cfg = C.compose(base)
    seeds = [cfg.seed + i for i in range(args.seeds)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model=records_tiny train=cpu_quick reg=cpu: {args.iterations} steps x {cfg.train.batch_tokens:,} tokens "
          f"(seq {cfg.train.seq_len}), Muon lr {cfg.train.matrix_lr}, {cfg.train.muon_ns_steps} Newton-Schulz "
          f"iterations; seeds {', '.join(map(str, seeds))}")
    runs: dict[str, list[dict]] = {row: [] for row in ROWS}
    with tempfile.TemporaryDirectory(prefix="bench_muon.") as root:
        for seed in seeds:
            for row in ROWS:
                summary = train_quietly([*base, f"train.muon_coefficients={row}", f"seed={seed}"], root,
                                        f"{row}-seed{seed}")
                runs[row].append({"seed": seed, "val_bpb": summary["val_bpb"],
                                  "val_bpb_roundtrip": summary["val_bpb_roundtrip"],
                                  "train_time_s": summary["train_time_s"],
                                  "losses": train_losses(Path(summary["run_dir"]))})
    logged = sorted(set.intersection(*(set(r["losses"]) for row in ROWS for r in runs[row])))
    wanted = [logged[0], *(logged[min(len(logged) - 1, round(len(logged) * q) - 1)] for q in (0.25, 0.5, 0.75, 1.0))]
    steps = sorted(set(wanted))
    print("\ntraining loss, mean over seeds")
    print(f"{'coefficients':14} " + " ".join(f"{'step ' + str(s):>10}" for s in steps))
    for row in ROWS:
        means = [statistics.mean(r["losses"][s] for r in runs[row]) for s in steps]
        print(f"{row:14} " + " ".join(f"{m:>10.4f}" for m in means))
    print("\nround-trip val_bpb (the score)")
    print(f"{'coefficients':14} " + " ".join(f"{'seed ' + str(s):>10}" for s in seeds) + f" {'mean':>8} {'std':>8} "
          f"{'train s':>8}")
    table = {}
    for row in ROWS:
        scores = [r["val_bpb_roundtrip"] for r in runs[row]]
        table[row] = {"mean": statistics.mean(scores), "std": spread(scores),
                      "train_time_s": statistics.mean(r["train_time_s"] for r in runs[row])}
        print(f"{row:14} " + " ".join(f"{s:>10.4f}" for s in scores) + f" {table[row]['mean']:>8.4f} "
              f"{table[row]['std']:>8.4f} {table[row]['train_time_s']:>8.1f}")
    diffs = [p["val_bpb_roundtrip"] - s["val_bpb_roundtrip"] for p, s in zip(runs["polar_express"], runs["standard"])]
    print(f"polar_express - standard, paired by seed: {' '.join(f'{d:+.4f}' for d in diffs)}; mean "
          f"{statistics.mean(diffs):+.4f}, std {spread(diffs):.4f}")
    if args.json:
        atomic_write_json(args.json, {"iterations": args.iterations, "seeds": seeds, "steps": steps, "runs": runs,
                                      "table": table, "paired_differences": diffs})


if __name__ == "__main__":
    main()

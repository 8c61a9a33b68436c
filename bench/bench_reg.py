"""Regularizer presets and weight decay on the tiny model: val_bpb, round-trip val_bpb, bytes, weight stats.

    .venv/bin/python bench/bench_reg.py                        # cpu_quick schedule (300 steps)
    .venv/bin/python bench/bench_reg.py train.iterations=200   # extra overrides apply to every run

On a machine whose cores are shared with other jobs, run it with
OMP_NUM_THREADS=1: two spinning OpenMP threads per process on two busy cores
were measured 8x slower (about 800 vs 6,200 tokens/s) than one thread.

One `pgolf train` job (`experiment.run_train`) per row, on the built-in corpus
(prepared into data/builtin when missing), with `model=tiny train=cpu_quick`
and the default export (6 bits). Rows: `reg=none`, `reg=default`,
`reg=records`, and `reg=default` with weight decay 0 / 0.04 / 0.1. Runs go to
a temporary folder. Weight statistics are the block matrices' (the `matrix`
group of the run's weight diagnostics): RMS, fraction of exact zeros, and the
order-0 entropy of their 6-bit row codes in bits per weight. The unigram BPB
of the validation text is printed as the floor any trained model must beat.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from pgolf import config as C
from pgolf.data.prepare import prepare_data
from pgolf.data.shards import find_shards, read_shard
from pgolf.evaluate import unigram_bpb
from pgolf.jobs.scorer import load_val_data
from pgolf.jobs.train_job import run_train

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "builtin"
BASE = ["model=tiny", "train=cpu_quick", "device=cpu"]
ROWS = [
    ("reg=none", ["reg=none"]),
    ("reg=default", ["reg=default"]),
    ("reg=records", ["reg=records"]),
    ("default, wd 0", ["reg=default", "reg.weight_decay=0"]),
    ("default, wd 0.04", ["reg=default", "reg.weight_decay=0.04"]),
    ("default, wd 0.1", ["reg=default", "reg.weight_decay=0.1"]),
]


def unigram_floor(cfg: C.Config) -> float:
    """BPB of an add-one unigram model of the training tokens, on the validation tokens the runs score."""
    train = torch.from_numpy(read_shard(find_shards(DATA_DIR, cfg.data.train_pattern)[0]).astype("int64"))
    val = load_val_data(cfg, cfg.train.seq_len, cfg.data.val_tokens)
    return unigram_bpb(train, val.tokens, val.luts, cfg.model.vocab_size)


def main(extra: list[str]) -> None:
    prepared = prepare_data(None, DATA_DIR)
    data = [f"data.dir={prepared.dir}", f"data.tokenizer={prepared.tokenizer}"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_reg.") as root:
        for index, (label, overrides) in enumerate(ROWS):
            cfg = C.compose([*BASE, *data, *overrides, *extra, f"run.root={root}", f"run.name=row{index}"])
            started = time.perf_counter()
            summary = run_train(cfg, echo=lambda line: None)
            matrix = summary["weight_diagnostics"]["matrix"]
            rows.append({
                "config": label,
                "val_bpb": summary["val_bpb"],
                "rt_val_bpb_6bit": summary["val_bpb_roundtrip"],
                "rt_cost": summary["val_bpb_roundtrip"] - summary["val_bpb"],
                "model_bytes": summary["bytes"]["model"],
                "matrix_rms": matrix["rms"],
                "zero_frac": matrix["zero_frac"],
                "entropy_bits": matrix["entropy_bits"],
                "train_s": summary["train_time_s"],
            })
            print(f"{label}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    cfg = C.compose([*BASE, *data, *extra])
    print(f"bench_reg: model=tiny train=cpu_quick ({cfg.train.iterations} steps x {cfg.train.batch_tokens} tokens), "
          f"export bits {cfg.export.bits} clip {cfg.export.clip} codec {cfg.export.codec}, seed {cfg.seed}; "
          f"extra overrides: {' '.join(extra) or 'none'}")
    print(f"unigram floor on the same validation tokens: {unigram_floor(cfg):.4f} bpb")
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main(sys.argv[1:])

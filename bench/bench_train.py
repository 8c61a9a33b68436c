"""Training throughput on this machine: pgolf's loop vs a bare forward/backward/step reference.

For model=tiny and model=baseline: tokens/s of `pgolf.train.loop.train_model` (Muon + Adam,
the whole regularizer plumbing, reg=default) for a few steps, against a bare loop on the same
model, batch and device (forward, cross-entropy, backward, one Adam step) measured in the same
run. The ratio is pgolf's overhead; the absolute numbers say what a CPU run costs.

    python bench/bench_train.py [--steps N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pgolf.config import compose
from pgolf.data.loader import TrainBatches, load_val_tokens
from pgolf.data.prepare import prepare_data
from pgolf.data.shards import find_shards
from pgolf.data.tokenizer import build_byte_luts, load_tokenizer
from pgolf.jobs.layout import MetricsLog
from pgolf.jobs.models import build_model
from pgolf.runtime.device import resolve_device
from pgolf.runtime.distributed import DistInfo
from pgolf.train.loop import train_model

DATA = Path("data/builtin")


def bare_tokens_per_s(cfg, batches, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = batches.next_batch()
    logits = model(x)
    F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()  # warm
    opt.zero_grad()
    start = time.perf_counter()
    for _ in range(steps):
        for _ in range(cfg.train.grad_accum):
            x, y = batches.next_batch()
            F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        opt.step()
        opt.zero_grad()
    return steps * cfg.train.batch_tokens / (time.perf_counter() - start)


def pgolf_tokens_per_s(cfg, batches, val_tokens, luts, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = MetricsLog(Path(tmp) / "metrics.jsonl")
        result = train_model(cfg, model, batches, val_tokens, luts, resolve_device("cpu"), DistInfo(), metrics,
                             log=lambda _m: None)
        metrics.close()
    return result.tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    prepare_data(None, DATA)
    sp = load_tokenizer(DATA / "tokenizer.model")
    luts = build_byte_luts(sp, 1024)
    val = load_val_tokens(find_shards(DATA, "*_val_*.bin"), 256, 4096)
    train_files = find_shards(DATA, "*_train_*.bin")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps each")
    print(f"{'model':10} {'params':>12} {'batch tok':>10} {'seq':>5} {'bare tok/s':>12} {'pgolf tok/s':>12} "
          f"{'pgolf/bare':>10}")
    for model, batch_tokens, seq_len in (("tiny", 8192, 256), ("baseline", 8192, 1024)):
        cfg = compose([f"model={model}", "train=cpu_quick", f"train.batch_tokens={batch_tokens}",
                       f"train.seq_len={seq_len}", f"train.iterations={args.steps}", "train.val_every=0",
                       "train.lr_warmup_steps=0", "train.log_every=1000"])
        batches = TrainBatches(train_files, batch_tokens, seq_len, 1)
        bare = bare_tokens_per_s(cfg, batches, args.steps)
        ours = pgolf_tokens_per_s(cfg, batches, val, luts, args.steps)
        params = sum(p.numel() for p in build_model(cfg).parameters())
        print(f"{model:10} {params:>12,} {batch_tokens:>10,} {seq_len:>5} {bare:>12,.0f} {ours:>12,.0f} "
              f"{ours / bare:>10.2f}")


if __name__ == "__main__":
    main()

"""pgolf's default tiny CPU run against a plain AdamW loop on the same model and tokens.

Both run in this one process on the same prepared data (the built-in corpus by default):
(a) the plain loop: the tiny GPT (4x128, 4 heads / 2 KV heads, vocab 1024) with every matrix pgolf
starts at zero re-drawn N(0, 0.02), `torch.optim.AdamW(lr=3e-3, weight_decay=0)` on every parameter,
constant LR, no regularizers, 16 windows of 256 tokens at random positions of the training tokens
per step, 300 steps; scored as a float model by pgolf's canonical evaluation on the validation
tokens pgolf scores on. (b) `pgolf train` with the default config (train=cpu_quick, reg=cpu), the
same 300 x 4,096 tokens, scored after its export round trip. The target (issue item 9): pgolf's
round-trip val_bpb beats the plain loop's float val_bpb by at least 0.03.

    .venv/bin/python bench/bench_cpu_recipe.py [--data DIR] [--seed N] [--steps 300]

On a machine whose cores are shared with other jobs, run it with OMP_NUM_THREADS=1 (see
bench_reg.py). Figures and the commands that made them: docs/cpu_recipe.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pgolf.config import compose
from pgolf.data.shards import find_shards, read_shard
from pgolf.evaluate import evaluate_bpb
from pgolf.jobs.scorer import load_val_data
from pgolf.jobs.train_job import run_train
from pgolf.model.gpt import GPT

TARGET_MARGIN = 0.03
PLAIN_BATCH, PLAIN_SEQ_LEN, PLAIN_LR = 16, 256, 3e-3


def plain_adamw_bpb(data_overrides: list[str], seed: int, steps: int) -> float:
    """Float val_bpb of the plain AdamW loop (see the module docstring)."""
    cfg = compose(data_overrides)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    m = cfg.model
    model = GPT(vocab_size=m.vocab_size, num_layers=4, model_dim=128, num_heads=4, num_kv_heads=2)
    for block in model.blocks:  # pgolf's zero-initialised output projections
        for weight in (block.attn.proj.weight, block.mlp.proj.weight):
            torch.nn.init.normal_(weight, mean=0.0, std=0.02)
    files = find_shards(Path(cfg.data.dir), cfg.data.train_pattern)
    train = torch.from_numpy(np.concatenate([read_shard(f) for f in files]).astype(np.int64))  # (N,)
    opt = torch.optim.AdamW(model.parameters(), lr=PLAIN_LR, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        starts = rng.integers(0, train.numel() - PLAIN_SEQ_LEN - 1, size=PLAIN_BATCH).tolist()
        windows = torch.stack([train[s:s + PLAIN_SEQ_LEN + 1] for s in starts])  # (B, T + 1)
        logits = model(windows[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    val = load_val_data(cfg, cfg.train.seq_len, cfg.data.val_tokens)
    return evaluate_bpb(model, val.tokens, val.luts, cfg.train.seq_len, stride=cfg.export.eval_stride).bpb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/builtin"),
                        help="a folder made by `pgolf data prepare` (tokenizer.model and shards)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--steps", type=int, default=300, help="steps of both loops (4,096 tokens each)")
    args = parser.parse_args()
    data = [f"data.dir={args.data}", f"data.tokenizer={args.data / 'tokenizer.model'}", f"data.name={args.data.name}"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {args.data}, seed {args.seed}, "
          f"{args.steps} steps x {PLAIN_BATCH * PLAIN_SEQ_LEN:,} tokens")

    start = time.perf_counter()
    plain = plain_adamw_bpb(data, args.seed, args.steps)
    plain_s = time.perf_counter() - start

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([*data, f"run.root={tmp}", "run.name=bench", f"seed={args.seed}",
                       f"train.iterations={args.steps}"])
        summary = run_train(cfg, echo=lambda _m: None)
    pgolf_s = time.perf_counter() - start

    margin = plain - summary["val_bpb_roundtrip"]
    print(f"{'loop':28} {'float bpb':>10} {'round trip':>11} {'seconds':>8}")
    print(f"{'plain AdamW (float only)':28} {plain:10.4f} {'-':>11} {plain_s:8.1f}")
    print(f"{'pgolf train (defaults)':28} {summary['val_bpb']:10.4f} {summary['val_bpb_roundtrip']:11.4f} "
          f"{pgolf_s:8.1f}")
    print(f"margin (plain float - pgolf round trip): {margin:+.4f}; target >= {TARGET_MARGIN}: "
          f"{'met' if margin >= TARGET_MARGIN else 'NOT met'}")


if __name__ == "__main__":
    main()

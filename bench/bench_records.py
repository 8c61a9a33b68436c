"""The record-era model knobs: records_tiny against the baseline GPT on CPU, and model=records' bytes at full size.

Part 1, one `pgolf train` job (`experiment.run_train`) per row and seed on the built-in corpus (vocab 1024,
prepared into data/builtin when missing), all with `train=cpu_quick reg=cpu` and the default export (int6,
per-row MSE clip, best codec per group):
  - `model=tiny` as shipped (4 x 128, MLP 2x, no knobs);
  - the same baseline architecture at records_tiny's shape (`model.num_layers=6 model.mlp_mult=4`), the
    equal-parameter reference (1,215,896 vs 1,217,129 parameters);
  - `model=records_tiny` (6 x 128, MLP 4x, every knob of the best record on).
Columns: parameters, steps, training tokens/s, float and round-trip val_bpb (the score), artifact and total bytes;
means over the seeds. tokens/s is the run's average, so records_tiny's includes the looped layers from 35% of
training on.

Part 2, `model=records reg=records` (the best record's 11 x 512 model, vocab 8192) on the built-in corpus at vocab
8192 (data/builtin_sp8192, prepared as `pgolf data prepare --vocab-size 8192` would when missing): its parameter
count and the bytes of its int6 artifact (`export.bits=6`, default clip and codec), split by tensor group, for
  - the weights at init (`export_state_dict` on the seed run_train starts from; attn.proj and mlp.proj are all
    zero there, so this undercounts a trained model);
  - after `--full-steps` CPU training steps (`run_train`: 8,192-token batches of 1,024-token sequences, no warmup
    or warmdown, scored on the first 8,192 validation tokens only; its val_bpb means nothing, its bytes do);
  - both again with the record's clip (sdclip at 12.85 sigmas, its MATRIX_CLIP_SIGMAS) instead of the MSE search.
Against the record's own artifact, 15,865,260 model bytes (docs/records_model.md, GPTQ + int7 embedding + lrzip),
and the challenge's 16,000,000 total.

    .venv/bin/python bench/bench_records.py                        # both parts: 300 steps, 1 seed; 3 full steps
    .venv/bin/python bench/bench_records.py --iterations 150 --seeds 3 --skip-full --json runs/bench_records.json

On a machine whose cores are shared with other jobs, run it with OMP_NUM_THREADS=1 (see bench_reg.py). One step
of the full-size model takes about a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from pgolf import config as C
from pgolf.atomic import atomic_write_json
from pgolf.data.prepare import prepare_data
from pgolf.export.artifact import export_state_dict
from pgolf.jobs.float_checkpoint import load_checkpoint
from pgolf.jobs.models import build_model
from pgolf.jobs.start import seed_everything
from pgolf.jobs.train_job import run_train

DATA_ROOT = Path(__file__).resolve().parent.parent / "data"
SMALL_ROWS = [
    ("tiny", ["model=tiny"]),
    ("baseline at 6x128 MLP 4x", ["model=tiny", "model.num_layers=6", "model.mlp_mult=4"]),
    ("records_tiny", ["model=records_tiny"]),
]
RECORD_MODEL_BYTES = 15_865_260
"""The best record's model bytes (seed 42, docs/records_model.md)."""
CHALLENGE_BYTES = 16_000_000
RECORD_CLIP = ["export.clip=sdclip", "export.clip_k=12.85"]
"""The record's clip: k * std(row) with k = MATRIX_CLIP_SIGMAS (it uses 13.0 / 11.5 for attn / mlp names)."""
FULL_BATCH_TOKENS = 8192
FULL_TRAIN = [f"train.batch_tokens={FULL_BATCH_TOKENS}", "train.seq_len=1024", "train.warmup_steps=0",
              "train.lr_warmup_steps=0", "train.warmdown_steps=0", "train.val_every=0", "train.log_every=1",
              "data.val_tokens=8192"]
GROUP_COLUMNS = {"embed_bytes": ["embed"], "attn_bytes": ["attn_q", "attn_k", "attn_v", "attn_out"],
                 "mlp_bytes": ["mlp_in", "mlp_out"]}
"""Part-2 byte columns: export tensor groups (export/quantize.py GROUPS) summed."""


def data_overrides(vocab_size: int) -> list[str]:
    """The built-in corpus at `vocab_size`, prepared (or found) where `pgolf data prepare` puts it."""
    name = "builtin" if vocab_size == 1024 else f"builtin_sp{vocab_size}"
    prepared = prepare_data(None, DATA_ROOT / name, vocab_size=vocab_size, name="builtin")
    return [f"data.dir={prepared.dir}", f"data.tokenizer={prepared.tokenizer}"]


def train_quietly(overrides: list[str], root: str, name: str) -> dict:
    cfg = C.compose([*overrides, f"run.root={root}", f"run.name={name}"])
    started = time.perf_counter()
    summary = run_train(cfg, echo=lambda _line: None, run_dir=Path(root) / name)
    print(f"{name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return summary


def small_models(args: argparse.Namespace, root: str) -> dict:
    base = ["train=cpu_quick", "reg=cpu", "device=cpu", *data_overrides(1024)]
    if args.iterations:
        base.append(f"train.iterations={args.iterations}")
    seed0 = C.compose(base).seed
    seeds = [seed0 + i for i in range(args.seeds)]
    rows, runs = [], []
    for index, (label, overrides) in enumerate(SMALL_ROWS):
        summaries = [train_quietly([*base, *overrides, f"seed={seed}"], root, f"small{index}-seed{seed}")
                     for seed in seeds]
        runs += [{"config": label, "seed": s["seed"], **pick(s)} for s in summaries]
        rows.append({"config": label, **{key: statistics.mean(pick(s)[key] for s in summaries)
                                         for key in pick(summaries[0])}})
    cfg = C.compose(base)
    title = (f"part 1: built-in corpus (vocab 1024), train=cpu_quick ({cfg.train.iterations} steps x "
             f"{cfg.train.batch_tokens:,} tokens, seq {cfg.train.seq_len}), reg=cpu, export int{cfg.export.bits} "
             f"clip {cfg.export.clip} codec {cfg.export.codec}; seeds {', '.join(map(str, seeds))} (means)")
    print(title)
    print(f"{'model':26} {'params':>10} {'steps':>5} {'tok/s':>7} {'train s':>7} {'val_bpb':>7} {'rt bpb':>7} "
          f"{'model B':>9} {'total B':>9}")
    for r in rows:
        print(f"{r['config']:26} {r['params']:>10,.0f} {r['steps']:>5.0f} {r['tokens_per_s']:>7,.0f} "
              f"{r['train_time_s']:>7.1f} {r['val_bpb']:>7.4f} {r['val_bpb_roundtrip']:>7.4f} "
              f"{r['model_bytes']:>9,.0f} {r['total_bytes']:>9,.0f}")
    matched, records = rows[1], rows[2]
    print(f"records_tiny - matched baseline: {records['val_bpb_roundtrip'] - matched['val_bpb_roundtrip']:+.4f} "
          f"round-trip bpb, {records['tokens_per_s'] / matched['tokens_per_s']:.2f}x tokens/s, "
          f"{records['model_bytes'] - matched['model_bytes']:+,.0f} model bytes")
    return {"title": title, "seeds": seeds, "rows": rows, "runs": runs}


def pick(summary: dict) -> dict:
    return {"params": summary["params"], "steps": summary["steps"], "tokens_per_s": summary["tokens_per_s"],
            "train_time_s": summary["train_time_s"], "val_bpb": summary["val_bpb"],
            "val_bpb_roundtrip": summary["val_bpb_roundtrip"], "model_bytes": summary["bytes"]["model"],
            "total_bytes": summary["bytes"]["total"]}


def export_row(label: str, steps: int, groups: list[dict], model_bytes: int) -> dict:
    """One part-2 row: model bytes, split into the embedding, attention and MLP groups and the rest (control
    tensors kept float, the header)."""
    by_group = {g["group"]: g["bytes"] for g in groups}
    split = {key: sum(by_group.get(g, 0) for g in names) for key, names in GROUP_COLUMNS.items()}
    return {"weights": label, "steps": steps, "model_bytes": model_bytes, **split,
            "rest_bytes": model_bytes - sum(split.values())}


def export_bytes(label: str, steps: int, state_dict: dict[str, torch.Tensor], model_config: dict,
                 cfg: C.Config) -> dict:
    started = time.perf_counter()
    result = export_state_dict(state_dict, model_config, cfg.export)
    seconds = time.perf_counter() - started
    print(f"{label}: exported in {seconds:.0f} s", file=sys.stderr, flush=True)
    return {**export_row(label, steps, result.groups, result.model_bytes), "export_s": seconds}


def full_model(args: argparse.Namespace, root: str) -> dict:
    base = ["model=records", "reg=records", "data=builtin_sp8192", "export.bits=6", "device=cpu",
            *data_overrides(8192)]
    cfg, record_clip = C.compose(base), C.compose([*base, *RECORD_CLIP])
    seed_everything(cfg.seed)  # the weights run_train starts from
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    init, init_config = model.state_dict(), dict(model.config)
    init_zeros = sum(int((t == 0).sum()) for t in init.values())
    rows = [export_bytes("init", 0, init, init_config, cfg),
            export_bytes("init, record's clip", 0, init, init_config, record_clip)]
    summary = train_quietly([*base, *FULL_TRAIN, f"train.iterations={args.full_steps}"], root, "full")
    steps = summary["steps"]
    rows.append(export_row(f"{steps} steps", steps, summary["export_groups"], summary["bytes"]["model"]))
    trained_config, trained = load_checkpoint(Path(summary["run_dir"]) / "model.safetensors")
    rows.append(export_bytes(f"{steps} steps, record's clip", steps, trained, trained_config, record_clip))

    code = summary["bytes"]["code"]
    title = (f"part 2: model=records reg=records, {params:,} parameters (vocab {cfg.model.vocab_size}); int6 "
             f"artifact, clip {cfg.export.clip} (record's clip: sdclip k={record_clip.export.clip_k}), codec "
             f"{cfg.export.codec}; the record: {RECORD_MODEL_BYTES:,} model bytes")
    print(title)
    print(f"{'weights':26} {'model B':>11} {'embed B':>10} {'attn B':>10} {'mlp B':>11} {'rest B':>8} "
          f"{'vs record':>11} {'16MB headroom':>13}")
    for r in rows:
        total = r["model_bytes"] + code
        print(f"{r['weights']:26} {r['model_bytes']:>11,} {r['embed_bytes']:>10,} {r['attn_bytes']:>10,} "
              f"{r['mlp_bytes']:>11,} {r['rest_bytes']:>8,} {r['model_bytes'] - RECORD_MODEL_BYTES:>+11,} "
              f"{CHALLENGE_BYTES - total:>+13,}")
    print(f"headroom = 16,000,000 - model - {code:,} code bytes (the train_gpt.py `pgolf pack` would ship); at init "
          f"{init_zeros:,} weights are exactly 0 (attn.proj and mlp.proj start at zero)")
    print(f"training on CPU: {summary['tokens_per_s']:,.0f} tokens/s, {summary['train_time_s']:.0f} s for {steps} "
          f"steps of {FULL_BATCH_TOKENS:,} tokens")
    return {"title": title, "params": params, "record_model_bytes": RECORD_MODEL_BYTES, "code_bytes": code,
            "init_zero_weights": init_zeros, "tokens_per_s": summary["tokens_per_s"],
            "train_time_s": summary["train_time_s"], "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=0,
                        help="training steps of each part-1 run (default: train=cpu_quick's, 300)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per part-1 row, from the config's seed up")
    parser.add_argument("--full-steps", type=int, default=3, help="CPU training steps of the full-size model")
    parser.add_argument("--skip-full", action="store_true", help="run part 1 only")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_records.") as root:
        results["small"] = small_models(args, root)
        if not args.skip_full:
            print()
            results["full"] = full_model(args, root)
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()

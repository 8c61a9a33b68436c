"""Training-step throughput and MFU: pgolf's loop against the reference train_gpt.py, same device, one run.

Both rows train the same model (`--model`, baseline = the 9x512 reference) on the same batch: by
default the reference's, 524,288 tokens per step of seq_len 1024, as grad_accum 8 micro-batches of
65,536 tokens (its single-GPU setting, world_size 1). On CPU the default batch is 8,192 tokens in one
micro-batch.

- pgolf: `pgolf.train.loop.train_model` (the real loop) composed from `model=<m> train=h100_10min
  reg=none reg.softcap=30` (the reference's recipe: softcap 30, no decay, clipping, EMA or ln_scale;
  on CPU also `train.compile=false`), its `--warmup` steps undone by the loop and excluded from its
  `TrainResult.tokens_per_s`. Cross-checks: a synchronised clock between the first and last timed
  step's first micro-batch, and the whole call (warmup, compile and the final CPU copy included).
- reference: the file named by PGOLF_REFERENCE_SCRIPT (default ../parameter-golf/train_gpt.py next to
  this repository), imported with importlib (importing it reads its env vars and nothing else) and
  built as its main() does: bf16 model with CastedLinear kept float, `restore_low_dim_params_to_fp32`,
  `torch.compile(dynamic=False, fullgraph=True)` and its compiled Newton-Schulz, flash-only SDPA, Muon
  for block matrices and fused Adam for embedding and scalars; each step is its main loop's body
  (bf16 autocast, loss * grad_scale backward, momentum and lr set, optimizer steps, zero_grad, the
  loss .item() of its step<=10 log lines). On CPU both rows run float32, uncompiled, without autocast.
- Batches: micro-batches drawn once by pgolf's loader from synthetic random-token shards
  (`write_shard`) onto the device and shared by both rows (at most 64, reused in turn): no data
  loading in either timing. pgolf runs first and is freed before the reference is built.

MFU = tokens/s * FLOPs per token / peak dense bf16 FLOP/s, with
    FLOPs per token = 6 * N + 12 * L * T * d / 2
N = non-embedding parameters + vocab * d (the tied head's matmul), L layers, T = seq_len, d = width;
the second term is attention (QK^T and AV, forward and backward) halved for the causal mask. Peak:
H100 SXM / H200 989 TFLOP/s, H100 PCIe 756 (by torch.cuda.get_device_name), else `--peak-tflops`.
Peak memory: the rise of torch.cuda.max_memory_allocated (CPU: the RSS high-water mark, bench/rss.py)
above what was allocated before the model was built (the shared batches excluded).

    PGOLF_REFERENCE_SCRIPT=../parameter-golf/train_gpt.py python bench/bench_gpu.py [--steps 20] [--warmup 5]
    python bench/bench_gpu.py --device cpu --model tiny --batch-tokens 8192 --steps 5
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rss import peak_mb_since, reset_peak

from pgolf.atomic import atomic_write_json
from pgolf.config import compose
from pgolf.data.loader import TrainBatches
from pgolf.data.shards import write_shard
from pgolf.data.tokenizer import byte_luts
from pgolf.errors import PgolfError
from pgolf.jobs.layout import MetricsLog
from pgolf.jobs.models import build_model
from pgolf.runtime.device import resolve_device
from pgolf.runtime.distributed import DistInfo
from pgolf.train.loop import train_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = ROOT.parent / "parameter-golf" / "train_gpt.py"
REFERENCE_NAMES = ("Hyperparameters", "GPT", "CastedLinear", "Muon", "restore_low_dim_params_to_fp32",
                   "zeropower_via_newtonschulz5", "CONTROL_TENSOR_NAME_PATTERNS")
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0))  # dense, first match wins
POOL_MICRO_BATCHES = 64
SEED = 1337


class DeviceBatches:
    """Pre-drawn micro-batches served in turn, with the loader's position state (the loop's warmup restores it).

    `served` counts every call, restores included; a synchronised clock is stamped at the calls in `stamp_at`.
    """

    def __init__(self, pool: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device):
        self.pool, self.device = pool, device
        self.reset()

    def reset(self, stamp_at: tuple[int, ...] = ()) -> None:
        self.position, self.served, self.stamp_at, self.stamps = 0, 0, stamp_at, {}

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.served in self.stamp_at:
            synchronize(self.device)
            self.stamps[self.served] = time.perf_counter()
        batch = self.pool[self.position % len(self.pool)]
        self.position += 1
        self.served += 1
        return batch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_mark(device: torch.device) -> int | None:
    """Start a peak-memory window; the bytes (CUDA) or kB of RSS (CPU) held now."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return reset_peak()


def peak_mib_since(device: torch.device, mark: int | None) -> float:
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) - mark) / 2**20
    return peak_mb_since(mark)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def load_reference():
    """The reference train_gpt.py as a module (its main() is guarded; importing reads env vars only)."""
    path = Path(os.environ.get("PGOLF_REFERENCE_SCRIPT", DEFAULT_REFERENCE)).expanduser()
    if not path.is_file():
        sys.exit(f"bench_gpu: reference script not found at {path}; set PGOLF_REFERENCE_SCRIPT=/path/to/"
                 "parameter-golf/train_gpt.py (git clone https://github.com/openai/parameter-golf)")
    spec = importlib.util.spec_from_file_location("reference_train_gpt", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a records script may import flash_attn_interface and the like
        sys.exit(f"bench_gpu: cannot import the reference {path}: {type(exc).__name__}: {exc}")
    missing = [name for name in REFERENCE_NAMES if not hasattr(module, name)]
    if missing:
        sys.exit(f"bench_gpu: {path} lacks {', '.join(missing)}; point PGOLF_REFERENCE_SCRIPT at the root "
                 "train_gpt.py of openai/parameter-golf")
    return module, path


def flops_per_token(params: int, m, seq_len: int) -> float:
    """6 * (non-embedding params + the tied head's matmul params) + 12 * L * T * d / 2 (causal attention)."""
    matmul_params = params - m.vocab_size * m.model_dim + (m.vocab_size * m.model_dim if m.tie_embeddings else 0)
    return 6 * matmul_params + 12 * m.num_layers * seq_len * m.model_dim / 2


def peak_flops(device: torch.device, peak_tflops: float | None) -> float | None:
    if peak_tflops is not None:
        return peak_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def draw_batches(cfg, count: int, device: torch.device, folder: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` micro-batches read by pgolf's loader from a synthetic random-token shard, on `device`."""
    t = cfg.train
    local_tokens = t.batch_tokens // t.grad_accum
    tokens = np.random.default_rng(SEED).integers(0, cfg.model.vocab_size, count * (local_tokens + 1))
    write_shard(folder / "synthetic_train_000000.bin", tokens)
    loader = TrainBatches([folder / "synthetic_train_000000.bin"], t.batch_tokens, t.seq_len, t.grad_accum,
                          device=device)
    return [loader.next_batch() for _ in range(count)]


def time_pgolf(cfg, batches: DeviceBatches, setup, folder: Path, warmup: int, steps: int) -> dict:
    """train_model for `steps` timed steps; its own tokens/s plus two synchronised cross-checks."""
    device = setup.device
    ga = cfg.train.grad_accum
    first, last = warmup * ga, (warmup + steps - 1) * ga  # first micro-batch of the first / last timed step
    batches.reset(stamp_at=(first, last))
    val_tokens = torch.randint(0, cfg.model.vocab_size, (cfg.train.seq_len * 4 + 1,))
    luts = byte_luts(cfg.model.vocab_size)
    torch.manual_seed(SEED)
    mark = memory_mark(device)
    model = build_model(cfg).to(device)
    metrics = MetricsLog(folder / "metrics.jsonl")
    synchronize(device)
    start = time.perf_counter()
    result = train_model(cfg, model, batches, val_tokens, luts, setup, DistInfo(), metrics, log=lambda _m: None)
    synchronize(device)
    call_s = time.perf_counter() - start
    metrics.close()
    if result.steps != steps:
        raise SystemExit(f"bench_gpu: pgolf trained {result.steps} of {steps} steps ({result.stop_reason}"
                         f"{': ' + result.error if result.error else ''})")
    clock_ms = float("nan")
    if steps > 1 and batches.served == (warmup + steps) * ga:
        clock_ms = 1000 * (batches.stamps[last] - batches.stamps[first]) / (steps - 1)
    return {"ms_per_step": 1000 * cfg.train.batch_tokens / result.tokens_per_s, "tokens_per_s": result.tokens_per_s,
            "peak_mib": peak_mib_since(device, mark), "clock_ms_per_step": clock_ms, "call_s": call_s}


@contextlib.contextmanager
def reference_sdp_backends(device: torch.device):
    """Flash-only scaled_dot_product_attention, as the reference's main() sets it; restored after."""
    if device.type != "cuda":
        yield
        return
    b = torch.backends.cuda
    saved = (b.cudnn_sdp_enabled(), b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled())
    for enable, on in zip((b.enable_cudnn_sdp, b.enable_flash_sdp, b.enable_mem_efficient_sdp, b.enable_math_sdp),
                          (False, True, False, False)):
        enable(on)
    try:
        yield
    finally:
        for enable, on in zip((b.enable_cudnn_sdp, b.enable_flash_sdp, b.enable_mem_efficient_sdp,
                               b.enable_math_sdp), saved):
            enable(on)


def build_reference(ref, m, device: torch.device):
    """Its GPT at pgolf's `model` shape with its Hyperparameters otherwise, cast and split as in its main()."""
    args = ref.Hyperparameters()
    cuda = device.type == "cuda"
    torch.manual_seed(SEED)
    model = ref.GPT(vocab_size=m.vocab_size, num_layers=m.num_layers, model_dim=m.model_dim, num_heads=m.num_heads,
                    num_kv_heads=m.num_kv_heads, mlp_mult=m.mlp_mult, tie_embeddings=args.tie_embeddings,
                    tied_embed_init_std=args.tied_embed_init_std, logit_softcap=args.logit_softcap,
                    rope_base=args.rope_base, qk_gain_init=args.qk_gain_init).to(device)
    if cuda:
        model = model.bfloat16()
        for module in model.modules():
            if isinstance(module, ref.CastedLinear):
                module.float()
        ref.restore_low_dim_params_to_fp32(model)
        ref.zeropower_via_newtonschulz5 = torch.compile(ref.zeropower_via_newtonschulz5)
    compiled = torch.compile(model, dynamic=False, fullgraph=True) if cuda else model
    named = list(model.blocks.named_parameters())
    control = ref.CONTROL_TENSOR_NAME_PATTERNS
    matrix_params = [p for n, p in named if p.ndim == 2 and not any(c in n for c in control)]
    scalar_params = [p for n, p in named if p.ndim < 2 or any(c in n for c in control)]
    if model.skip_weights.numel() > 0:
        scalar_params.append(model.skip_weights)
    token_lr = args.tied_embed_lr if args.tie_embeddings else args.embed_lr
    adam = dict(betas=(args.beta1, args.beta2), eps=args.adam_eps, fused=True)
    muon = ref.Muon(matrix_params, lr=args.matrix_lr, momentum=args.muon_momentum,
                    backend_steps=args.muon_backend_steps)
    for group in muon.param_groups:
        group["base_lr"] = args.matrix_lr
    optimizers = [torch.optim.Adam([{"params": [model.tok_emb.weight], "lr": token_lr, "base_lr": token_lr}], **adam),
                  muon,
                  torch.optim.Adam([{"params": scalar_params, "lr": args.scalar_lr, "base_lr": args.scalar_lr}],
                                   **adam)]
    if model.lm_head is not None:
        optimizers.insert(1, torch.optim.Adam(
            [{"params": [model.lm_head.weight], "lr": args.head_lr, "base_lr": args.head_lr}], **adam))
    return args, model, compiled, muon, optimizers


def reference_step(args, model, compiled, muon, optimizers, batches, grad_accum: int, step: int,
                   device: torch.device) -> torch.Tensor:
    """One step of the reference's main loop (world_size 1); `step` counts from 0 as there."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    train_loss = torch.zeros((), device=device)
    for _ in range(grad_accum):
        x, y = batches.next_batch()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = compiled(x, y)
        train_loss += loss.detach()
        (loss * (1.0 / grad_accum)).backward()
    train_loss /= grad_accum
    frac = min(step / args.muon_momentum_warmup_steps, 1.0) if args.muon_momentum_warmup_steps > 0 else 1.0
    for group in muon.param_groups:
        group["momentum"] = (1 - frac) * args.muon_momentum_warmup_start + frac * args.muon_momentum
    scale = 1.0  # its lr_mul: 1 until the warmdown (the last 1,200 steps of its 600 s cap), which these never reach
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * scale
    if args.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm)
    for opt in optimizers:
        opt.step()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return train_loss


def time_reference(ref, cfg, batches: DeviceBatches, device: torch.device, warmup: int, steps: int) -> dict:
    ga = cfg.train.grad_accum
    batches.reset()
    mark = memory_mark(device)
    with reference_sdp_backends(device):
        args, model, compiled, muon, optimizers = build_reference(ref, cfg.model, device)
        for step in range(warmup):
            reference_step(args, model, compiled, muon, optimizers, batches, ga, step, device)
        batches.reset()  # its main restarts the loader after the warmup
        synchronize(device)
        start = time.perf_counter()
        for step in range(steps):
            loss = reference_step(args, model, compiled, muon, optimizers, batches, ga, step, device)
            if args.train_log_every > 0 and (step + 1 <= 10 or (step + 1) % args.train_log_every == 0):
                loss.item()  # its train log line
        synchronize(device)
        elapsed_s = time.perf_counter() - start
    tokens_per_s = steps * cfg.train.batch_tokens / elapsed_s
    return {"ms_per_step": 1000 * elapsed_s / steps, "tokens_per_s": tokens_per_s,
            "peak_mib": peak_mib_since(device, mark)}


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours is not None and theirs and np.isfinite(theirs) else None


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


def render(rows: dict[str, dict], flops: float, peak: float | None) -> list[str]:
    """The table, one line each; adds `mfu` to the rows."""
    for row in rows.values():
        row["mfu"] = row["tokens_per_s"] * flops / peak if peak else None
    lines = [f"{'':11} {'ms/step':>10} {'tokens/s':>12} {'MFU':>7} {'peak MiB':>10}"]
    for name, r in rows.items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append(f"{name:11} {r['ms_per_step']:>10.1f} {r['tokens_per_s']:>12,.0f} {mfu:>7} "
                     f"{r['peak_mib']:>10,.0f}")
    ours, ref = rows["pgolf"], rows["reference"]
    cells = [ratio(ours[k], ref[k]) for k in ("ms_per_step", "tokens_per_s", "mfu", "peak_mib")]
    text = [f"{c:.3f}x" if c is not None and np.isfinite(c) else "n/a" for c in cells]
    lines.append(f"{'pgolf/ref':11} {text[0]:>10} {text[1]:>12} {text[2]:>7} {text[3]:>10}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", choices=("baseline", "tiny"), default="baseline")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, kernels)")
    parser.add_argument("--batch-tokens", type=int, help="tokens per step (default 524,288 on CUDA, 8,192 on CPU)")
    parser.add_argument("--grad-accum", type=int, help="micro-batches per step (default 8 on CUDA, 1 on CPU)")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s for MFU (default: by GPU name)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    batch_tokens = args.batch_tokens or (524_288 if device.type == "cuda" else 8_192)
    grad_accum = args.grad_accum or (8 if device.type == "cuda" else 1)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    ref, ref_path = load_reference()
    try:
        cfg = compose([f"model={args.model}", "train=h100_10min", "reg=none", "reg.softcap=30",
                       f"train.batch_tokens={batch_tokens}", f"train.grad_accum={grad_accum}",
                       f"train.iterations={args.steps}", "train.wallclock_s=0", "train.val_every=0",
                       f"train.warmup_steps={args.warmup}", f"train.log_every={args.steps}", f"device={args.device}"]
                      + ([] if device.type == "cuda" else ["train.compile=false"]))
        setup = resolve_device(cfg.device, cfg.train.compile)
        with tempfile.TemporaryDirectory() as tmp:
            count = min((args.warmup + args.steps) * grad_accum, POOL_MICRO_BATCHES)
            batches = DeviceBatches(draw_batches(cfg, count, setup.device, Path(tmp)), setup.device)
            params = sum(p.numel() for p in build_model(cfg).parameters())
            flops = flops_per_token(params, cfg.model, cfg.train.seq_len)
            ours = time_pgolf(cfg, batches, setup, Path(tmp), args.warmup, args.steps)
            free_memory(setup.device)
            theirs = time_reference(ref, cfg, batches, setup.device, args.warmup, args.steps)
    except PgolfError as exc:
        sys.exit(f"bench_gpu: {exc}")
    rows = {"reference": theirs, "pgolf": ours}
    shape = ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult")
    theirs_shape = {k: getattr(ref.Hyperparameters, k) for k in shape}
    if args.model == "baseline" and theirs_shape != {k: getattr(cfg.model, k) for k in shape}:
        print(f"note: the reference's Hyperparameters (its env vars) give {theirs_shape}; both rows use pgolf's "
              "model=baseline shape")
    peak = peak_flops(setup.device, args.peak_tflops)
    name = torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else "cpu"
    peak_note = f"peak {peak / 1e12:.0f} TFLOP/s bf16 dense" if peak else "MFU n/a (no known peak: --peak-tflops)"
    print(f"device: {name}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {peak_note}")
    print(f"model={args.model} ({params:,} params, {flops / 1e6:.1f} MFLOP/token = 6*N + 6*L*T*d); "
          f"{batch_tokens:,} tokens/step = {grad_accum} x {batch_tokens // grad_accum:,} (seq_len "
          f"{cfg.train.seq_len}), world_size 1; {args.warmup} warmup + {args.steps} timed steps each")
    cpu_note = "" if setup.device.type == "cuda" else " (CPU: float32, not compiled)"
    print(f"pgolf: {setup.description}; reference: {ref_path}{cpu_note}")
    for line in render(rows, flops, peak):
        print(line)
    if setup.device.type != "cuda":
        print("CPU peak MiB: rise of the RSS high-water mark; the reference runs second and reuses memory pgolf "
              "freed, so its figure reads low")
    clock = (f"{ours['clock_ms_per_step']:.1f} ms/step on a synchronised clock over steps 1..{args.steps - 1}"
             if np.isfinite(ours["clock_ms_per_step"]) else "no synchronised clock (needs --steps >= 2)")
    print(f"pgolf cross-check: {clock}; {ours['call_s']:.1f} s for the whole train_model call (warmup, compile "
          "and final copy included)")
    if args.json:
        atomic_write_json(args.json, {
            "device": name, "torch": torch.__version__, "model": args.model, "params": params,
            "batch_tokens": batch_tokens, "grad_accum": grad_accum, "seq_len": cfg.train.seq_len,
            "world_size": 1, "warmup_steps": args.warmup, "steps": args.steps, "flops_per_token": flops,
            "peak_flops": peak, "reference_script": str(ref_path),
            "rows": {row: {k: finite_or_none(v) for k, v in figures.items()} for row, figures in rows.items()},
            "pgolf_over_reference": {k: finite_or_none(ratio(ours[k], theirs[k]))
                                     for k in ("ms_per_step", "tokens_per_s", "mfu", "peak_mib")}})


if __name__ == "__main__":
    main()

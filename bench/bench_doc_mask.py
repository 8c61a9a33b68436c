"""Document-masked attention on this machine: which kernel model.doc_mask should use, by measurement.

Forward + backward of one attention call at records_tiny-like shapes (8 x 256 tokens, 4 query / 2 KV heads of 32,
documents of ~100 tokens), against causal SDPA measured in the same run: masked SDPA (a boolean mask), and
flex_attention eager and compiled (CPU: forward only where it has no backward). The output of each is compared with
masked SDPA's.

    python bench/bench_doc_mask.py [--batch 8] [--seq 256] [--reps 10]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from pgolf.model.doc_mask import DocumentMask, block_mask
from pgolf.model.knobs import BOS_ID


def timed(fn, args: tuple, reps: int, backward: bool) -> float:
    def once():
        out = fn(*args)
        if backward:
            out.sum().backward()
        return out

    once()  # warm up (and compile)
    start = time.perf_counter()
    for _ in range(reps):
        once()
    return (time.perf_counter() - start) / reps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    torch.manual_seed(0)
    B, T = args.batch, args.seq
    q, k, v = (torch.randn(B, h, T, 32, requires_grad=True) for h in (4, 2, 2))
    ids = torch.randint(BOS_ID + 3, 1024, (B, T))
    ids[torch.rand(B, T) < 0.01] = BOS_ID
    mask = DocumentMask(ids)
    doc = torch.cumsum(ids == BOS_ID, dim=1)
    blocks = block_mask(doc)
    compiled = torch.compile(flex_attention)
    reference = mask.attend(q, k, v)
    kernels = {
        "causal SDPA (no mask)": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                               enable_gqa=True),
        "masked SDPA (pgolf, CPU)": mask.attend,
        "flex_attention eager": lambda q, k, v: flex_attention(q, k, v, block_mask=blocks, enable_gqa=True),
        "flex_attention compiled": lambda q, k, v: compiled(q, k, v, block_mask=blocks, enable_gqa=True),
    }
    frozen = tuple(t.detach() for t in (q, k, v))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {B} x {T} tokens, "
          f"{int((doc.amax(1) - doc.amin(1) + 1).sum())} documents")
    print(f"{'kernel':<28}{'fwd+bwd ms':>12}{'fwd ms':>10}{'max |diff|':>12}")
    for name, fn in kernels.items():
        try:
            with torch.no_grad():
                diff = (fn(*frozen) - reference).abs().max().item()
                forward = timed(fn, frozen, args.reps, backward=False)
        except Exception as exc:  # a kernel this build cannot run here
            print(f"{name:<28}{'-':>12}{'-':>10}  {type(exc).__name__}: {str(exc).splitlines()[0][:60]}")
            continue
        try:
            both = f"{timed(fn, (q, k, v), args.reps, backward=True):12.1f}"
        except NotImplementedError:  # flex_attention has no backward on CPU
            both = f"{'no bwd':>12}"
        print(f"{name:<28}{both}{forward:10.1f}{diff:12.2e}")


if __name__ == "__main__":
    main()

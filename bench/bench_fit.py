"""fit-budget against an exhaustive uniform grid, at budgets that bite.

For each budget (a share of the checkpoint's int8 size, same clip and codec),
runs `pgolf.fit.fit_budget` and a grid of "same bits everywhere" x a few
selective-pruning fractions, exported and scored by the same path on the same
capped validation set, and prints: the search's round-trip val_bpb vs the best
grid point that fits, bytes used / (budget - margin), BPB evaluations, wall time.

    .venv/bin/python bench/bench_fit.py runs/latest --shares 0.9,0.7,0.5 --val-tokens 8192
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from pgolf import config as C
from pgolf.bundle.code_bytes import count_code_bytes
from pgolf.export.artifact import export_state_dict, write_artifact
from pgolf.fit.budget import fit_budget
from pgolf.jobs.layout import float_weights
from pgolf.jobs.scorer import Scorer
from pgolf.jobs.sources import config_for_source, load_any
from pgolf.runtime.device import resolve_device

GRID_BITS = (4, 5, 6, 7, 8)
GRID_PRUNE = (0.0, 0.02, 0.05, 0.1)


def grid_best(state, model_config, cfg, scorer: Scorer, limit_total, code_bytes, tmp: Path
              ) -> tuple[float, int, str, int]:
    """(best round-trip BPB among fitting grid points, its total bytes, its label, grid exports)."""
    best = (float("inf"), 0, "none fits", 0)
    exports = 0
    for bits in GRID_BITS:
        for prune in GRID_PRUNE:
            e = dataclasses.replace(cfg.export, bits=bits, group_bits=C.GroupBits(**dict.fromkeys(
                ("embed", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_out", "other"), bits)),
                prune=prune, prune_kind="selective", codec="rans")
            result = export_state_dict(state, model_config, e)
            exports += 1
            total = result.model_bytes + code_bytes
            if total > limit_total:
                continue
            path = tmp / f"grid-{bits}-{prune}.pgolf"
            write_artifact(path, result)
            bpb = scorer.score_artifact(path).bpb
            if bpb < best[0]:
                best = (bpb, total, f"int{bits} prune{prune:g}", exports)
    return best[0], best[1], best[2], exports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--shares", default="0.9,0.7,0.5", help="budgets as shares of the int8 size")
    parser.add_argument("--val-tokens", type=int, default=8192, help="capped validation set (search and final)")
    parser.add_argument("--margin", type=int, default=0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    cfg = config_for_source(args.source, [*args.overrides, f"data.val_tokens={args.val_tokens}",
                                          f"fit.val_tokens={args.val_tokens}"])
    model_config, state, _ = load_any(float_weights(args.source))
    cfg.model.vocab_size = model_config["vocab_size"]
    code_bytes = count_code_bytes(cfg)
    int8 = export_state_dict(state, model_config, dataclasses.replace(
        cfg.export, bits=8, group_bits=C.GroupBits(**dict.fromkeys(("embed",), 8)), codec="rans", prune=0.0))
    int8_total = int8.model_bytes + code_bytes
    scorer = Scorer.load(cfg, resolve_device(cfg.device))
    val = scorer.val
    print(f"{args.source}: {sum(t.numel() for t in state.values()):,} params, int8 ({cfg.export.clip}, rans) "
          f"{int8_total:,} bytes with code; val {val.tokens.numel() - 1:,} tokens; torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'share':>5} {'budget':>11} {'fit bpb':>8} {'grid bpb':>8} {'diff':>9} {'used':>7} {'evals':>5} "
          f"{'fit s':>6} {'grid s':>6}  fit choice | grid choice")
    for share in (float(s) for s in args.shares.split(",")):
        budget = int(int8_total * share)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "model.safetensors"
            src.symlink_to(Path(args.source).resolve() / "model.safetensors" if Path(args.source).is_dir()
                           else Path(args.source).resolve())
            started = time.time()
            fit = fit_budget(src, dataclasses.replace(cfg), budget, args.margin).summary
            fit_s = time.time() - started
            started = time.time()
            grid_bpb, grid_total, grid_label, _ = grid_best(state, model_config, cfg, scorer, budget - args.margin,
                                                            code_bytes, Path(tmp))
            grid_s = time.time() - started
        used = fit["bytes"]["total"] / (budget - args.margin)
        print(f"{share:>5.2f} {budget:>11,} {fit['val_bpb_roundtrip']:>8.4f} {grid_bpb:>8.4f} "
              f"{fit['val_bpb_roundtrip'] - grid_bpb:>+9.5f} {used:>7.2%} {fit['bpb_evaluations']:>5} "
              f"{fit_s:>6.0f} {grid_s:>6.0f}  {fit['label']} | {grid_label} ({grid_total:,})")


if __name__ == "__main__":
    main()

"""Test-time training on CPU: `model=records_tiny`'s static round-trip val_bpb against the same with `ttt=cpu`.

For each text (the built-in corpus, and a second offline English text: Vim's help files, /usr/share/vim/*/doc,
prepared with `pgolf data prepare DIR` when missing) and each seed: one `pgolf train model=records_tiny` job
(`run_train`, `--iterations` steps), then its artifact scored on the first `--val-tokens` validation tokens, static
and with `ttt=cpu` (the same tokens: the token and byte totals are checked equal). Prints the static score, the TTT
score, the gain and both eval times per run, then the gain's mean and std over the seeds.

`--ablate` also scores the first seed's artifact with one part of `ttt=cpu` changed, to say which setting matters:
  - `ttt.lr=0 ttt.phases=0`: nothing learned; what remains is scoring each chunk within its document with up to
    `ttt.context` tokens before it (the window effect, not training);
  - `ttt.phases=0`: per-document LoRA only;  `ttt.rank=0`: global phases only;
  - `ttt.context=256`, `ttt.lr=0.01`: more context, a larger adapter step.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ttt.py --seeds 3 --ablate
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ttt.py --seeds 3 --texts vim-help --val-tokens 16384
"""

from __future__ import annotations

import argparse
import glob
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pgolf import config as C
from pgolf.jobs.scorer import Scorer
from pgolf.jobs.sources import load_any
from pgolf.jobs.train_job import run_train
from pgolf.runtime.device import resolve_device

ROOT = Path(__file__).resolve().parent.parent
ABLATIONS = (["ttt.lr=0", "ttt.phases=0"], ["ttt.phases=0"], ["ttt.rank=0"], ["ttt.context=256"], ["ttt.lr=0.01"])


def texts() -> dict[str, tuple[Path, list[str]]]:
    """name -> (data folder, the `pgolf data prepare` arguments that make it)."""
    vim = sorted(glob.glob("/usr/share/vim/vim*/doc"))
    out = {"builtin": (ROOT / "data" / "builtin", [])}
    if vim:
        out["vim-help"] = (ROOT / "data" / "vim_help", [vim[-1], "--out", str(ROOT / "data" / "vim_help")])
    return out


def prepared(folder: Path, args: list[str]) -> Path:
    if not (folder / "tokenizer.model").is_file():
        subprocess.run([sys.executable, "-m", "pgolf", "data", "prepare", *args], cwd=ROOT, check=True)
    return folder


def scores(run_dir: Path, overrides: list[str]) -> tuple[float, float, float, float, int]:
    """(static bpb, seconds, TTT bpb, seconds, tokens) of the run's artifact, on the same validation tokens."""
    cfg = C.merge_dotted(C.load_yaml(run_dir / "config.yaml"), overrides)
    model_config, state, _ = load_any(run_dir)
    scorer = Scorer.for_saved(cfg, model_config, resolve_device("cpu"))
    from pgolf.jobs.models import rebuild_model

    model = rebuild_model(model_config, state)
    started = time.perf_counter()
    static = scorer.score(model)
    static_s = time.perf_counter() - started
    ttt = scorer.score_ttt(model)
    assert (ttt.result.tokens, ttt.result.bytes) == (static.tokens, static.bytes)
    return static.bpb, static_s, ttt.result.bpb, ttt.seconds, static.tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--val-tokens", type=int, default=32768)
    parser.add_argument("--ablate", action="store_true")
    parser.add_argument("--texts", nargs="+", choices=("builtin", "vim-help"), default=("builtin", "vim-help"))
    args = parser.parse_args()
    for name, (folder, prepare_args) in texts().items():
        if name not in args.texts:
            continue
        data = prepared(folder, prepare_args)
        base = [f"data.dir={data}", f"data.tokenizer={data / 'tokenizer.model'}", "model=records_tiny",
                f"train.iterations={args.iterations}", "train.val_every=0"]
        gains = []
        print(f"\n{name}: model=records_tiny, {args.iterations} steps, ttt=cpu on {args.val_tokens:,} val tokens")
        print(f"{'seed':>5} {'static':>8} {'s':>6} {'ttt=cpu':>8} {'s':>6} {'gain':>8}")
        first_run = None
        for seed in range(args.seeds):
            cfg = C.compose([*base, f"seed={1337 + seed}", f"run.name=bench-ttt-{name}-{seed}"])
            summary = run_train(cfg, echo=lambda _line: None)
            run_dir = Path(summary["run_dir"])
            first_run = first_run or run_dir
            static, static_s, ttt, ttt_s, tokens = scores(run_dir, [f"data.val_tokens={args.val_tokens}", "ttt=cpu"])
            gains.append(ttt - static)
            print(f"{1337 + seed:>5} {static:8.4f} {static_s:6.1f} {ttt:8.4f} {ttt_s:6.1f} {ttt - static:+8.4f}",
                  flush=True)
        std = statistics.stdev(gains) if len(gains) > 1 else float("nan")
        print(f"gain over {len(gains)} seeds: mean {statistics.mean(gains):+.4f}, std {std:.4f} ({tokens:,} tokens)")
        if args.ablate:
            for change in ABLATIONS:
                static, _, ttt, ttt_s, _ = scores(first_run, [f"data.val_tokens={args.val_tokens}", "ttt=cpu",
                                                             *change])
                print(f"  ttt=cpu {' '.join(change):28} {ttt:8.4f} {ttt_s:6.1f}s gain {ttt - static:+.4f}",
                      flush=True)


if __name__ == "__main__":
    main()

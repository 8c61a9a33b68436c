"""The `make demo` main job, timed, and its score against the unigram floor.

Runs what `make demo` runs after installation (data prepare, train, fit-budget, a small sweep) as
subprocesses, times each step, then compares the tiny model's round-trip val_bpb with
the bits per byte of a unigram model fitted on the training tokens (the reference
measured in the same run: a model that knows token frequencies and nothing else).

    python bench/bench_demo.py
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from pgolf.data.loader import load_val_tokens
from pgolf.data.shards import find_shards, read_shard
from pgolf.data.tokenizer import build_byte_luts, load_tokenizer
from pgolf.evaluate import unigram_bpb

ROOT = Path(__file__).resolve().parent.parent


def demo_steps() -> list[list[str]]:
    """The pgolf command lines of the Makefile's demo target."""
    text = (ROOT / "Makefile").read_text()
    body = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in body.splitlines()[1:] if line.strip()]
    for name in ("DEMO_BUDGET", "DEMO_SWEEP"):
        lines = [line.replace(f"$({name})", _var(text, name)) for line in lines]
    return [shlex.split(line.replace("$(BIN)/", "")) for line in lines]


def _var(makefile: str, name: str) -> str:
    for line in makefile.splitlines():
        if line.startswith(f"{name} "):
            return line.split("=", 1)[1].strip()
    return ""


def main() -> None:
    total = 0.0
    for argv in demo_steps():
        assert argv[0] == "pgolf", argv
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pgolf", *argv[1:]], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        total += seconds
        print(f"{seconds:8.1f} s  {' '.join(argv)}")
    print(f"{total:8.1f} s  main job after install (target: at most 240 s)")

    run_dir = (ROOT / "runs" / "latest").resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    data = ROOT / "data" / "builtin"
    sp = load_tokenizer(data / "tokenizer.model")
    luts = build_byte_luts(sp, sp.get_piece_size())
    train = torch.from_numpy(read_shard(find_shards(data, "*_train_*.bin")[0]).astype("int64"))
    val = load_val_tokens(find_shards(data, "*_val_*.bin"), 256)
    floor = unigram_bpb(train, val, luts, sp.get_piece_size())
    print(f"unigram bpb of the val tokens (floor): {floor:.4f}")
    print(f"tiny model float val_bpb:             {summary['val_bpb']:.4f}")
    print(f"tiny model round-trip val_bpb:        {summary['val_bpb_roundtrip']:.4f}  "
          f"({summary['bytes']['total']:,} bytes total)")
    print(f"round trip vs unigram:                {summary['val_bpb_roundtrip'] - floor:+.4f} bpb")


if __name__ == "__main__":
    main()

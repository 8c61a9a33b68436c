"""What `pgolf pack` ships, in bytes and seconds, as a user runs it (`pgolf` and `train_gpt.py` subprocesses).

1. Code bytes of train_gpt.py, wrapped (lzma + base85) and readable (--wrap none), for
   a. the demo run (the default tiny config: EMA, codec=auto), and
   b. a fit-budget artifact of the reference 9x512 model (17M parameters; its weights are the
      initialisation, trained 0 steps: only the config and the chosen export shape the script),
   against the reference train_gpt.py's 47,642 bytes and the records' 28,025-31,999.
2. Seconds for the packed script to decode and score the demo artifact (`python train_gpt.py --eval`,
   cold: a fresh bundle folder, numba kernels compiled; warm: compiled kernels cached), against
   `pgolf eval` on the same artifact and tokens, and the two val_bpb values.

    python bench/bench_pack.py [--budget 12MB] [--val-tokens 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE_CODE_BYTES = 47_642
RECORDS_CODE_BYTES = (28_025, 31_999)


def run(args: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - start, proc.stdout


def pgolf(args: list[str], cwd: Path) -> tuple[float, str]:
    return run([sys.executable, "-m", "pgolf", *map(str, args)], cwd)


def packed_sizes(source: Path, work: Path, label: str) -> dict:
    sizes = {}
    for wrap in ("lzma", "none"):
        out = work / f"records-{label}-{wrap}"
        _, stdout = pgolf(["pack", source, "--out", out, "--wrap", wrap, "--force", "--json"], work)
        sizes[wrap] = json.loads(stdout)["bytes_code"]
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="12MB", help="fit-budget's --max-bytes for the 9x512 model")
    parser.add_argument("--val-tokens", type=int, default=0, help="validation tokens scored (0: all)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_pack-"))
    pgolf(["data", "prepare", "--out", work / "data"], work)
    data = [f"data.dir={work / 'data'}", f"data.tokenizer={work / 'data' / 'tokenizer.model'}",
            f"data.val_tokens={args.val_tokens}"]

    seconds, stdout = pgolf(["train", *data, "run.name=demo", "--json"], work)
    demo = json.loads(stdout)
    demo_dir = work / demo["run_dir"]
    print(f"demo run: trained in {seconds:.0f} s, {demo['params']:,} parameters, "
          f"{demo['bytes']['model']:,} artifact bytes, {demo['bytes']['code']:,} code bytes counted by train")

    _, stdout = pgolf(["train", *data, "model=baseline", "train.iterations=0", "train.val_every=0",
                       "run.name=base", "--json"], work)
    base_dir = work / json.loads(stdout)["run_dir"]
    seconds, stdout = pgolf(["fit-budget", base_dir, "--max-bytes", args.budget, *data, "fit.val_tokens=4096",
                             "fit.evals=1", "--json"], work)
    fit = json.loads(stdout)
    print(f"9x512 fit-budget {args.budget}: {fit['params']:,} parameters, {fit['bytes']['model']:,} artifact bytes, "
          f"{fit['bytes']['code']:,} code bytes counted by fit-budget ({seconds:.0f} s)")

    print("\ncode bytes of the shipped train_gpt.py")
    print(f"{'source':<28}{'wrapped (lzma)':>16}{'readable':>12}")
    for label, source in (("demo (default config)", demo_dir), ("9x512 fit-budget choice", base_dir)):
        sizes = packed_sizes(source, work, label.split()[0])
        print(f"{label:<28}{sizes['lzma']:>16,}{sizes['none']:>12,}")
    print(f"{'reference train_gpt.py':<28}{'':>16}{REFERENCE_CODE_BYTES:>12,}")
    print(f"{'records (wrapped)':<28}{f'{RECORDS_CODE_BYTES[0]:,}-{RECORDS_CODE_BYTES[1]:,}':>16}")

    folder = work / "records-demo-lzma"
    env = {"DATA_PATH": str(work / "data"), "TOKENIZER_PATH": str(work / "data" / "tokenizer.model"),
           "VAL_TOKENS": str(args.val_tokens), "PGOLF_BUNDLE_DIR": str(work / "bundle")}
    script = [sys.executable, "train_gpt.py", "--eval", "final_model.pgolf"]
    cold, out_cold = run(script, folder, env)
    warm, out_warm = run(script, folder, env)
    ours, stdout = pgolf(["eval", folder / "final_model.pgolf", *data, "--json"], work)
    score = json.loads(stdout)
    script_bpb = float(out_warm.strip().splitlines()[-1].removeprefix("val_bpb:"))
    print(f"\nscoring the demo artifact ({score['val_tokens']:,} tokens)")
    print(f"train_gpt.py --eval, cold (fresh bundle, numba compiles): {cold:6.1f} s")
    print(f"train_gpt.py --eval, warm (cached kernels):               {warm:6.1f} s")
    print(f"pgolf eval (reference, same artifact and tokens):          {ours:6.1f} s")
    print(f"val_bpb: script {script_bpb:.10f}, pgolf eval {score['val_bpb']:.10f}, "
          f"difference {abs(script_bpb - score['val_bpb']):.1e}")
    print(f"(work folder: {work})")


if __name__ == "__main__":
    main()

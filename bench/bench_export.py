"""Export choices on one checkpoint: round-trip val_bpb, bytes, export seconds and peak memory.

    .venv/bin/python bench/bench_export.py runs/latest [--val-tokens 32768]

Rows: the reference export (export=int8_zlib), pgolf's default (int6 mse,
int8 embedding, best codec per group), and int4/int5/int6 with and without
GPTQ. Every row is exported, written, read back from disk and scored on the
same validation tokens (the first --val-tokens of the configured set). Peak
memory is the resident-set high-water mark of the export alone (quantize,
GPTQ, code, write) above the level before it (Linux /proc); the loaded
float checkpoint is not in it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rss import peak_mb_since, reset_peak

from pgolf.checkpoint import build_model
from pgolf.experiment import calibration_hessians, config_for_source, load_any, load_val_data, score
from pgolf.export.artifact import export_state_dict, load_artifact, write_artifact
from pgolf.export.code_bytes import count_code_bytes
from pgolf.train.device import resolve_device

ROWS = [
    ("reference int8 + zlib", ["export=int8_zlib"]),
    ("pgolf default", []),
    ("default + gptq", ["export.gptq=true"]),
    ("int5", ["export.bits=5"]),
    ("int5 + gptq", ["export.bits=5", "export.gptq=true"]),
    ("int4", ["export.bits=4"]),
    ("int4 + gptq", ["export.bits=4", "export.gptq=true"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--val-tokens", type=int, default=32768)
    parser.add_argument("--out", type=Path, default=Path("/tmp/pgolf-bench-export"))
    args = parser.parse_args()
    weights = args.source / "model.safetensors" if args.source.is_dir() else args.source
    model_config, state, _ = load_any(weights)
    base = config_for_source(args.source, [f"data.val_tokens={args.val_tokens}"])
    setup = resolve_device(base.device)
    val = load_val_data(base, base.train.seq_len, base.data.val_tokens)
    float_bpb = score(build_model(model_config, state), val, base.train.seq_len, 0, setup).bpb
    params = sum(t.numel() for t in state.values())
    print(f"{args.source}: {params:,} parameters; float val_bpb {float_bpb:.4f} on {val.tokens.numel() - 1:,} "
          f"validation tokens\n")
    print(f"{'export':<24}{'rt val_bpb':>11}{'vs float':>10}{'model bytes':>13}{'total bytes':>13}"
          f"{'export s':>10}{'peak MB':>9}")
    args.out.mkdir(parents=True, exist_ok=True)
    for label, overrides in ROWS:
        cfg = config_for_source(args.source, [f"data.val_tokens={args.val_tokens}", *overrides])
        before_kb = reset_peak()
        start = time.perf_counter()
        hessians = calibration_hessians(state, model_config, cfg, setup)
        result = export_state_dict(state, model_config, cfg.export, hessians=hessians)
        path = args.out / f"{label.replace(' ', '_').replace('+', 'plus')}.pgolf"
        write_artifact(path, result)
        seconds = time.perf_counter() - start
        peak = peak_mb_since(before_kb)
        saved_config, restored = load_artifact(path)
        rt = score(build_model(saved_config, restored), val, cfg.train.seq_len, 0, setup).bpb
        model_bytes = path.stat().st_size
        print(f"{label:<24}{rt:>11.4f}{rt - float_bpb:>+10.4f}{model_bytes:>13,}"
              f"{model_bytes + count_code_bytes(cfg.export):>13,}{seconds:>10.1f}{peak:>9.0f}")


if __name__ == "__main__":
    main()

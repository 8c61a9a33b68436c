"""Codec benchmark: per-group bytes on trained checkpoints against the entropy bound and general compressors,
plus speed and decode memory on a synthetic baseline-sized model.

    .venv/bin/python bench/bench_codecs.py                        # both trained checkpoints, then the synthetic check
    .venv/bin/python bench/bench_codecs.py runs/latest/model.safetensors [more.safetensors ...]   # given checkpoints
    .venv/bin/python bench/bench_codecs.py --synthetic            # only the synthetic 17,059,912-parameter baseline
    PGOLF_BENCH_RUNS=runs .venv/bin/python bench/bench_codecs.py  # look for (or train) the checkpoints in runs/

Run it with OMP_NUM_THREADS=1 on shared cores. The trained checkpoints live in
PGOLF_BENCH_RUNS (default runs/bench), in pgolf's run layout
(<root>/<date>/<time>-<name>/); the newest finished run of each name is used
(model.safetensors and a summary.json without an error), and a missing one is
trained first through the CLI, which the bench says before it starts:

    demo      pgolf train run.name=demo run.root=<root>         592,144 params, ~90 s on 2 cores
    codecs8m  pgolf train run.name=codecs8m run.root=<root> model=baseline model.num_layers=5
              train.iterations=100000 train.wallclock_s=200 train.val_every=0 export.codec=zlib   9,710,632 params

The export is the same everywhere: int6 for every group (the embedding too),
mse clip, every tensor but the fp32 control tensors quantized per row. Each
pgolf codec (codecs.available_codecs(), so a newly registered one shows up by
itself) codes every stream on its own as the artifact does (levels, fp16
scales, fp32 control tensors); a group's bytes are the sum over its streams,
each codec's own tables and headers included. The whole-model row adds the
container framing (frame and deflated JSON header) of a real codec=rans
artifact of the same export: the same for every codec within a few bytes.
`auto` is, per group, the smallest pgolf codec (as codec=auto picks it);
"auto w/o ctx" the same without the new coder, i.e. today's auto. The
order-0 bound is pgolf's: sum over tensors of numel x H(levels) / 8 plus the
raw bytes of scales and float tensors.

Anchors, only where the Debian packages are installed (never a pgolf
dependency): `zpaq a g.zpaq g -m5 -noattributes` and `lrzip -z -T -L 9`
(-T: else lrzip stores a group raw when a quick LZ4 trial finds it
incompressible, as int6 levels often are; -L 9: zpaq's strongest model
inside lrzip, ~2% smaller than the default -L 7), each on one file per
group holding the group's raw streams concatenated (levels, then scales, then
float data); sizes are whole archive files (zpaq's journal and lrzip's header
included), times are the tools' wall clock (both may use 2 threads).

Times on trained checkpoints are one encode and one decode pass after a
warm-up call (library import; for rans, loading or compiling its kernels).
The synthetic weights are heavy-tailed like trained ones (student-t df 4.5
times a log-normal scale per row); there every codec runs REPEATS times and
the fastest pass counts (the cores may be shared). Decode peak memory is measured
in a fresh (spawned) process, where heap freed by encoding cannot hide it: the
resident-set high-water mark (Linux /proc) above the level after imports and a
warm-up call, with the coded streams loaded and the decoded ones (~17 MB) kept.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from rss import peak_mb_since, reset_peak

from pgolf.config import ExportConfig, GroupBits
from pgolf.export.artifact import entropy_bound_bits, export_state_dict, quantize_state_dict, tensor_streams
from pgolf.export.coding import codecs
from pgolf.export.quantize import GROUPS, QuantizedTensor, tensor_group
from pgolf.jobs.float_checkpoint import load_checkpoint

BITS = 6
REPEATS = 3
NEW_CODEC = "ctx"
GENERAL = {"zstd": "zstd-22", "lzma": "lzma-9", "brotli": "brotli-11"}
"""The single general codecs the new coder must beat by GAIN_TARGET_PCT on the whole model."""
GAIN_TARGET_PCT = -2.0
SPEED_TARGET_S = 3.0
MEMORY_TARGET_MB = 200.0
BENCH_RUNS = {
    "demo": [],
    "codecs8m": ["model=baseline", "model.num_layers=5", "train.iterations=100000", "train.wallclock_s=200",
                 "train.val_every=0", "export.codec=zlib"],
}
"""Trained checkpoints of the default mode: run name -> `pgolf train` overrides."""
Stream = tuple[bytes, int, int]
"""(raw bytes, item size, row length) as tensor_streams gives them."""


def export_config(codec: str = "rans") -> ExportConfig:
    return ExportConfig(bits=BITS, group_bits=GroupBits(embed=BITS), clip="mse", codec=codec)


def baseline_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Baseline-shaped weights (9 x 512, 8 heads, 4 KV heads, MLP 2x, vocab 1024, tied): 17,059,912 params."""
    gen = torch.Generator().manual_seed(seed)
    t_dist = torch.distributions.StudentT(torch.tensor(4.5))

    def matrix(rows: int, cols: int) -> torch.Tensor:
        row_scale = torch.exp(0.3 * torch.randn(rows, 1, generator=gen)) * 0.02
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
        return t_dist.sample((rows, cols)) * row_scale

    dim, kv_dim, hidden, layers = 512, 256, 1024, 9
    sd = {"tok_emb.weight": matrix(1024, dim)}
    for i in range(layers):
        p = f"blocks.{i}."
        sd[p + "attn.c_q.weight"] = matrix(dim, dim)
        sd[p + "attn.c_k.weight"] = matrix(kv_dim, dim)
        sd[p + "attn.c_v.weight"] = matrix(kv_dim, dim)
        sd[p + "attn.proj.weight"] = matrix(dim, dim)
        sd[p + "attn.q_gain"] = torch.full((8,), 1.5)
        sd[p + "mlp.fc.weight"] = matrix(hidden, dim)
        sd[p + "mlp.proj.weight"] = matrix(dim, hidden)
        sd[p + "attn_scale"] = torch.ones(dim)
        sd[p + "mlp_scale"] = torch.ones(dim)
        sd[p + "resid_mix"] = torch.stack((torch.ones(dim), torch.zeros(dim)))
    sd["skip_weights"] = torch.ones(layers // 2, dim)
    return sd


def warm_up(codec: str) -> float:
    """Seconds of a first call on a small stream: library import; for rans, loading (or once, compiling) kernels."""
    start = time.perf_counter()
    codecs.decode(codec, codecs.encode(codec, bytes(range(64)) * 8, -1, 1, 64), 512, 1, 64)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- trained checkpoints

def bench_runs_root() -> Path:
    return Path(os.environ.get("PGOLF_BENCH_RUNS", "runs/bench"))


def finished_run(root: Path, name: str) -> Path | None:
    """The newest run directory `<root>/<date>/<time>-<name>[-n]` that finished training without an error."""
    pattern = re.compile(rf"\d\d-\d\d-\d\d-{re.escape(name)}(-\d+)?")
    for run_dir in sorted(root.glob(f"*/*-{name}*"), reverse=True):
        if not pattern.fullmatch(run_dir.name) or not (run_dir / "model.safetensors").is_file():
            continue
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        if "error" not in summary:
            return run_dir
    return None


def bench_checkpoint(name: str) -> Path:
    """model.safetensors of the bench run `name`, trained through the CLI first when missing."""
    root = bench_runs_root()
    run_dir = finished_run(root, name)
    if run_dir is None:
        command = [sys.executable, "-m", "pgolf", "train", f"run.name={name}", f"run.root={root}", *BENCH_RUNS[name]]
        print(f"no finished {name!r} run in {root}: training it (pgolf {' '.join(command[3:])})", flush=True)
        subprocess.run(command, check=True)
        run_dir = finished_run(root, name)
        if run_dir is None:
            raise SystemExit(f"pgolf train finished but {root} has no finished {name!r} run")
    return run_dir / "model.safetensors"


def group_streams(qsd: dict) -> dict[str, list[Stream]]:
    """Group -> its streams in GROUPS order: every tensor's levels, then every scale stream, then float data."""
    order = {"q": 0, "scale": 1, "data": 2}
    keyed: dict[str, list[tuple[int, Stream]]] = {}
    for name, value in qsd.items():
        for key, stream in tensor_streams(value).items():
            keyed.setdefault(tensor_group(name), []).append((order[key], stream))
    return {g: [s for _, s in sorted(keyed[g], key=lambda item: item[0])] for g in GROUPS if g in keyed}


def group_bounds(qsd: dict) -> tuple[dict[str, float], dict[str, int]]:
    """(group -> order-0 bound in bytes, group -> parameters), the bound per tensor as the artifact's table has it."""
    bits: dict[str, float] = {}
    params: dict[str, int] = {}
    for name, value in qsd.items():
        group = tensor_group(name)
        numel = value.q.numel() if isinstance(value, QuantizedTensor) else value.numel()
        bits[group] = bits.get(group, 0.0) + entropy_bound_bits(value)
        params[group] = params.get(group, 0) + numel
    return {g: b / 8 for g, b in bits.items()}, params


def code_groups(codec: str, groups: dict[str, list[Stream]]) -> dict[str, dict[str, float]]:
    """Group -> {bytes, encode_s, decode_s} for one pass of `codec` over every stream, round trip checked."""
    out = {}
    for group, streams in groups.items():
        start = time.perf_counter()
        coded = [codecs.encode(codec, raw, -1, itemsize, row_len) for raw, itemsize, row_len in streams]
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        decoded = [codecs.decode(codec, blob, len(raw), itemsize, row_len)
                   for blob, (raw, itemsize, row_len) in zip(coded, streams, strict=True)]
        decode_s = time.perf_counter() - start
        if decoded != [raw for raw, _, _ in streams]:
            raise SystemExit(f"{codec} did not round-trip group {group}")
        out[group] = {"bytes": sum(map(len, coded)), "encode_s": encode_s, "decode_s": decode_s}
    return out


def _zpaq(folder: Path, raw: Path) -> tuple[list[str], list[str], Path]:
    archive = folder / "g.zpaq"
    out = folder / "g.out"
    return (["zpaq", "a", str(archive), raw.name, "-m5", "-noattributes"],
            ["zpaq", "x", str(archive), raw.name, "-to", str(out), "-noattributes"], archive)


def _lrzip(folder: Path, raw: Path) -> tuple[list[str], list[str], Path]:
    archive = folder / "g.lrz"
    # -T: without it lrzip stores a group raw when an LZ4 trial finds it incompressible (int6 levels often are)
    return (["lrzip", "-z", "-T", "-L", "9", "-q", "-f", "-o", str(archive), str(raw)],
            ["lrzip", "-d", "-q", "-f", "-o", str(folder / "g.out"), str(archive)], archive)


ANCHORS = {"zpaq -m5": ("zpaq", _zpaq), "lrzip -z -L9": ("lrzip", _lrzip)}


def code_anchor(anchor: str, groups: dict[str, list[Stream]]) -> dict[str, dict[str, float]] | None:
    """Group -> {bytes, encode_s, decode_s} of an external archiver on the group's concatenated raw streams
    (None when it is not installed)."""
    binary, commands = ANCHORS[anchor]
    if shutil.which(binary) is None:
        return None
    out = {}
    for group, streams in groups.items():
        with tempfile.TemporaryDirectory(prefix="bench-codecs-") as tmp:
            folder = Path(tmp)
            raw = folder / "g"  # a one-letter name: zpaq stores it in its journal
            data = b"".join(s for s, _, _ in streams)
            raw.write_bytes(data)
            pack, unpack, archive = commands(folder, raw)
            start = time.perf_counter()
            subprocess.run(pack, cwd=folder, check=True, capture_output=True)
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            subprocess.run(unpack, cwd=folder, check=True, capture_output=True)
            decode_s = time.perf_counter() - start
            if (folder / "g.out").read_bytes() != data:
                raise SystemExit(f"{anchor} did not round-trip group {group}")
            out[group] = {"bytes": archive.stat().st_size, "encode_s": encode_s, "decode_s": decode_s}
    return out


def smallest(results: dict[str, dict[str, dict[str, float]]], names: list[str], group: str) -> tuple[int, str]:
    """(bytes, codec) of the smallest of `names` on `group`; ties go to the earlier name (CODECS order, as auto)."""
    best = min(names, key=lambda c: results[c][group]["bytes"])  # min keeps the first of equals
    return int(results[best][group]["bytes"]), best


def _pct(value: float, reference: float) -> str:
    return f"{100 * (value / reference - 1):+.2f}%"


def _check(ok: bool, line: str) -> None:
    print(f"  [{'PASS' if ok else 'FAIL'}] {line}")


def bench_trained(path: Path) -> None:
    """Per-group table, times and the issue's targets for one checkpoint."""
    model_config, state_dict = load_checkpoint(path)
    params = sum(t.numel() for t in state_dict.values())
    start = time.perf_counter()
    qsd = quantize_state_dict(state_dict, export_config())
    quantize_s = time.perf_counter() - start
    groups = group_streams(qsd)
    bounds, group_params = group_bounds(qsd)
    artifact = export_state_dict(state_dict, model_config, export_config("rans"))
    framing = artifact.overhead_bytes

    pgolf_codecs = codecs.available_codecs()
    warm_s = {codec: warm_up(codec) for codec in pgolf_codecs}
    results = {codec: code_groups(codec, groups) for codec in pgolf_codecs}
    artifact_rans = {row["group"]: row["bytes"] for row in artifact.groups}
    if artifact_rans != {g: r["bytes"] for g, r in results["rans"].items()}:
        raise SystemExit("the bench's rans bytes per group differ from the artifact's: the bench no longer codes "
                         "streams as the artifact does")
    anchors = {anchor: code_anchor(anchor, groups) for anchor in ANCHORS}
    has_new = NEW_CODEC in pgolf_codecs
    today = [c for c in pgolf_codecs if c != NEW_CODEC]

    print(f"\n=== {path}: {params:,} parameters, int{BITS} everywhere, mse clip (quantize {quantize_s:.1f} s); "
          f"framing {framing:,} bytes (container + header of the codec=rans artifact, "
          f"{artifact.model_bytes:,} bytes) in every whole-model total")
    columns = [*pgolf_codecs, "auto", *(["auto w/o ctx"] if has_new else []), *ANCHORS]
    width = {c: 19 if c == "auto" else 13 for c in columns}
    print(f"{'group':<10}{'params':>11}{'order-0':>12}" + "".join(f"{c:>{width[c]}}" for c in columns))
    rows = [*groups, "model"]
    totals = dict.fromkeys(columns, 0)
    auto_by = {}
    for group in rows:
        whole = group == "model"
        cells = {}
        for codec in pgolf_codecs:
            cells[codec] = totals[codec] + framing if whole else results[codec][group]["bytes"]
        if whole:
            cells["auto"] = totals["auto"] + framing
            if has_new:
                cells["auto w/o ctx"] = totals["auto w/o ctx"] + framing
        else:
            cells["auto"], auto_by[group] = smallest(results, pgolf_codecs, group)
            if has_new:
                cells["auto w/o ctx"] = smallest(results, today, group)[0]
        for anchor, result in anchors.items():
            if result is not None:
                cells[anchor] = totals[anchor] if whole else result[group]["bytes"]
        if not whole:
            for column, value in cells.items():
                totals[column] += value
        n_params = sum(group_params.values()) if whole else group_params[group]
        bound = math.ceil(sum(bounds.values()) if whole else bounds[group])
        text = {c: f"{cells[c]:,}" if c in cells else "-" for c in columns}
        if not whole:
            text["auto"] += f" {auto_by[group]}"
        print(f"{group:<10}{n_params:>11,}{bound:>12,}" + "".join(f"{text[c]:>{width[c]}}" for c in columns))
    for anchor, result in anchors.items():
        if result is None:
            print(f"{anchor}: not installed ({ANCHORS[anchor][0]} not on PATH; Debian package {ANCHORS[anchor][0]})")
    print("order-0 and anchor totals exclude framing; 'auto' names the codec auto picks per group")

    print(f"\n{'seconds':<13}{'encode':>9}{'decode':>9}{'warm-up':>9}   encode+decode per group")
    print(f"{'':<43}" + "".join(f"{g:>10}" for g in groups))
    timed = {**results, **{a: r for a, r in anchors.items() if r is not None}}
    for name, result in timed.items():
        encode_s = sum(r["encode_s"] for r in result.values())
        decode_s = sum(r["decode_s"] for r in result.values())
        warm = f"{warm_s[name]:>9.2f}" if name in warm_s else f"{'':>9}"
        per_group = "".join(f"{result[g]['encode_s'] + result[g]['decode_s']:>10.2f}" for g in groups)
        print(f"{name:<13}{encode_s:>9.2f}{decode_s:>9.2f}{warm}   {per_group}")

    model = {codec: sum(r["bytes"] for r in results[codec].values()) + framing for codec in pgolf_codecs}
    if has_new:
        subject = NEW_CODEC
        print(f"\ntargets for {NEW_CODEC} (every byte counted, framing included):")
    else:
        subject = min(today, key=lambda c: model[c])
        print(f"\n{NEW_CODEC} not present (codecs: {', '.join(pgolf_codecs)}): targets shown for {subject}, "
              "the best pgolf codec on this model:")
    general = [c for c in GENERAL if c in model]
    best_general = min(general, key=lambda c: model[c])
    gain = 100 * (model[subject] / model[best_general] - 1)
    _check(gain <= GAIN_TARGET_PCT, f"whole model vs best general codec {GENERAL[best_general]}: {model[subject]:,} "
           f"vs {model[best_general]:,} bytes, {gain:+.2f}% (target <= {GAIN_TARGET_PCT:+.0f}%)")
    today_auto = {g: smallest(results, today, g) for g in groups}
    today_total = sum(b for b, _ in today_auto.values()) + framing
    _check(model[subject] < today_total, f"whole model vs today's auto: {model[subject]:,} vs {today_total:,} bytes, "
           f"{_pct(model[subject], today_total)} (target < 0)")
    over = [f"{g} +{results[subject][g]['bytes'] - b:,} B vs {c}" for g, (b, c) in today_auto.items()
            if results[subject][g]["bytes"] > b]
    _check(not over, f"no group larger than today's auto: {'; '.join(over) if over else 'none larger'}")
    matrix_groups = [g for g in groups if g != "other"]
    above = {g: results[subject][g]["bytes"] / bounds[g] - 1 for g in matrix_groups}
    worst = max(above, key=above.get)
    failing = [f"{g} {100 * v:+.2f}%" for g, v in above.items() if v >= 0]
    _check(not failing, f"every matrix group under its order-0 bound: "
           f"{'; '.join(failing) if failing else f'worst {worst} {100 * above[worst]:+.2f}%'}")
    zpaq = anchors["zpaq -m5"]
    if zpaq is None:
        print("  [----] embed vs zpaq -m5: zpaq not installed")
    elif "embed" in groups:
        embed, anchor = results[subject]["embed"]["bytes"], zpaq["embed"]["bytes"]
        _check(embed <= anchor, f"embed vs zpaq -m5: {embed:,} vs {anchor:,} bytes, {_pct(embed, anchor)}")


# --------------------------------------------------------------------------- synthetic speed and memory

def decode_peak_mb(codec: str, jobs: list[tuple[bytes, int, int, int]]) -> float:
    """Decode every (blob, raw bytes, item size, row length) job, keeping the outputs; the resident-set peak above
    the level after imports and a warm-up call. Run in a fresh process: in this one, heap freed by encoding would
    be reused unseen."""
    warm_up(codec)
    before_kb = reset_peak()
    decoded = [codecs.decode(codec, blob, n_bytes, itemsize, row_len) for blob, n_bytes, itemsize, row_len in jobs]
    peak_mb = peak_mb_since(before_kb)
    del decoded
    return peak_mb


def bench_codec(codec: str, streams: list[Stream]) -> dict:
    """Encode then decode every stream REPEATS times (bytes, fastest seconds), then the decode peak memory."""
    warm_s = warm_up(codec)
    raws = [raw for raw, _, _ in streams]
    encode_s = decode_s = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        coded = [codecs.encode(codec, raw, -1, itemsize, row_len) for raw, itemsize, row_len in streams]
        encode_s = min(encode_s, time.perf_counter() - start)
        start = time.perf_counter()
        decoded = [codecs.decode(codec, blob, len(raw), itemsize, row_len)
                   for blob, (raw, itemsize, row_len) in zip(coded, streams, strict=True)]
        decode_s = min(decode_s, time.perf_counter() - start)
        if decoded != raws:
            raise SystemExit(f"{codec} did not round-trip")
        del decoded
    jobs = [(blob, len(raw), itemsize, row_len) for blob, (raw, itemsize, row_len) in zip(coded, streams, strict=True)]
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        decode_mb = pool.submit(decode_peak_mb, codec, jobs).result()
    return {"codec": codec, "bytes": sum(map(len, coded)), "encode_s": encode_s, "decode_s": decode_s,
            "decode_mb": decode_mb, "warm_s": warm_s}


def bench_synthetic() -> None:
    state_dict = baseline_state_dict()
    params = sum(t.numel() for t in state_dict.values())
    cfg = export_config()
    start = time.perf_counter()
    qsd = quantize_state_dict(state_dict, cfg)
    quantize_s = time.perf_counter() - start

    streams, bound_bits, q_params = [], 0.0, 0
    for value in qsd.values():
        streams.extend(tensor_streams(value).values())
        bound_bits += entropy_bound_bits(value)
        if isinstance(value, QuantizedTensor):
            q_params += value.q.numel()
    bound = bound_bits / 8
    print(f"\n=== synthetic baseline: {params:,} parameters ({q_params:,} quantized to int{BITS}); "
          f"quantize (mse clip) {quantize_s:.1f} s")
    print(f"entropy bound: {bound:,.0f} bytes ({bound_bits / q_params:.4f} bits per quantized parameter incl. "
          f"scales and float tensors)\n")
    print(f"{'codec':<8}{'bytes':>14}{'over bound':>12}{'encode s':>10}{'decode s':>10}{'enc+dec s':>11}"
          f"{'decode MB':>11}{'warm-up s':>11}")
    rows = [bench_codec(codec, streams) for codec in codecs.available_codecs()]
    for row in rows:
        print(f"{row['codec']:<8}{row['bytes']:>14,}{100 * (row['bytes'] / bound - 1):>11.3f}%"
              f"{row['encode_s']:>10.2f}{row['decode_s']:>10.2f}{row['encode_s'] + row['decode_s']:>11.2f}"
              f"{row['decode_mb']:>11.1f}{row['warm_s']:>11.2f}")

    by_codec = {row["codec"]: row for row in rows}
    coded = by_codec["rans"]
    best_other = min((by_codec[c] for c in GENERAL if c in by_codec), key=lambda r: r["bytes"])
    zstd_s = by_codec["zstd"]["encode_s"] + by_codec["zstd"]["decode_s"]
    print(f"\nrans vs bound: {100 * (coded['bytes'] / bound - 1):+.3f}% (target <= +0.5%)")
    gain = 100 * (coded["bytes"] / best_other["bytes"] - 1)
    print(f"rans vs best general codec ({best_other['codec']}): {gain:+.2f}% (target <= -1%)")
    print(f"rans encode+decode speed-up over zstd-22: {zstd_s / (coded['encode_s'] + coded['decode_s']):.0f}x "
          f"(target >= 10x)")
    new = by_codec.get(NEW_CODEC)
    if new is None:
        print(f"{NEW_CODEC} not present: no {NEW_CODEC} speed or memory targets to check")
    else:
        seconds = new["encode_s"] + new["decode_s"]
        _check(seconds <= SPEED_TARGET_S, f"{NEW_CODEC} encode+decode: {seconds:.2f} s "
               f"(target <= {SPEED_TARGET_S:.0f} s)")
        _check(new["decode_mb"] < MEMORY_TARGET_MB, f"{NEW_CODEC} decode peak memory: {new['decode_mb']:.0f} MB "
               f"(target < {MEMORY_TARGET_MB:.0f} MB)")

    before_kb = reset_peak()
    start = time.perf_counter()
    result = export_state_dict(state_dict, {"model_dim": 512, "num_heads": 8}, cfg)
    export_s = time.perf_counter() - start
    export_peak_mb = peak_mb_since(before_kb)
    float_mb = sum(t.numel() * t.element_size() for t in state_dict.values()) / 2**20
    print(f"\nfull artifact (codec=rans): {result.model_bytes:,} bytes = bound {result.entropy_bound_bytes:,} "
          f"{100 * (result.model_bytes / result.entropy_bound_bytes - 1):+.3f}% "
          f"(header+frame {result.overhead_bytes:,} bytes); export {export_s:.1f} s")
    print(f"export peak memory: {export_peak_mb:.0f} MB above the loaded float state dict ({float_mb:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", type=Path,
                        help="checkpoints to measure (model.safetensors); default: the bench runs, then --synthetic")
    parser.add_argument("--synthetic", action="store_true", help="only the synthetic 17M-parameter check")
    args = parser.parse_args()
    if args.synthetic:
        bench_synthetic()
        return
    for path in args.checkpoints or [bench_checkpoint(name) for name in BENCH_RUNS]:
        bench_trained(path)
    if not args.checkpoints:
        bench_synthetic()


if __name__ == "__main__":
    main()

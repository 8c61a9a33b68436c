"""Codec benchmark on a baseline-sized model: bytes vs the entropy bound, speed, peak memory.

    .venv/bin/python bench/bench_codecs.py                      # synthetic 17,059,912-parameter baseline
    .venv/bin/python bench/bench_codecs.py model.safetensors    # a real checkpoint

The synthetic weights are heavy-tailed like trained ones: student-t (df 4.5)
values times a log-normal scale per row. Every tensor above 65,536 elements is
quantized per row to int6 with the same clip (mse search); then each codec
codes the same streams (levels and fp16 scales, every tensor on its own, as
the artifact does) and decodes them back, REPEATS times: times are the
fastest pass (the cores may be shared). Peak memory is the resident-set
high-water mark above the level before the codec ran (Linux /proc), after a
warm-up call on a small stream whose time is shown apart: it imports the
library and, for rans, loads its compiled kernels (compiles them, ~7 s,
the first time a checkout runs them).
"""

from __future__ import annotations

import sys
import time

import torch
from rss import peak_mb_since, reset_peak

from pgolf.config import ExportConfig, GroupBits
from pgolf.export import codecs, rans
from pgolf.export.artifact import export_state_dict, quantize_state_dict, tensor_streams
from pgolf.export.quantize import QuantizedTensor

BITS = 6
REPEATS = 3


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


def bench_codec(codec: str, streams: list[tuple[bytes, int, int]]) -> dict:
    """Encode then decode every (raw, item size, row length) stream; bytes, fastest seconds and peak memory."""
    start = time.perf_counter()
    codecs.decode(codec, codecs.encode(codec, bytes(range(64)) * 8, -1, 1, 64), 512, 1, 64)
    warm_s = time.perf_counter() - start  # library import; for rans, loading (or once, compiling) its kernels
    before_kb = reset_peak()
    encode_s = decode_s = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        coded = [codecs.encode(codec, raw, -1, itemsize, row_len) for raw, itemsize, row_len in streams]
        encode_s = min(encode_s, time.perf_counter() - start)
        start = time.perf_counter()
        for blob, (raw, itemsize, row_len) in zip(coded, streams, strict=True):
            if codecs.decode(codec, blob, len(raw), itemsize, row_len) != raw:
                raise SystemExit(f"{codec} did not round-trip")
        decode_s = min(decode_s, time.perf_counter() - start)
    peak_mb = peak_mb_since(before_kb)
    return {"codec": codec, "bytes": sum(map(len, coded)), "encode_s": encode_s, "decode_s": decode_s,
            "peak_mb": peak_mb, "warm_s": warm_s}


def main() -> None:
    if len(sys.argv) > 1:
        from safetensors.torch import load_file

        state_dict = load_file(sys.argv[1])
    else:
        state_dict = baseline_state_dict()
    params = sum(t.numel() for t in state_dict.values())
    cfg = ExportConfig(bits=BITS, group_bits=GroupBits(embed=BITS), clip="mse", codec="rans")
    start = time.perf_counter()
    qsd = quantize_state_dict(state_dict, cfg)
    quantize_s = time.perf_counter() - start

    streams, bound_bits, q_params = [], 0.0, 0
    for value in qsd.values():
        streams.extend(tensor_streams(value).values())
        if isinstance(value, QuantizedTensor):
            bound_bits += rans.entropy_bits(value.q.reshape(-1).numpy()) + 16 * value.scale.numel()
            q_params += value.q.numel()
        else:
            bound_bits += 8 * value.numel() * value.element_size()
    bound = bound_bits / 8
    print(f"{params:,} parameters ({q_params:,} quantized to int{BITS}); quantize (mse clip) {quantize_s:.1f} s")
    print(f"entropy bound: {bound:,.0f} bytes ({bound_bits / q_params:.4f} bits per quantized parameter incl. "
          f"scales and float tensors)\n")
    print(f"{'codec':<8}{'bytes':>14}{'over bound':>12}{'encode s':>10}{'decode s':>10}{'peak MB':>9}{'warm-up s':>11}")
    rows = [bench_codec(codec, streams) for codec in codecs.available_codecs()]
    for row in rows:
        print(f"{row['codec']:<8}{row['bytes']:>14,}{100 * (row['bytes'] / bound - 1):>11.3f}%"
              f"{row['encode_s']:>10.2f}{row['decode_s']:>10.2f}{row['peak_mb']:>9.1f}{row['warm_s']:>11.2f}")

    by_codec = {row["codec"]: row for row in rows}
    coded = by_codec["rans"]
    others = [by_codec[c] for c in ("zstd", "lzma", "brotli") if c in by_codec]
    best_other = min(others, key=lambda r: r["bytes"])
    zstd_s = by_codec["zstd"]["encode_s"] + by_codec["zstd"]["decode_s"]
    print(f"\nrans vs bound: {100 * (coded['bytes'] / bound - 1):+.3f}% (target <= +0.5%)")
    gain = 100 * (coded["bytes"] / best_other["bytes"] - 1)
    print(f"rans vs best general codec ({best_other['codec']}): {gain:+.2f}% (target <= -1%)")
    print(f"rans encode+decode speed-up over zstd-22: {zstd_s / (coded['encode_s'] + coded['decode_s']):.0f}x "
          f"(target >= 10x)")

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


if __name__ == "__main__":
    main()

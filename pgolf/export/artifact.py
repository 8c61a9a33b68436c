"""Export a state dict to a pgolf artifact and load it back (dequantized, float32).

Pipeline: plan each tensor (quantized or kept float) -> prune -> quantize per
row -> (selective zeroing) -> encode every stream with the group's codec ->
container (see container.py). The export table has one row per tensor group
and reports the order-0 entropy bound beside the real bytes.

Decisions worth knowing:
- Kept float: control tensors (q_gain, attn_scale, mlp_scale, resid_mix,
  skip_weights, ln_scale, the record-era gates) whatever their size, as
  `control_dtype` (float32 as the reference, or float16); other tensors
  with <= `float_max_numel` elements, or in a group whose `group_bits` is
  16, as `float_dtype`. Everything else is quantized at
  `group_bits.<group>` (0 = `bits`), one int8 level per value.
- `tensor_bits` names single tensors and wins over both rules above: 2..8
  quantizes the tensor at that width whatever its size, 16 keeps it float.
  A name that is not in the state dict, or a control tensor, is a ConfigError.
  The per-tensor bits are in each record (`bits`), so the header's export
  info does not repeat the mapping (it would cost bytes in the budget).
- Each quantized tensor has two streams, `q` (int8 levels, row-major) and
  `scale` (fp16 per row); a float tensor has one, `data`. All little-endian.
- `codec=auto` encodes each tensor group with every codec of CODECS and keeps
  the smallest (ties: the earlier of CODECS); a missing codec library is a
  CodecError, never a smaller set. With `shuffle`, every stream of
  multi-byte values is coded both byte-shuffled and plain; the smaller wins.
- `gptq` re-chooses the levels of every nn.Linear weight on its clip's grid
  (gptq.py) from Hessians the caller measured; the format is unchanged.
- Entropy bound = sum over quantized tensors of numel x H(levels) / 8, plus
  the raw bytes of scales and float tensors, rounded up. Container framing and
  the header are not in it (they are `overhead_bytes`).
- `export=int8_zlib` reproduces the reference quantization (per-row int8,
  99.99984th-percentile clip, fp16 scale, fp16/fp32 small tensors, zlib-9)
  (with the 1/127 scale floor, `export.scale_min`), except that levels round
  against the stored fp16 scale (see quantize.py);
  the bytes differ from the reference's pickle+zlib: here each stream is
  deflated on its own inside pgolf's container.
- The bytes are deterministic: no timestamps, sorted JSON keys, tensors in
  state-dict order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf.atomic import atomic_write_bytes
from pgolf.errors import ArtifactError, CodecError, ConfigError
from pgolf.export.coding import codecs, rans
from pgolf.export.container import pack_container, read_container
from pgolf.export.quantize import (
    CLIPS,
    GROUPS,
    QuantizedTensor,
    check_bits,
    dequantize,
    is_control,
    qmax_of,
    quantize_rows,
    tensor_group,
)
from pgolf.progress import ProgressFn, no_progress
from pgolf.schema import ExportConfig

FORMAT = "pgolf-artifact"
FLOAT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
PRUNE_KINDS = ("magnitude", "global", "rows", "cols", "heads", "selective")
CONTROL_DTYPES = ("float32", "float16")
_ATTN_PART = {"attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_out": "proj"}

QuantizedStateDict = dict[str, "QuantizedTensor | Tensor"]
"""Name -> QuantizedTensor (quantized) or a tensor in its storage float dtype (kept float)."""


@dataclass
class ExportResult:
    blob: bytes
    """The complete artifact file content."""
    groups: list[dict[str, Any]]
    """One row per tensor group: group, tensors, params, bits, codec, zeros, entropy_bits_per_param,
    bound_bytes, bytes."""
    entropy_bound_bytes: int
    """Order-0 entropy of the levels plus raw scale and float bytes."""
    model_bytes: int
    """len(blob): what the artifact costs."""
    overhead_bytes: int = 0
    """Container frame and header: model_bytes minus the sum of stream bytes."""
    header: dict[str, Any] = field(default_factory=dict)
    """The header written into the container."""


# --------------------------------------------------------------------------- config checks

def check_export_config(cfg: ExportConfig) -> None:
    """ConfigError/CodecError for values export cannot use (also for hand-built configs)."""
    check_bits(cfg.bits, "export.bits")
    for group in GROUPS:
        bits = cfg.group_bits.for_group(group, cfg.bits)
        if bits != 16:
            check_bits(bits, f"export.group_bits.{group}")
    for name, bits in cfg.tensor_bits.items():
        if bits != 16:
            check_bits(bits, f"export.tensor_bits[{name}]")
    if cfg.clip not in CLIPS:
        raise ConfigError(f"export.clip must be one of {', '.join(CLIPS)}, got {cfg.clip!r}")
    if cfg.float_dtype not in FLOAT_DTYPES:
        raise ConfigError(f"export.float_dtype must be one of {', '.join(FLOAT_DTYPES)}, got {cfg.float_dtype!r}")
    if cfg.control_dtype not in CONTROL_DTYPES:
        raise ConfigError(f"export.control_dtype must be one of {', '.join(CONTROL_DTYPES)}, got "
                          f"{cfg.control_dtype!r}")
    if cfg.prune_kind not in PRUNE_KINDS:
        raise ConfigError(f"export.prune_kind must be one of {', '.join(PRUNE_KINDS)}, got {cfg.prune_kind!r}")
    if not 0 <= cfg.prune < 1:
        raise ConfigError(f"export.prune must be in [0, 1), got {cfg.prune}")
    if cfg.lqer_rank < 0:
        raise ConfigError(f"export.lqer_rank must be >= 0 (0 = off), got {cfg.lqer_rank}")
    if cfg.lqer_rank:
        check_bits(cfg.lqer_bits, "export.lqer_bits")
        if cfg.lqer_group < 0:
            raise ConfigError(f"export.lqer_group must be >= 0 (0 = per row), got {cfg.lqer_group}")
        if cfg.lqer_top_k < 1 and not cfg.lqer_tensors:
            raise ConfigError(f"export.lqer_top_k must be >= 1, got {cfg.lqer_top_k}")
    for codec in codecs.CODECS if cfg.codec == "auto" else (cfg.codec,):
        codecs.check_codec(codec)


def _plan(name: str, t: Tensor, cfg: ExportConfig) -> tuple[str, int | str]:
    """("quant", bits) or ("float", storage dtype name) for one tensor."""
    if not t.is_floating_point():
        raise ArtifactError(f"tensor {name} has dtype {t.dtype}; export handles floating-point tensors only")
    if is_control(name):
        return "float", cfg.control_dtype
    if name in cfg.tensor_bits:
        bits = cfg.tensor_bits[name]
        return ("float", cfg.float_dtype) if bits == 16 else ("quant", bits)
    bits = cfg.group_bits.for_group(tensor_group(name), cfg.bits)
    if t.numel() <= cfg.float_max_numel or bits == 16:
        return "float", cfg.float_dtype
    return "quant", bits


# --------------------------------------------------------------------------- quantize

def _head_dim(model_config: dict[str, Any] | None) -> int:
    try:
        return int(model_config["model_dim"]) // int(model_config["num_heads"])
    except (TypeError, KeyError, ValueError, ZeroDivisionError):
        raise ConfigError("export.prune_kind=heads needs model_dim and num_heads in the model config") from None


def _prune_float(weights: dict[str, Tensor], cfg: ExportConfig,
                 model_config: dict[str, Any] | None) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Pre-quantization pruning of the to-be-quantized tensors; returns them and the zeros made."""
    if cfg.prune == 0 or cfg.prune_kind == "selective":
        return weights, dict.fromkeys(weights, 0)
    from pgolf.export import prune as P  # imported when used: a packed script without pruning does not carry it

    if cfg.prune_kind == "global":
        return P.prune_global(weights, cfg.prune)
    out, zeros = {}, {}
    for name, w in weights.items():
        if cfg.prune_kind == "magnitude":
            out[name], zeros[name] = P.prune_magnitude(w, cfg.prune)
        elif cfg.prune_kind == "rows":
            out[name], zeros[name] = P.prune_rows(w, cfg.prune)
        elif cfg.prune_kind == "cols":
            out[name], zeros[name] = P.prune_cols(w, cfg.prune)
        else:
            out[name], zeros[name] = w, 0
    if cfg.prune_kind == "heads":
        _prune_heads(out, zeros, cfg.prune, _head_dim(model_config))
    return out, zeros


def _prune_heads(weights: dict[str, Tensor], zeros: dict[str, int], fraction: float, head_dim: int) -> None:
    """Whole-head pruning of every attention layer whose four matrices are all quantized (in `weights`)."""
    layers: dict[str, dict[str, str]] = {}
    for name in weights:
        part = _ATTN_PART.get(tensor_group(name))
        if part:
            layers.setdefault(name.rsplit(".attn.", 1)[0], {})[part] = name
    from pgolf.export.prune import prune_heads

    for names in layers.values():
        if len(names) < len(_ATTN_PART):
            continue  # a matrix of this layer is kept float: its heads are left whole
        pruned, made = prune_heads({part: weights[name] for part, name in names.items()}, fraction, head_dim)
        for part, name in names.items():
            weights[name], zeros[name] = pruned[part], made[part]


def check_tensor_bits(cfg: ExportConfig, names: list[str]) -> None:
    """ConfigError when export.tensor_bits names a tensor the state dict lacks, or a control tensor."""
    for name in cfg.tensor_bits:
        if name not in names:
            example = next((n for n in names if tensor_group(n) != "other"), names[0] if names else "")
            raise ConfigError(f"export.tensor_bits names {name!r}, which is not a tensor of this model "
                              f"(names look like {example!r})")
        if is_control(name):
            raise ConfigError(f"export.tensor_bits names {name!r}, a control tensor (always kept float32)")


def _quantize(state_dict: dict[str, Tensor], cfg: ExportConfig, model_config: dict[str, Any] | None,
              progress: ProgressFn, hessians: dict[str, Tensor] | None) -> tuple[QuantizedStateDict, dict[str, int]]:
    check_export_config(cfg)
    check_tensor_bits(cfg, list(state_dict))
    if cfg.gptq and hessians is None:
        raise ConfigError("export.gptq needs calibration Hessians (pgolf export/train/fit-budget measure them)")
    plans = {name: _plan(name, t, cfg) for name, t in state_dict.items()}
    to_quantize = {name: t.detach().cpu() for name, t in state_dict.items() if plans[name][0] == "quant"}
    pruned, zeros = _prune_float(to_quantize, cfg, model_config)
    scale_min = cfg.scale_min  # the reference's 1/127 floor in export=int8_zlib
    out: QuantizedStateDict = {}
    for i, (name, t) in enumerate(state_dict.items()):
        kind, how = plans[name]
        if kind == "float":
            out[name] = t.detach().cpu().to(FLOAT_DTYPES[how])
            if bool(torch.isfinite(t).all()) and not bool(torch.isfinite(out[name]).all()):
                raise ArtifactError(f"tensor {name} overflows {how} (largest |value| {float(t.abs().max()):g}); "
                                    "keep it wider (export.float_dtype / export.control_dtype)")
            zeros.setdefault(name, 0)
        else:
            try:
                clip_k = cfg.group_clip_k.for_group(tensor_group(name), cfg.clip_k)
                qt = quantize_rows(pruned[name], how, cfg.clip, cfg.clip_percentile, clip_k, scale_min)
            except ArtifactError as exc:
                raise ArtifactError(f"tensor {name}: {exc}") from None
            if cfg.gptq and name in hessians:
                from pgolf.export.gptq import gptq_levels  # imported when used, as the pruning functions

                qt = gptq_levels(pruned[name], hessians[name], qt, cfg.gptq_damp, name)
            if cfg.prune > 0 and cfg.prune_kind == "selective":
                from pgolf.export.prune import prune_selective

                qt, zeros[name] = prune_selective(qt, pruned[name], cfg.prune)
            out[name] = qt
        progress("quantize", i + 1, len(state_dict))
    if cfg.lqer_rank > 0:
        from pgolf.export.lqer import add_factors  # only then: a packed script carries lqer.py only then

        add_factors(out, pruned, cfg)
    return out, zeros


def quantize_state_dict(state_dict: dict[str, Tensor], cfg: ExportConfig, model_config: dict[str, Any] | None = None,
                        progress: ProgressFn = no_progress,
                        hessians: dict[str, Tensor] | None = None) -> QuantizedStateDict:
    """Quantize (and prune) a state dict in memory as export would; `model_config` is needed for heads pruning,
    `hessians` (gptq.layer_hessians) for export.gptq."""
    return _quantize(state_dict, cfg, model_config, progress, hessians)[0]


def dequantize_state_dict(qsd: QuantizedStateDict) -> dict[str, Tensor]:
    """float32 tensors of a quantized state dict (the values the artifact will load to)."""
    return {name: dequantize(v) if isinstance(v, QuantizedTensor) else v.float() for name, v in qsd.items()}


# --------------------------------------------------------------------------- encode

def _raw_bytes(t: Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _shuffle(raw: bytes, itemsize: int) -> bytes:
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, itemsize).T.tobytes()


def _unshuffle(raw: bytes, itemsize: int) -> bytes:
    return np.frombuffer(raw, dtype=np.uint8).reshape(itemsize, -1).T.tobytes()


def tensor_streams(value: QuantizedTensor | Tensor) -> dict[str, tuple[bytes, int, int]]:
    """Stream name -> (raw bytes, item size, row length) of one stored tensor (row length 0: not rows)."""
    if isinstance(value, QuantizedTensor):
        streams = {"q": (_raw_bytes(value.q), 1, value.q.numel() // value.scale.numel()),
                   "scale": (_raw_bytes(value.scale), 2, 0)}
        f = value.lqer
        if f is not None:  # LQER's factors: levels as rows, scales as fp16
            streams.update({"lqer_a": (_raw_bytes(f.a), 1, f.a.shape[1]), "lqer_a_scale": (_raw_bytes(f.a_scale), 2, 0),
                            "lqer_b": (_raw_bytes(f.b), 1, f.b.shape[1]),
                            "lqer_b_scale": (_raw_bytes(f.b_scale), 2, 0)})
        return streams
    return {"data": (_raw_bytes(value), value.element_size(), 0)}


def _encode_stream(codec: str, raw: bytes, itemsize: int, row_len: int, cfg: ExportConfig) -> tuple[bytes, bool]:
    """(coded bytes, shuffled?) of one stream, trying the byte-shuffled form when `shuffle` is on.

    rans and ctx code the byte planes of multi-byte values apart already, so they are never shuffled.
    """
    plain = codecs.encode(codec, raw, cfg.codec_level, itemsize, row_len)
    if not cfg.shuffle or itemsize == 1 or not raw or codec in codecs.ENTROPY_CODERS:
        return plain, False
    shuffled = codecs.encode(codec, _shuffle(raw, itemsize), cfg.codec_level)
    return (shuffled, True) if len(shuffled) < len(plain) else (plain, False)


def _encode_group(names: list[str], raws: dict[str, dict[str, tuple[bytes, int]]], cfg: ExportConfig
                  ) -> tuple[str, dict[str, dict[str, tuple[bytes, bool]]]]:
    """(codec, name -> stream -> (coded, shuffled)) for one tensor group."""
    candidates = codecs.CODECS if cfg.codec == "auto" else (cfg.codec,)
    best: tuple[int, str, dict] | None = None
    for codec in candidates:
        coded = {n: {key: _encode_stream(codec, *stream, cfg) for key, stream in raws[n].items()} for n in names}
        total = sum(len(blob) for streams in coded.values() for blob, _ in streams.values())
        if best is None or total < best[0]:
            best = (total, codec, coded)
    return best[1], best[2]


def entropy_bound_bits(value: QuantizedTensor | Tensor) -> float:
    """A stored tensor's share of the entropy bound: numel x H(levels) plus raw scales, or its raw float bits."""
    if isinstance(value, QuantizedTensor):
        bits = rans.entropy_bits(value.q.reshape(-1).numpy()) + 8 * value.scale.numel() * 2
        f = value.lqer
        if f is not None:
            bits += rans.entropy_bits(f.a.reshape(-1).numpy()) + rans.entropy_bits(f.b.reshape(-1).numpy())
            bits += 16 * (f.a_scale.numel() + f.b_scale.numel())
        return bits
    return 8.0 * value.numel() * value.element_size()


def _bits_label(values: list[QuantizedTensor | Tensor]) -> int | str:
    labels = {v.bits if isinstance(v, QuantizedTensor) else str(v.dtype).removeprefix("torch.") for v in values}
    return labels.pop() if len(labels) == 1 else "mixed"


def export_state_dict(state_dict: dict[str, Tensor], model_config: dict[str, Any], cfg: ExportConfig,
                      progress: ProgressFn = no_progress, hessians: dict[str, Tensor] | None = None) -> ExportResult:
    """Quantize, prune and encode `state_dict` into the bytes of an artifact, with the per-group table."""
    qsd, zeros = _quantize(state_dict, cfg, model_config, progress, hessians)
    raws = {name: tensor_streams(v) for name, v in qsd.items()}
    by_group: dict[str, list[str]] = {}
    for name in qsd:
        by_group.setdefault(tensor_group(name), []).append(name)

    coded: dict[str, dict[str, tuple[bytes, bool]]] = {}
    group_codec: dict[str, str] = {}
    for i, group in enumerate(g for g in GROUPS if g in by_group):
        group_codec[group], group_coded = _encode_group(by_group[group], raws, cfg)
        coded.update(group_coded)
        progress("encode", i + 1, len(by_group), group=group, codec=group_codec[group])

    payload, records, offset = bytearray(), [], 0
    for name, value in qsd.items():
        streams = {}
        for key, (blob, shuffled) in coded[name].items():
            stream = {"codec": group_codec[tensor_group(name)], "offset": offset, "length": len(blob),
                      "raw_bytes": len(raws[name][key][0])}
            if shuffled:
                stream["shuffle"] = True
            streams[key] = stream
            payload += blob
            offset += len(blob)
        record = {"name": name, "shape": list(state_dict[name].shape),
                  "dtype": str(state_dict[name].dtype).removeprefix("torch."), "streams": streams}
        if isinstance(value, QuantizedTensor):
            record.update(kind="quant", bits=value.bits, clip=cfg.clip)
            if value.lqer is not None:
                record["lqer"] = {"rank": value.lqer.rank, "bits": value.lqer.bits, "group": value.lqer.group}
        else:
            record.update(kind="float", store=str(value.dtype).removeprefix("torch."))
        records.append(record)

    export_fields = ("bits", "group_bits", "clip", "clip_percentile", "clip_k", "float_max_numel", "float_dtype",
                     "prune", "prune_kind", "codec", "codec_level", "shuffle")
    export_info = {key: getattr(cfg, key) for key in export_fields}
    export_info["group_bits"] = {g: cfg.group_bits.for_group(g, cfg.bits) for g in GROUPS}
    header = {"format": FORMAT, "model_config": model_config, "tensors": records, "export": export_info}
    blob = pack_container(header, bytes(payload))

    groups, bound_bits_total = [], 0.0
    for group in (g for g in GROUPS if g in by_group):
        names = by_group[group]
        params = sum(qsd[n].q.numel() if isinstance(qsd[n], QuantizedTensor) else qsd[n].numel() for n in names)
        bound_bits = sum(entropy_bound_bits(qsd[n]) for n in names)
        bound_bits_total += bound_bits
        groups.append({
            "group": group, "tensors": len(names), "params": params, "bits": _bits_label([qsd[n] for n in names]),
            "codec": group_codec[group], "zeros": sum(zeros[n] for n in names),
            "entropy_bits_per_param": bound_bits / max(1, params), "bound_bytes": math.ceil(bound_bits / 8),
            "bytes": sum(len(b) for n in names for b, _ in coded[n].values()),
        })
    return ExportResult(blob=blob, groups=groups, entropy_bound_bytes=math.ceil(bound_bits_total / 8),
                        model_bytes=len(blob), overhead_bytes=len(blob) - len(payload), header=header)


def write_artifact(path: Path | str, result: ExportResult) -> None:
    """Write the artifact bytes atomically."""
    atomic_write_bytes(path, result.blob)


# --------------------------------------------------------------------------- load

def _field(record: dict, key: str, kind: type, fail) -> Any:
    value = record.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise fail(f"field {key!r} is {value!r}, expected {kind.__name__}")
    return value


def _read_stream(record: dict, key: str, payload: bytes, n_bytes: int, itemsize: int, row_len: int, fail) -> bytes:
    stream = record["streams"].get(key)
    if not isinstance(stream, dict):
        raise fail(f"has no {key!r} stream")
    codec = _field(stream, "codec", str, fail)
    if codec not in codecs.CODECS:
        raise fail(f"stream {key} uses unknown codec {codec!r}")
    if _field(stream, "raw_bytes", int, fail) != n_bytes:
        raise fail(f"stream {key} holds {stream['raw_bytes']} bytes, its shape needs {n_bytes}")
    shuffled = stream.get("shuffle", False)
    if not isinstance(shuffled, bool):
        raise fail(f"stream {key} has a non-boolean shuffle flag {shuffled!r}")
    blob = payload[stream["offset"] : stream["offset"] + stream["length"]]
    try:
        raw = codecs.decode(codec, blob, n_bytes, itemsize, row_len)
    except ArtifactError as exc:
        raise fail(f"stream {key}: {exc}") from None
    except CodecError as exc:
        raise fail(f"stream {key}: {exc}") from None
    return _unshuffle(raw, itemsize) if shuffled else raw


def _load_tensor(record: dict, payload: bytes, fail) -> Tensor:
    shape = _field(record, "shape", list, fail)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise fail(f"has a bad shape {shape!r}")
    numel = math.prod(shape)
    kind = _field(record, "kind", str, fail)
    if kind == "float":
        store = _field(record, "store", str, fail)
        if store not in FLOAT_DTYPES:
            raise fail(f"has an unknown storage dtype {store!r}")
        dtype = FLOAT_DTYPES[store]
        itemsize = torch.empty(0, dtype=dtype).element_size()
        raw = _read_stream(record, "data", payload, numel * itemsize, itemsize, 0, fail)
        if numel == 0:
            return torch.zeros(shape)
        return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape).float()
    if kind != "quant":
        raise fail(f"has an unknown kind {kind!r}")
    bits = _field(record, "bits", int, fail)
    if not 2 <= bits <= 8:
        raise fail(f"has bits {bits}, outside 2..8")
    if numel == 0:
        raise fail("is an empty quantized tensor")
    rows = shape[0] if len(shape) >= 2 else 1
    q = np.frombuffer(_read_stream(record, "q", payload, numel, 1, numel // rows, fail), dtype=np.int8)
    scale = np.frombuffer(_read_stream(record, "scale", payload, rows * 2, 2, 0, fail), dtype="<f2")
    if int(np.abs(q.astype(np.int16)).max()) > qmax_of(bits):
        raise fail(f"has levels outside +-{qmax_of(bits)} for {bits} bits")
    if not np.isfinite(scale).all():
        raise fail("has non-finite scales")
    qt = QuantizedTensor(q=torch.from_numpy(q.copy()).reshape(shape), scale=torch.from_numpy(scale.copy()), bits=bits)
    if "lqer" in record:
        from pgolf.export.lqer import read_factors

        def read(key: str, n: int, itemsize: int, row_len: int) -> bytes:
            return _read_stream(record, key, payload, n, itemsize, row_len, fail)

        qt.lqer = read_factors(record["lqer"], read, rows, numel // rows, fail)
    return dequantize(qt)


def decode_artifact(source: Path | str | bytes, name: str | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(model_config, float32 state dict) from artifact bytes or a path; ArtifactError on any problem."""
    header, payload = read_container(source, name)
    where = name or ("<bytes>" if isinstance(source, bytes | bytearray) else str(source))
    if header.get("format") != FORMAT:
        raise ArtifactError(f"artifact {where}: header format is {header.get('format')!r}, expected {FORMAT!r}")
    model_config = header.get("model_config")
    if not isinstance(model_config, dict):
        raise ArtifactError(f"artifact {where}: header has no model_config object")
    state_dict: dict[str, Tensor] = {}
    for i, record in enumerate(header["tensors"]):
        label = record.get("name")

        def fail(problem: str, label=label if isinstance(label, str) else f"#{i}") -> ArtifactError:
            return ArtifactError(f"artifact {where}: tensor {label} {problem}")

        tensor_name = _field(record, "name", str, fail)
        if tensor_name in state_dict:
            raise fail("appears twice")
        state_dict[tensor_name] = _load_tensor(record, payload, fail)
    return model_config, state_dict


def load_artifact(path: Path | str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(model_config, state dict of float32 tensors) read back from an artifact file."""
    return decode_artifact(Path(path))

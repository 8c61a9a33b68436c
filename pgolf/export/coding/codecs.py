"""Byte codecs for artifact streams: zlib, zstd, lzma, brotli, `rans` and `ctx`.

Every codec maps bytes to bytes; `decode` is told the decoded length and
checks it, so a corrupt stream is an ArtifactError, never a short tensor.

What is non-standard here:
- `rans` is our entropy coder (rans.py: histograms fitted to each stream,
  row buckets, compact heads; ans.py: the compiled rANS core); `ctx` codes a
  matrix's levels under histograms conditioned on row group, column group and
  a reference row (ctx.py), and is the rans stream whenever that is smaller.
  ctx is imported where it is used: a packed script whose config cannot
  choose it does not carry it.
- zlib writes raw deflate (no 6-byte wrapper) and lzma the 13-byte .lzma
  container instead of .xz's ~60: artifacts hold hundreds of streams.
- level -1 means each codec's maximum (zlib 9, zstd 22, lzma 9, brotli 11);
  rans and ctx have no levels and ignore it.
- brotli and zstandard are core dependencies, and `codec=auto` always tries
  all of CODECS: one config gives the same bytes on every install. A missing
  library is a CodecError naming the package, never a silent switch to another
  codec or a silent drop from auto's set (records lost bytes to exactly that).
"""

from __future__ import annotations

import lzma
import zlib

import numpy as np

from pgolf.errors import ArtifactError, CodecError
from pgolf.export.coding import rans

CODECS = ("zlib", "zstd", "lzma", "brotli", "rans", "ctx")
MAX_LEVEL = {"zlib": 9, "zstd": 22, "lzma": 9, "brotli": 11, "rans": 0, "ctx": 0}
_MIN_LEVEL = {"zlib": 0, "zstd": 1, "lzma": 0, "brotli": 0, "rans": 0, "ctx": 0}
ENTROPY_CODERS = ("rans", "ctx")
"""Codecs that read the stream's layout (item size, row length) and code fp16 byte planes apart (never shuffled)."""


def _brotli():
    try:
        import brotli
    except ImportError:
        raise CodecError("codec brotli needs the 'brotli' package: pip install brotli") from None
    return brotli


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise CodecError("codec zstd needs the 'zstandard' package: pip install zstandard") from None
    return zstandard


def check_codec(codec: str) -> None:
    """CodecError unless `codec` is known and its library importable."""
    if codec not in CODECS:
        raise CodecError(f"unknown codec {codec!r} (choose from {', '.join(CODECS)})")
    if codec == "brotli":
        _brotli()
    elif codec == "zstd":
        _zstd()


def available_codecs() -> list[str]:
    """Codecs whose libraries are installed, in CODECS order (for benchmarks: `codec=auto` uses all of CODECS)."""
    found = []
    for codec in CODECS:
        try:
            check_codec(codec)
        except CodecError:
            continue
        found.append(codec)
    return found


def _level(codec: str, level: int) -> int:
    if level == -1 or codec in ENTROPY_CODERS:  # they have no levels
        return MAX_LEVEL[codec]
    if not _MIN_LEVEL[codec] <= level <= MAX_LEVEL[codec]:
        raise CodecError(f"codec {codec} level must be in {_MIN_LEVEL[codec]}..{MAX_LEVEL[codec]} or -1, got {level}")
    return level


def encode(codec: str, data: bytes | np.ndarray, level: int = -1, itemsize: int = 1, row_len: int = 0) -> bytes:
    """Compress `data` (bytes, or an array taken as its raw bytes) with `codec` at `level`.

    `itemsize` (bytes per value, e.g. 2 for fp16) and `row_len` (values per row
    of a quantized matrix) describe the layout; only `rans` and `ctx` use them, and
    `decode` must be given the same values.
    """
    check_codec(codec)
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    level = _level(codec, level)
    if codec == "zlib":
        packer = zlib.compressobj(level, zlib.DEFLATED, -15)
        return packer.compress(raw) + packer.flush()
    if codec == "zstd":
        return _zstd().ZstdCompressor(level=level, write_content_size=False).compress(raw)
    if codec == "lzma":
        dict_bytes = min(max(4096, len(raw)), 64 * 2**20)  # a dictionary past the input only costs setup time
        filters = [{"id": lzma.FILTER_LZMA1, "preset": level, "dict_size": dict_bytes}]
        return lzma.compress(raw, format=lzma.FORMAT_ALONE, filters=filters)
    if codec == "brotli":
        return _brotli().compress(raw, quality=level, lgwin=24)
    if codec == "ctx":
        from pgolf.export.coding import ctx

        return ctx.encode(np.frombuffer(raw, dtype=np.int8), itemsize, row_len)
    return rans.encode(np.frombuffer(raw, dtype=np.int8), itemsize, row_len)


def decode(codec: str, blob: bytes, n_bytes: int, itemsize: int = 1, row_len: int = 0) -> bytes:
    """Decompress `blob`, which must decode to exactly `n_bytes` bytes (ArtifactError otherwise)."""
    check_codec(codec)
    try:
        if codec == "zlib":
            unpacker = zlib.decompressobj(-15)
            raw = unpacker.decompress(blob, n_bytes + 1)
        elif codec == "zstd":
            raw = _zstd().ZstdDecompressor().decompress(blob, max_output_size=n_bytes + 1)
        elif codec == "lzma":
            raw = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(blob, max_length=n_bytes + 1)
        elif codec == "brotli":
            raw = _brotli().decompress(blob)
        elif codec == "ctx":
            from pgolf.export.coding import ctx

            raw = ctx.decode(blob, n_bytes, itemsize, row_len).tobytes()
        else:
            raw = rans.decode(blob, n_bytes, itemsize, row_len).tobytes()
    except ArtifactError:
        raise
    except Exception as exc:  # each library raises its own error types on corrupt input
        detail = (str(exc).splitlines() or [""])[0]
        raise ArtifactError(f"corrupt {codec} stream ({type(exc).__name__}: {detail})") from None
    if len(raw) != n_bytes:
        raise ArtifactError(f"{codec} stream decodes to {len(raw)} bytes, expected {n_bytes}")
    return raw

"""Byte codecs for artifact streams: zlib, zstd, lzma, brotli and `rans`.

Every codec maps bytes to bytes; `decode` is told the decoded length and
checks it, so a corrupt stream is an ArtifactError, never a short tensor.

What is non-standard here:
- `rans` is an order-0 entropy coder (constriction's 64-bit-state ANS coder,
  24-bit probabilities) under the stream's own histogram. It reads bytes as
  int8 values, so quantized levels -31..31 use a 63-symbol alphabet, not 256.
  Stream layout: zigzag varint of the smallest value, varint of the alphabet
  size m, m varint counts (exact, so the model costs no KL), then the ANS
  words (uint32 little-endian). A one-symbol stream has no words. It lands a
  few bytes above count x entropy, and runs far faster than zstd-22.
- zlib writes raw deflate (no 6-byte wrapper) and lzma the 13-byte .lzma
  container instead of .xz's ~60: artifacts hold hundreds of streams.
- level -1 means each codec's maximum (zlib 9, zstd 22, lzma 9, brotli 11).
- brotli is an optional extra; a missing library is a CodecError, never a
  silent switch to another codec (records lost bytes to exactly that).
"""

from __future__ import annotations

import lzma
import zlib

import constriction
import numpy as np

from pgolf.errors import ArtifactError, CodecError

CODECS = ("zlib", "zstd", "lzma", "brotli", "rans")
MAX_LEVEL = {"zlib": 9, "zstd": 22, "lzma": 9, "brotli": 11, "rans": 0}
_MIN_LEVEL = {"zlib": 0, "zstd": 1, "lzma": 0, "brotli": 0, "rans": 0}


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
    """Codecs whose libraries are installed, in CODECS order."""
    found = []
    for codec in CODECS:
        try:
            check_codec(codec)
        except CodecError:
            continue
        found.append(codec)
    return found


def _level(codec: str, level: int) -> int:
    if level == -1:
        return MAX_LEVEL[codec]
    if not _MIN_LEVEL[codec] <= level <= MAX_LEVEL[codec]:
        raise CodecError(f"codec {codec} level must be in {_MIN_LEVEL[codec]}..{MAX_LEVEL[codec]} or -1, got {level}")
    return level


def encode(codec: str, data: bytes | np.ndarray, level: int = -1) -> bytes:
    """Compress `data` (bytes, or an array taken as its raw bytes) with `codec` at `level`."""
    check_codec(codec)
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    level = _level(codec, level)
    if codec == "zlib":
        packer = zlib.compressobj(level, zlib.DEFLATED, -15)
        return packer.compress(raw) + packer.flush()
    if codec == "zstd":
        return _zstd().ZstdCompressor(level=level, write_content_size=False).compress(raw)
    if codec == "lzma":
        return lzma.compress(raw, format=lzma.FORMAT_ALONE, preset=level)
    if codec == "brotli":
        return _brotli().compress(raw, quality=level, lgwin=24)
    return _rans_encode(np.frombuffer(raw, dtype=np.int8))


def decode(codec: str, blob: bytes, n_bytes: int) -> bytes:
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
        else:
            raw = _rans_decode(blob, n_bytes).tobytes()
    except ArtifactError:
        raise
    except Exception as exc:  # each library raises its own error types on corrupt input
        detail = (str(exc).splitlines() or [""])[0]
        raise ArtifactError(f"corrupt {codec} stream ({type(exc).__name__}: {detail})") from None
    if len(raw) != n_bytes:
        raise ArtifactError(f"{codec} stream decodes to {len(raw)} bytes, expected {n_bytes}")
    return raw


# --------------------------------------------------------------------------- varints

def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(blob: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(blob) or shift > 63:
            raise ArtifactError("corrupt rans stream (truncated histogram)")
        byte = blob[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


# --------------------------------------------------------------------------- rans

def histogram(symbols: np.ndarray) -> tuple[int, np.ndarray]:
    """(smallest value, counts of every value from it to the largest) of an int8 array."""
    values = symbols.astype(np.int64)
    low = int(values.min())
    return low, np.bincount(values - low)


def entropy_bits(symbols: np.ndarray) -> float:
    """Order-0 entropy of an int8 array in bits: count x H(histogram)."""
    if symbols.size == 0:
        return 0.0
    counts = histogram(symbols)[1].astype(np.float64)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts / symbols.size)).sum())


def _categorical(counts: np.ndarray):
    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def _rans_encode(symbols: np.ndarray) -> bytes:
    if symbols.size == 0:
        return b""
    low, counts = histogram(symbols)
    head = bytearray()
    _put_varint(head, (low << 1) ^ (low >> 63))  # zigzag
    _put_varint(head, len(counts))
    for count in counts.tolist():
        _put_varint(head, count)
    if len(counts) == 1:
        return bytes(head)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.astype(np.int32) - low, _categorical(counts))
    return bytes(head) + coder.get_compressed().astype("<u4").tobytes()


def _rans_decode(blob: bytes, n_bytes: int) -> np.ndarray:
    if n_bytes == 0:
        if blob:
            raise ArtifactError("rans stream of 0 symbols is not empty")
        return np.zeros(0, dtype=np.int8)
    zigzag, pos = _get_varint(blob, 0)
    low = (zigzag >> 1) ^ -(zigzag & 1)
    size, pos = _get_varint(blob, pos)
    if not 1 <= size <= 256 or not -128 <= low <= 127 - size + 1:
        raise ArtifactError(f"corrupt rans stream (alphabet {low}..{low + size - 1} is not within int8)")
    counts = []
    for _ in range(size):
        count, pos = _get_varint(blob, pos)
        counts.append(count)
    if sum(counts) != n_bytes or counts[0] == 0 or counts[-1] == 0:
        raise ArtifactError(f"corrupt rans stream (histogram holds {sum(counts)} symbols, expected {n_bytes})")
    if size == 1:
        if pos != len(blob):
            raise ArtifactError("corrupt rans stream (trailing bytes after a one-symbol histogram)")
        return np.full(n_bytes, low, dtype=np.int8)
    words = blob[pos:]
    if not words or len(words) % 4:
        raise ArtifactError(f"corrupt rans stream ({len(words)} payload bytes is not a whole number of words)")
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
    symbols = coder.decode(_categorical(np.asarray(counts, dtype=np.int64)), n_bytes)  # (n,) int32
    if not coder.is_empty():
        raise ArtifactError("corrupt rans stream (words left after decoding)")
    return (symbols + low).astype(np.int8)

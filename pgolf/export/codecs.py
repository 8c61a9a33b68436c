"""Byte codecs for artifact streams: zlib, zstd, lzma, brotli and `rans`.

Every codec maps bytes to bytes; `decode` is told the decoded length and
checks it, so a corrupt stream is an ArtifactError, never a short tensor.

What is non-standard here:
- `rans` is an entropy coder (constriction's ANS coder, 64-bit state, 24-bit
  probabilities) under histograms fitted to the stream itself. It reads bytes
  as int8 values, so int6 levels use a 63-symbol alphabet, not 256. The
  stream is cut into segments, each with its own exact histogram (so the model
  costs header bytes, not KL): the byte planes of multi-byte values (fp16
  scales: a low-entropy exponent plane and a mantissa plane), or, for a
  quantized matrix, row buckets. Rows differ in how many levels they spread
  over (their clip cuts a different share of their tail), so one histogram per
  tensor wastes ~1% against histograms per bucket of similar rows; the encoder
  picks 1..16 buckets per tensor (spread-ranked, refined by Lloyd steps) and
  stores a bucket id per row. Layout: [varint K for row-bucketed streams]
  then per segment varint alphabet size m, zigzag varint smallest value, m
  varint counts (or m = 257 and the segment's bytes as they are, when coding
  would not beat them: short near-uniform mantissa planes); then the ANS
  words (uint32 little-endian) of all segments. Because of the buckets and
  the coded scales, rans usually lands *below* the order-0 entropy bound that
  export reports (that bound has one histogram per tensor and raw scales).
- zlib writes raw deflate (no 6-byte wrapper) and lzma the 13-byte .lzma
  container instead of .xz's ~60: artifacts hold hundreds of streams.
- level -1 means each codec's maximum (zlib 9, zstd 22, lzma 9, brotli 11);
  rans has no levels and ignores it.
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
    if level == -1 or codec == "rans":  # rans has no levels
        return MAX_LEVEL[codec]
    if not _MIN_LEVEL[codec] <= level <= MAX_LEVEL[codec]:
        raise CodecError(f"codec {codec} level must be in {_MIN_LEVEL[codec]}..{MAX_LEVEL[codec]} or -1, got {level}")
    return level


def encode(codec: str, data: bytes | np.ndarray, level: int = -1, itemsize: int = 1, row_len: int = 0) -> bytes:
    """Compress `data` (bytes, or an array taken as its raw bytes) with `codec` at `level`.

    `itemsize` (bytes per value, e.g. 2 for fp16) and `row_len` (values per row
    of a quantized matrix) describe the layout; only `rans` uses them, and
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
    return _rans_encode(np.frombuffer(raw, dtype=np.int8), itemsize, row_len)


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
        else:
            raw = _rans_decode(blob, n_bytes, itemsize, row_len).tobytes()
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
    values = symbols.astype(np.int64).ravel()
    low = int(values.min())
    return low, np.bincount(values - low)


def entropy_bits(symbols: np.ndarray) -> float:
    """Order-0 entropy of an int8 array in bits: count x H(histogram)."""
    if symbols.size == 0:
        return 0.0
    return _entropy_of_counts(histogram(symbols)[1])


def _entropy_of_counts(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    return float(-(counts * np.log2(counts / counts.sum())).sum()) if counts.size else 0.0


def _varint_bytes(values: np.ndarray) -> int:
    return int(np.sum(1 + (np.log2(np.maximum(values, 1)) // 7)))


def _row_buckets(rows: np.ndarray) -> np.ndarray:
    """Bucket id per row (0..K-1) minimizing the estimated coded size; K = 1 when buckets do not pay.

    Rows are first ranked by the spread of their levels, then refined by a few
    Lloyd steps that move each row to the bucket whose histogram codes it in the
    fewest bits. K is picked from 1, 2, 4, 8, 16 by entropy plus header cost.
    """
    n_rows = rows.shape[0]
    low, m = int(rows.min()), int(rows.max()) - int(rows.min()) + 1
    row_base = (np.arange(n_rows, dtype=np.intp) * m - low)[:, None]
    hist = np.bincount((rows + row_base).ravel(), minlength=n_rows * m).reshape(n_rows, m)  # (R, m)
    hist_f = hist.astype(np.float64)
    values = np.arange(m) + low
    mean = np.einsum("rm,m->r", hist_f, values) / rows.shape[1]
    spread = np.einsum("rm,m->r", hist_f, values * values) / rows.shape[1] - mean * mean  # per-row level variance

    def bucket_hist(ids: np.ndarray, k: int) -> np.ndarray:  # (K, m); integer sums, exact in float64
        return np.einsum("kr,rm->km", (ids == np.arange(k)[:, None]).astype(np.float64), hist_f).astype(np.int64)

    def size_bits(ids: np.ndarray, k: int) -> float:
        counts = bucket_hist(ids, k)
        header_bits = 8 * (_varint_bytes(counts.ravel()) + 3 * k)
        return sum(_entropy_of_counts(h) for h in counts) + header_bits + _entropy_of_counts(np.bincount(ids))

    best_ids, best_bits = np.zeros(n_rows, dtype=np.int64), size_bits(np.zeros(n_rows, dtype=np.int64), 1)
    ranks = np.argsort(np.argsort(spread, kind="stable"), kind="stable")
    for k in (2, 4, 8, 16):
        if k > n_rows:
            break
        ids = ranks * k // n_rows
        for _ in range(8):
            smoothed = bucket_hist(ids, k) + 0.5
            # Code lengths in whole 1/65536 bits: every product and sum below is an integer under 2^53, so the
            # costs are exact whatever the summation order. einsum (not @) keeps BLAS threads out of tiny products.
            code_len = np.round(-np.log2(smoothed / smoothed.sum(1, keepdims=True)) * 65536)
            cost = np.einsum("rm,km->rk", hist_f, code_len)  # (R, K)
            new_ids = np.unique(cost.argmin(1), return_inverse=True)[1].reshape(-1)
            if np.array_equal(new_ids, ids):
                break
            ids = new_ids
        bits = size_bits(ids, int(ids.max()) + 1)
        if bits < best_bits:
            best_ids, best_bits = ids, bits
    return best_ids


_RAW_SEGMENT = 257  # alphabet-size marker of a segment stored as plain bytes


def _categorical(counts: np.ndarray):
    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def _segments(symbols: np.ndarray, itemsize: int, row_len: int) -> tuple[list[np.ndarray], int]:
    """(segments to code in order, bucket count K or 0) for the stream's layout."""
    if itemsize > 1:
        return list(symbols.reshape(-1, itemsize).T), 0
    if row_len > 0:
        rows = symbols.reshape(-1, row_len)
        ids = _row_buckets(rows)
        k = int(ids.max()) + 1
        if k > 1:
            return [ids.astype(np.int8)] + [rows[ids == b].ravel() for b in range(k)], k
        return [symbols], 1
    return [symbols], 0


def _rans_encode(symbols: np.ndarray, itemsize: int, row_len: int) -> bytes:
    if symbols.size == 0:
        return b""
    segments, k = _segments(symbols, itemsize, row_len)
    head, models = bytearray(), []
    if row_len > 0 and itemsize == 1:
        _put_varint(head, k)
    for segment in segments:
        if segment.size == 0:
            _put_varint(head, 0)
            models.append(None)
            continue
        low, counts = histogram(segment)
        head_bytes = _varint_bytes(counts) + 4
        if _entropy_of_counts(counts) / 8 + head_bytes >= segment.size:  # near-uniform and short: store it
            _put_varint(head, _RAW_SEGMENT)
            head += segment.tobytes()
            models.append(None)
            continue
        _put_varint(head, len(counts))
        _put_varint(head, (low << 1) ^ (low >> 63))  # zigzag
        for count in counts.tolist():
            _put_varint(head, count)
        models.append((segment.astype(np.int32) - low, _categorical(counts)) if len(counts) > 1 else None)
    coder = constriction.stream.stack.AnsCoder()
    for model in reversed(models):  # a stack: the first segment decoded is the last encoded
        if model is not None:
            coder.encode_reverse(*model)
    words = coder.get_compressed().astype("<u4").tobytes() if any(m is not None for m in models) else b""
    return bytes(head) + words


def _read_histogram(blob: bytes, pos: int, n_expected: int) -> tuple[int, list[int] | bytes, int]:
    """(low, counts, new position) of one segment's histogram, checked against its symbol count.

    A stored (raw) segment returns its bytes in place of the counts.
    """
    size, pos = _get_varint(blob, pos)
    if size == _RAW_SEGMENT:
        if pos + n_expected > len(blob):
            raise ArtifactError("corrupt rans stream (stored segment runs past the end)")
        return 0, blob[pos : pos + n_expected], pos + n_expected
    if size == 0:
        if n_expected:
            raise ArtifactError(f"corrupt rans stream (empty segment, expected {n_expected} symbols)")
        return 0, [], pos
    zigzag, pos = _get_varint(blob, pos)
    low = (zigzag >> 1) ^ -(zigzag & 1)
    if not 1 <= size <= 256 or not -128 <= low <= 128 - size:
        raise ArtifactError(f"corrupt rans stream (alphabet {low}..{low + size - 1} is not within int8)")
    counts = []
    for _ in range(size):
        count, pos = _get_varint(blob, pos)
        counts.append(count)
    if sum(counts) != n_expected or counts[0] == 0 or counts[-1] == 0:
        raise ArtifactError(f"corrupt rans stream (histogram holds {sum(counts)} symbols, expected {n_expected})")
    return low, counts, pos


def _coded(counts: list[int] | bytes) -> bool:
    """True when a segment's symbols come from the ANS words (not stored, not a single symbol)."""
    return isinstance(counts, list) and len(counts) > 1


class _SegmentReader:
    """Reads histograms from the stream head, then decodes segments in order from the ANS words."""

    def __init__(self, blob: bytes):
        self.blob, self.pos, self.coder = blob, 0, None

    def varint(self) -> int:
        value, self.pos = _get_varint(self.blob, self.pos)
        return value

    def histogram(self, n_expected: int) -> tuple[int, list[int]]:
        low, counts, self.pos = _read_histogram(self.blob, self.pos, n_expected)
        return low, counts

    def start_words(self, needed: bool) -> None:
        words = self.blob[self.pos:]
        if not needed:
            if words:
                raise ArtifactError(f"corrupt rans stream ({len(words)} unexpected trailing bytes)")
            return
        if not words or len(words) % 4:
            raise ArtifactError(f"corrupt rans stream ({len(words)} payload bytes is not a whole number of words)")
        self.coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))

    def decode(self, low: int, counts: list[int] | bytes) -> np.ndarray:
        if isinstance(counts, bytes):
            return np.frombuffer(counts, dtype=np.int8)
        n = sum(counts)
        if not _coded(counts):
            return np.full(n, low, dtype=np.int8)
        symbols = self.coder.decode(_categorical(np.asarray(counts, dtype=np.int64)), n)  # (n,) int32
        return (symbols + low).astype(np.int8)

    def finish(self) -> None:
        if self.coder is not None and not self.coder.is_empty():
            raise ArtifactError("corrupt rans stream (words left after decoding)")


def _rans_decode(blob: bytes, n_bytes: int, itemsize: int, row_len: int) -> np.ndarray:
    if n_bytes == 0:
        if blob:
            raise ArtifactError("rans stream of 0 symbols is not empty")
        return np.zeros(0, dtype=np.int8)
    reader = _SegmentReader(blob)
    if itemsize > 1:
        if n_bytes % itemsize:
            raise ArtifactError(f"rans stream of {n_bytes} bytes is not a whole number of {itemsize}-byte items")
        hists = [reader.histogram(n_bytes // itemsize) for _ in range(itemsize)]
        reader.start_words(any(_coded(c) for _, c in hists))
        planes = [reader.decode(low, counts) for low, counts in hists]
        reader.finish()
        return np.stack(planes, axis=1).reshape(-1)
    if row_len <= 0:
        low, counts = reader.histogram(n_bytes)
        reader.start_words(_coded(counts))
        out = reader.decode(low, counts)
        reader.finish()
        return out
    if n_bytes % row_len:
        raise ArtifactError(f"rans stream of {n_bytes} bytes is not a whole number of {row_len}-byte rows")
    n_rows, k = n_bytes // row_len, reader.varint()
    if k == 1:
        low, counts = reader.histogram(n_bytes)
        reader.start_words(_coded(counts))
        out = reader.decode(low, counts)
        reader.finish()
        return out
    if not 2 <= k <= min(n_rows, 127):
        raise ArtifactError(f"corrupt rans stream ({k} row buckets for {n_rows} rows)")
    id_low, id_counts = reader.histogram(n_rows)
    if isinstance(id_counts, bytes):
        stored_ids = np.frombuffer(id_counts, dtype=np.int8)
        id_low, id_high = int(stored_ids.min()), int(stored_ids.max())
        rows_per_bucket = np.bincount(stored_ids.astype(np.int64) - min(id_low, 0), minlength=k).tolist()
    else:
        id_high = id_low + len(id_counts) - 1
        rows_per_bucket = [0] * id_low + id_counts + [0] * (k - id_high - 1)
    if id_low < 0 or id_high >= k:
        raise ArtifactError(f"corrupt rans stream (row bucket ids outside 0..{k - 1})")
    hists = [reader.histogram(rows * row_len) for rows in rows_per_bucket]
    reader.start_words(_coded(id_counts) or any(_coded(c) for _, c in hists))
    ids = reader.decode(id_low, id_counts).astype(np.int64)
    out = np.empty((n_rows, row_len), dtype=np.int8)
    for bucket, (low, counts) in enumerate(hists):
        out[ids == bucket] = reader.decode(low, counts).reshape(-1, row_len)
    reader.finish()
    return out.reshape(-1)

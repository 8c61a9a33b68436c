"""Byte codecs for artifact streams: zlib, zstd, lzma, brotli and `rans`.

Every codec maps bytes to bytes; `decode` is told the decoded length and
checks it, so a corrupt stream is an ArtifactError, never a short tensor.

What is non-standard here:
- `rans` is an entropy coder (constriction's ANS coder, 64-bit state, 24-bit
  probabilities) under histograms fitted to the stream itself. It reads bytes
  as int8 values, so int6 levels use a 63-symbol alphabet, not 256. The
  stream is cut into segments, each with its own histogram: the byte planes
  of multi-byte values (fp16 scales: exponent and mantissa planes), or, for a
  quantized matrix, row buckets. Rows differ in how many levels they spread
  over (their clip cuts a different share of their tail), so one histogram
  per tensor wastes ~1%; the encoder tries K = 4..32 buckets (rows ranked by
  spread, then 4 Lloyd steps that move each row to the bucket coding it, and
  its bucket id, in the fewest bits; more steps or K = 2, 3 gained < 0.01%
  for ~30% more encode time) and keeps the smallest total (symbols +
  histograms + ids; K = 1 when buckets do not pay). On bench/bench_codecs.py
  (17M int6 levels of heavy-tailed rows) the levels code to 9.518 MB against
  9.633 MB for one exact histogram per tensor.
- Histograms are stored as round(sqrt(count)): a count c is only known to
  about +-sqrt(c), and rounding its root costs ~1/6 nat per value whatever c,
  while storing exact counts costs 2-3 bytes each. The roots are delta coded
  (Rice codes, cheapest parameter per histogram); a histogram symmetric
  around 0 stores only the |value| half when that is cheaper (level
  histograms almost always). The model weights are the squared roots,
  integers, so every machine builds the same model. This cut the histogram
  heads from ~29 KB to ~7 KB on the bench, which in turn lets more buckets
  pay. Layout: [varint K for row streams] then per segment a head (varint tag
  = 2 x alphabet size + symmetric; zigzag smallest value unless symmetric;
  varint first root; a Rice parameter byte; the packed Rice codes), or tag 0,
  a varint length and the bytes as they are when coding would not beat them
  (short near-uniform mantissa planes); then the ANS words (uint32
  little-endian) of all coded segments.
- Not done: a context on the previous symbol's magnitude (the bench's rows
  are i.i.d., so only a real checkpoint can show a gain; it multiplies the
  histograms to store); one shared histogram set per tensor group (each
  stream is coded on its own by the API); finer splits of fp16 scales than
  byte planes (estimated within 0.5 KB of them: scales spread over ~4
  octaves at 10-bit precision, ~11.6 bits each whatever the split).
- Speed: constriction decodes one symbol at a time (~19-30 ns for 63 values,
  ~11 ns even for 2; 84% of rans decode time) and holds the GIL (threads do
  not help), so decoding 17M levels takes ~0.3 s however the encoder is
  tuned, while 10x faster than zstd-22 (3-4.5 s here) leaves 0.3-0.45 s for
  encode and decode together: out of reach without a compiled decoder.
  Numpy-vectorized interleaved rANS does not rescue it: each lane costs
  ~3 bytes of flushed state, and per-call numpy overhead needs thousands of
  lanes per tensor to be fast.
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
from typing import NamedTuple

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


# --------------------------------------------------------------------------- rans: histograms

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


_RAW = 0  # tag of a stored segment; a coded one's is 2 x alphabet size + (1 if symmetric)
_MAX_UNARY = 4096  # longest unary part of a Rice code the decoder accepts


class _Model(NamedTuple):
    """A segment's histogram as the stream head stores it, the weights the coder uses, and the bits it costs."""

    tag: int
    """2 x alphabet size + (1 if symmetric: only the counts of |value| are stored)."""
    low: int
    roots: np.ndarray
    """Rounded square roots of the stored counts."""
    rice_r: int
    weights: np.ndarray
    """float64 integer weight of every value from `low` on (exact, so every machine builds the same model)."""
    bits: float
    """Head bits plus the symbols' code length under `weights`."""


def _rice_bits(values: np.ndarray) -> tuple[int, int]:
    """(r, bits) of the cheapest Rice code of non-negative ints (unary quotient, then r low bits)."""
    top = int(values.max()).bit_length()
    rs = np.arange(max(0, top - 12), max(top, 1))  # top - 12 keeps quotients under _MAX_UNARY
    bits = (values[None, :] >> rs[:, None]).sum(1) + len(values) * (rs + 1)
    return int(rs[bits.argmin()]), int(bits.min())


def _varint_len(value: int) -> int:
    return max(1, -(-value.bit_length() // 7))


def _fit_counts(tag: int, low: int, counts: np.ndarray, stored: np.ndarray, expand) -> _Model:
    roots = np.round(np.sqrt(stored)).astype(np.int64)
    deltas = np.diff(roots)
    rice_r, rice_bits = _rice_bits((deltas << 1) ^ (deltas >> 63))
    weights = expand(roots * roots).astype(np.float64)
    used = counts > 0
    code_bits = float(-(counts[used] * np.log2(weights[used] / weights.sum())).sum())
    low_len = 0 if tag & 1 else _varint_len((low << 1) ^ (low >> 63))
    head_bytes = _varint_len(tag) + low_len + _varint_len(int(roots[0])) + 1 + -(-rice_bits // 8)
    return _Model(tag, low, roots, rice_r, weights, 8.0 * head_bytes + code_bits)


def _fit_model(low: int, counts: np.ndarray) -> _Model:
    """The cheaper of the plain and the symmetric description of a histogram (`counts` from `low` on, both ends
    present). A count c is known to about +-sqrt(c) anyway: storing round(sqrt(c)) costs a near-constant 1/6 nat
    per value whatever c, and neighbouring roots differ little, so their deltas are short Rice codes.
    """
    m = len(counts)
    if m == 1:
        return _Model(2, low, np.ones(1, dtype=np.int64), 0, np.ones(1), 8.0 * (1 + _varint_len(abs(2 * low))))
    best = _fit_counts(2 * m, low, counts, counts, lambda w: w)
    if low == -(m - 1) // 2 and m % 2:  # alphabet -a..a: |value| 0..a, the 0 count doubled
        half = counts[m // 2:] + counts[m // 2::-1]
        symmetric = _fit_counts(2 * m + 1, low, counts, half, lambda w: np.concatenate([w[:0:-1], w]))
        if symmetric.bits < best.bits:
            best = symmetric
    return best


def _put_model(head: bytearray, model: _Model) -> None:
    _put_varint(head, model.tag)
    if not model.tag & 1:
        _put_varint(head, (model.low << 1) ^ (model.low >> 63))  # zigzag
    if model.tag == 2:  # one value
        return
    _put_varint(head, int(model.roots[0]))
    deltas = np.diff(model.roots)
    r, acc, n_bits = model.rice_r, 0, 0
    for v in ((deltas << 1) ^ (deltas >> 63)).tolist():
        q = v >> r
        acc = (acc << (q + 1 + r)) | (((1 << q) - 1) << (r + 1)) | (v & ((1 << r) - 1))
        n_bits += q + 1 + r
    pad = -n_bits % 8
    head.append(r)
    head += (acc << pad).to_bytes((n_bits + pad) // 8, "big")


def _trimmed_model(counts: np.ndarray, low: int) -> _Model:
    """_fit_model of counts that may have absent values at either end (bucket histograms)."""
    present = np.flatnonzero(counts)
    return _fit_model(low + int(present[0]), counts[present[0] : present[-1] + 1])


def _read_counts(reader: _SegmentReader, n: int) -> np.ndarray:
    """Weights of a histogram written by _put_model, `n` stored counts long."""
    roots = [reader.varint()]
    blob, r = reader.blob, reader.byte()
    bit = 8 * reader.pos
    end = 8 * len(blob)
    for _ in range(n - 1):
        q = 0
        while bit < end and blob[bit >> 3] >> (7 - (bit & 7)) & 1:
            q, bit = q + 1, bit + 1
        if bit + 1 + r > end or q > _MAX_UNARY:
            raise ArtifactError("corrupt rans stream (truncated histogram)")
        low_bits = 0
        for b in range(bit + 1, bit + 1 + r):
            low_bits = (low_bits << 1) | (blob[b >> 3] >> (7 - (b & 7)) & 1)
        bit += 1 + r
        zigzag = (q << r) | low_bits
        roots.append(roots[-1] + ((zigzag >> 1) ^ -(zigzag & 1)))
    reader.pos = (bit + 7) >> 3
    if min(roots) < 0 or max(roots) >= 2**26:
        raise ArtifactError("corrupt rans stream (histogram count out of range)")
    return np.square(np.array(roots, dtype=np.int64)).astype(np.float64)


# --------------------------------------------------------------------------- rans: row buckets

_BUCKET_COUNTS = (4, 6, 8, 12, 16, 24, 32)
_FIXED = 65536  # code lengths in whole 1/65536 bits
_LLOYD_STEPS = 4


def _row_buckets(rows: np.ndarray) -> tuple[np.ndarray, list[_Model]]:
    """(bucket id per row, 0..K-1, models) minimizing the estimated coded size; ids all 0 when buckets do not pay.

    The models are the whole matrix's when K = 1, else the bucket ids' then each bucket's.

    Rows are ranked by the spread of their levels and cut into K equal buckets, then refined by Lloyd steps
    that move each row to the bucket that codes it (and its bucket id) in the fewest bits. K runs through
    _BUCKET_COUNTS until two in a row fail to beat the best size (coded bits + histogram heads + ids).
    """
    n_rows, row_len = rows.shape
    low, m = int(rows.min()), int(rows.max()) - int(rows.min()) + 1
    row_base = (np.arange(n_rows, dtype=np.intp) * m - low)[:, None]
    hist = np.bincount((rows + row_base).ravel(), minlength=n_rows * m).reshape(n_rows, m)  # (R, m)
    hist_f = hist.astype(np.float64)
    values = np.arange(m) + low
    spread = np.einsum("rm,m->r", hist_f, values * values)  # sum of squared levels per row
    ranks = np.argsort(np.argsort(spread, kind="stable"), kind="stable")

    def bucket_hist(ids: np.ndarray, k: int) -> np.ndarray:  # (K, m); every bucket holds a row
        order = np.argsort(ids, kind="stable")
        return np.add.reduceat(hist[order], np.searchsorted(ids[order], np.arange(k)), axis=0)

    best_ids, best_models, misses = np.zeros(n_rows, dtype=np.int64), [_trimmed_model(hist.sum(0), low)], 0
    best_bits = best_models[0].bits
    for k in _BUCKET_COUNTS:
        if k > n_rows or misses == 2:
            break
        ids = ranks * k // n_rows
        for _ in range(_LLOYD_STEPS):
            smoothed = bucket_hist(ids, k) + 0.5
            # Every product and sum below is an integer under 2^53, so the costs are exact whatever the
            # summation order (deterministic bytes). einsum, not @: BLAS threads made it 10x slower beside torch.
            code_len = np.round(-np.log2(smoothed / smoothed.sum(1, keepdims=True)) * _FIXED)  # (K, m)
            id_counts = np.bincount(ids, minlength=k) + 0.5
            id_len = np.round(-np.log2(id_counts / id_counts.sum()) * _FIXED)  # (K,)
            cost = np.einsum("rm,km->rk", hist_f, code_len) + id_len  # (R, K)
            nearest = cost.argmin(1)
            used = np.bincount(nearest, minlength=k) > 0
            new_ids = (np.cumsum(used) - 1)[nearest]  # renumbered without empty buckets
            if np.array_equal(new_ids, ids):
                break
            ids, k = new_ids, int(new_ids.max()) + 1
        models = [_fit_model(0, np.bincount(ids))] + [_trimmed_model(h, low) for h in bucket_hist(ids, k)]
        bits = sum(model.bits for model in models)
        if bits < best_bits:
            best_ids, best_models, best_bits, misses = ids, models, bits, 0
        else:
            misses += 1
    return best_ids, best_models


# --------------------------------------------------------------------------- rans: encode

def _segments(symbols: np.ndarray, itemsize: int, row_len: int) -> list[tuple[np.ndarray, _Model]]:
    """(symbols, model) of each segment to code, in order: byte planes; or bucket ids then each bucket's rows;
    or the whole stream."""
    if itemsize > 1:
        planes = symbols.reshape(-1, itemsize).T
        return [(plane, _fit_model(*histogram(plane))) for plane in planes]
    if row_len > 0:
        rows = symbols.reshape(-1, row_len)
        ids, models = _row_buckets(rows)
        if len(models) > 1:
            parts = [ids.astype(np.int8)] + [rows[ids == b].ravel() for b in range(len(models) - 1)]
            return list(zip(parts, models))
        return [(symbols, models[0])]
    return [(symbols, _fit_model(*histogram(symbols)))]


def _categorical(weights: np.ndarray):
    return constriction.stream.model.Categorical(weights, perfect=False)


def _rans_encode(symbols: np.ndarray, itemsize: int, row_len: int) -> bytes:
    if symbols.size == 0:
        return b""
    segments = _segments(symbols, itemsize, row_len)
    head, coded = bytearray(), []
    if row_len > 0 and itemsize == 1:
        _put_varint(head, len(segments) - 1 if len(segments) > 1 else 1)  # bucket count K
    for segment, model in segments:
        if model.bits / 8 >= segment.size:  # near-uniform and short (a mantissa plane): store it as it is
            _put_varint(head, _RAW)
            _put_varint(head, segment.size)
            head += segment.tobytes()
            continue
        _put_model(head, model)
        if model.tag != 2:  # more than one value
            coded.append((segment.astype(np.int32) - model.low, _categorical(model.weights)))
    if not coded:
        return bytes(head)
    coder = constriction.stream.stack.AnsCoder()
    for symbols_model in reversed(coded):  # a stack: the first segment decoded is the last encoded
        coder.encode_reverse(*symbols_model)
    return bytes(head) + coder.get_compressed().astype("<u4").tobytes()


# --------------------------------------------------------------------------- rans: decode

class _SegmentReader:
    """Reads segment heads from the start of the stream, then decodes segments in order from the ANS words."""

    def __init__(self, blob: bytes):
        self.blob, self.pos, self.coder = blob, 0, None

    def varint(self) -> int:
        value, self.pos = _get_varint(self.blob, self.pos)
        return value

    def byte(self) -> int:
        if self.pos >= len(self.blob):
            raise ArtifactError("corrupt rans stream (truncated histogram)")
        self.pos += 1
        return self.blob[self.pos - 1]

    def segment(self) -> tuple[int, np.ndarray | bytes | None]:
        """(low, spec) of the next segment; spec: weights (coded), bytes (stored) or None (one value)."""
        tag = self.varint()
        if tag == _RAW:
            size = self.varint()
            if self.pos + size > len(self.blob):
                raise ArtifactError("corrupt rans stream (stored segment runs past the end)")
            self.pos += size
            return 0, self.blob[self.pos - size : self.pos]
        m, symmetric = tag >> 1, tag & 1
        if symmetric:
            if m < 3 or m % 2 == 0 or m > 255:
                raise ArtifactError(f"corrupt rans stream (symmetric alphabet of {m} values)")
            half = _read_counts(self, m // 2 + 1)
            weights, low = np.concatenate([half[:0:-1], half]), -(m // 2)
        else:
            zigzag = self.varint()
            low = (zigzag >> 1) ^ -(zigzag & 1)
            if not 1 <= m <= 256 or not -128 <= low <= 128 - m:
                raise ArtifactError(f"corrupt rans stream (alphabet {low}..{low + m - 1} is not within int8)")
            if m == 1:
                return low, None
            weights = _read_counts(self, m)
        if weights[0] == 0 or weights[-1] == 0:
            raise ArtifactError("corrupt rans stream (histogram alphabet ends on an absent value)")
        return low, weights

    def start_words(self, segments: list[tuple[int, np.ndarray | bytes | None]]) -> None:
        words = self.blob[self.pos:]
        if not any(isinstance(spec, np.ndarray) for _, spec in segments):
            if words:
                raise ArtifactError(f"corrupt rans stream ({len(words)} unexpected trailing bytes)")
            return
        if not words or len(words) % 4:
            raise ArtifactError(f"corrupt rans stream ({len(words)} payload bytes is not a whole number of words)")
        self.coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))

    def decode(self, segment: tuple[int, np.ndarray | bytes | None], n: int) -> np.ndarray:
        low, spec = segment
        if isinstance(spec, bytes):
            if len(spec) != n:
                raise ArtifactError(f"corrupt rans stream (stored segment of {len(spec)} bytes, expected {n})")
            return np.frombuffer(spec, dtype=np.int8)
        if spec is None:
            return np.full(n, low, dtype=np.int8)
        symbols = self.coder.decode(_categorical(spec), n)  # (n,) int32
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
        planes = [reader.segment() for _ in range(itemsize)]
        reader.start_words(planes)
        out = np.stack([reader.decode(plane, n_bytes // itemsize) for plane in planes], axis=1).reshape(-1)
        reader.finish()
        return out
    k = 1
    if row_len > 0:
        if n_bytes % row_len:
            raise ArtifactError(f"rans stream of {n_bytes} bytes is not a whole number of {row_len}-byte rows")
        k = reader.varint()
        if not 1 <= k <= min(n_bytes // row_len, 127):
            raise ArtifactError(f"corrupt rans stream ({k} row buckets for {n_bytes // row_len} rows)")
    if k == 1:
        segment = reader.segment()
        reader.start_words([segment])
        out = reader.decode(segment, n_bytes)
        reader.finish()
        return out
    n_rows = n_bytes // row_len
    segments = [reader.segment() for _ in range(k + 1)]  # bucket ids, then each bucket's rows
    reader.start_words(segments)
    ids = reader.decode(segments[0], n_rows).astype(np.int64)
    if ids.min() < 0 or ids.max() >= k:
        raise ArtifactError(f"corrupt rans stream (row bucket ids outside 0..{k - 1})")
    rows_per_bucket = np.bincount(ids, minlength=k)
    out = np.empty((n_rows, row_len), dtype=np.int8)
    for bucket, segment in enumerate(segments[1:]):
        out[ids == bucket] = reader.decode(segment, int(rows_per_bucket[bucket]) * row_len).reshape(-1, row_len)
    reader.finish()
    return out.reshape(-1)

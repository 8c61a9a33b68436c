"""The `rans` codec: int8 streams entropy-coded under histograms fitted to the stream itself.

- It reads bytes as int8 values, so int6 levels use a 63-symbol alphabet,
  not 256, and codes them with the static-model rANS of `ans.py` (16-bit
  probabilities). The stream is cut into segments, each with its own
  histogram: the byte planes of multi-byte values (fp16 scales: exponent
  and mantissa planes), or, for a quantized matrix, row buckets.
- Row buckets: rows differ in how many levels they spread over (their clip
  cuts a different share of their tail), so one histogram per tensor wastes
  ~1%. The encoder tries K buckets from 4..32, walking from K = 8 (rows
  ranked by spread, then 4 Lloyd steps that move each row to the bucket
  coding it, and its bucket id, in the fewest bits; more steps or K = 2, 3
  gained < 0.01% for ~30% more encode time) and keeps the smallest total
  (symbols + histograms + ids; K = 1 when buckets do not pay). On bench/bench_codecs.py (17M int6
  levels of heavy-tailed rows) the levels code to 9.518 MB against 9.633 MB
  for one exact histogram per tensor.
- Histograms are stored as round(sqrt(count)): a count c is only known to
  about +-sqrt(c), and rounding its root costs ~1/6 nat per value whatever
  c, while storing exact counts costs 2-3 bytes each. The roots are delta
  coded (Rice codes, cheapest parameter per histogram); a histogram
  symmetric around 0 stores only the |value| half when that is cheaper
  (level histograms almost always). The model weights are the squared
  roots, integers, so every machine builds the same model. This cut the
  histogram heads from ~29 KB to ~7 KB on the bench, which in turn lets
  more buckets pay.
- Layout: [varint K for row streams] then per segment a head (varint tag =
  2 x alphabet size + symmetric; zigzag smallest value unless symmetric;
  varint first root; a Rice parameter byte; the packed Rice codes), or tag
  0, a varint length and the bytes as they are when coding would not beat
  them (short near-uniform mantissa planes); then the rANS words of all
  coded segments.
- The hot loops (row histograms, Lloyd steps, description costs, Rice codes)
  are compiled with numba: the bucket search took 0.34 s in numpy on the
  bench, 0.05 s compiled, against ~2.6 s for zstd-22 to code the same bytes.
- Contexts beyond row buckets (column groups, the level above) are the
  `ctx` codec's (ctx.py), which reuses these heads and this module's
  streams as its fallback.
- Not done: one shared histogram set per tensor group (each
  stream is coded on its own by the codec API); finer splits of fp16 scales
  than byte planes (estimated within 0.5 KB of them: scales spread over ~4
  octaves at 10-bit precision, ~11.6 bits each whatever the split).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from pgolf.errors import ArtifactError
from pgolf.export.coding import ans

_RAW = 0  # tag of a stored segment; a coded one's is 2 x alphabet size + (1 if symmetric)
_MAX_UNARY = 4096  # longest unary part of a Rice code the decoder accepts
_MAX_ROOT = 2**26  # largest stored root the decoder accepts
_BUCKET_COUNTS = (4, 6, 8, 12, 16, 24, 32)
_FIRST_BUCKET_COUNT = 8  # the usual best on baseline-shaped matrices (6..12)
_FIXED = 65536  # code lengths in whole 1/65536 bits
_LLOYD_STEPS = 4


# --------------------------------------------------------------------------- varints and entropy

def put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


@numba.njit(cache=True)
def _varint_len(value):  # pragma: no cover - compiled
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


def histogram(symbols: np.ndarray) -> tuple[int, np.ndarray]:
    """(smallest value, counts of every value from it to the largest) of an int8 array."""
    values = symbols.astype(np.int64).ravel()
    low = int(values.min())
    return low, np.bincount(values - low)


def entropy_bits(symbols: np.ndarray) -> float:
    """Order-0 entropy of an int8 array in bits: count x H(histogram)."""
    if symbols.size == 0:
        return 0.0
    counts = histogram(symbols)[1]
    counts = counts[counts > 0].astype(np.float64)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


# --------------------------------------------------------------------------- histogram descriptions

class Model(NamedTuple):
    """A segment's histogram as the stream head stores it, the weights the coder uses, and the bits it costs."""

    tag: int
    """2 x alphabet size + (1 if symmetric: only the counts of |value| are stored)."""
    low: int
    roots: np.ndarray
    """Rounded square roots of the stored counts."""
    rice_r: int
    weights: np.ndarray
    """int64 weight of every value from `low` on: the squared roots."""
    bits: float
    """Head bits plus the symbols' code length under `weights`."""


@numba.njit(cache=True)
def _rice_choice(zigzags):  # pragma: no cover - compiled
    """(r, bits) of the cheapest Rice code (unary quotient, then r low bits) of non-negative ints."""
    top = 0
    for z in zigzags:
        top = max(top, int(z))
    width = 0
    while top >> width:
        width += 1
    best_r, best_bits = 0, -1
    for r in range(max(0, width - 12), max(width, 1)):  # width - 12 keeps quotients under _MAX_UNARY
        bits = zigzags.size * (r + 1)
        for z in zigzags:
            bits += z >> r
        if best_bits < 0 or bits < best_bits:
            best_r, best_bits = r, bits
    return best_r, best_bits


@numba.njit(cache=True)
def _roots_of(stored):  # pragma: no cover - compiled
    roots = np.empty(stored.size, dtype=np.int64)
    for i in range(stored.size):
        roots[i] = int(round(math.sqrt(stored[i])))  # never a tie: sqrt of an integer is not k + 1/2
    return roots


@numba.njit(cache=True)
def _zigzag_deltas(roots):  # pragma: no cover - compiled
    out = np.empty(max(roots.size - 1, 0), dtype=np.int64)
    for i in range(out.size):
        d = roots[i + 1] - roots[i]
        out[i] = (d << 1) ^ (d >> 63)
    return out


@numba.njit(cache=True)
def _description_cost(counts, stored, tag, low):  # pragma: no cover - compiled
    """(bits, rice r) of a head storing `stored` plus `counts` coded under the weights it gives.
    A symmetric tag (odd) stores the |value| half: value v in -a..a weighs root[|v|]^2."""
    roots = _roots_of(stored)
    r, rice_bits = _rice_choice(_zigzag_deltas(roots))
    m = counts.size
    half = m // 2
    total = 0.0
    for v in range(m):
        root = roots[abs(v - half)] if tag & 1 else roots[v]
        total += float(root * root)
    code_bits = 0.0
    for v in range(m):
        if counts[v] > 0:
            root = roots[abs(v - half)] if tag & 1 else roots[v]
            code_bits -= counts[v] * math.log2(float(root * root) / total)
    low_len = 0 if tag & 1 else _varint_len((low << 1) ^ (low >> 63))
    head_bytes = _varint_len(tag) + low_len + _varint_len(roots[0]) + 1 + (rice_bits + 7) // 8
    return 8.0 * head_bytes + code_bits, r


@numba.njit(cache=True)
def _describe(counts, low):  # pragma: no cover - compiled
    """(bits, symmetric, rice r) of the cheaper description of `counts` (values low.., both ends present).
    A count c is known to about +-sqrt(c) anyway: storing round(sqrt(c)) costs a near-constant 1/6 nat per
    value whatever c, and neighbouring roots differ little, so their deltas are short Rice codes."""
    m = counts.size
    if m == 1:
        return 8.0 * (1 + _varint_len(abs(2 * low))), False, 0
    bits, r = _description_cost(counts, counts, 2 * m, low)
    if m % 2 == 1 and low == -(m // 2):  # alphabet -a..a: |value| 0..a, the 0 count doubled
        folded = counts[m // 2 :] + counts[m // 2 :: -1]
        sym_bits, sym_r = _description_cost(counts, folded, 2 * m + 1, low)
        if sym_bits < bits:
            return sym_bits, True, sym_r
    return bits, False, r


@numba.njit(cache=True)
def trimmed_bits(counts, low):  # pragma: no cover - compiled
    """_describe's bits of counts that may have absent values at either end (a bucket's histogram)."""
    first, last = 0, counts.size - 1
    while counts[first] == 0:
        first += 1
    while counts[last] == 0:
        last -= 1
    return _describe(counts[first : last + 1].copy(), low + first)[0]


def fit_model(low: int, counts: np.ndarray) -> Model:
    """The cheaper of the plain and the symmetric description of a histogram (`counts` from `low` on,
    both ends present)."""
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    m = len(counts)
    bits, symmetric, rice_r = _describe(counts, low)
    if m == 1:
        return Model(2, low, np.ones(1, dtype=np.int64), 0, np.ones(1, dtype=np.int64), bits)
    stored = counts[m // 2 :] + counts[m // 2 :: -1] if symmetric else counts
    roots = _roots_of(stored)
    squares = roots * roots
    weights = np.concatenate([squares[:0:-1], squares]) if symmetric else squares
    return Model(2 * m + int(symmetric), low, roots, rice_r, weights, bits)


def trimmed_model(counts: np.ndarray, low: int) -> Model:
    """fit_model of counts that may have absent values at either end (bucket histograms)."""
    present = np.flatnonzero(counts)
    return fit_model(low + int(present[0]), counts[present[0] : present[-1] + 1])


@numba.njit(cache=True)
def _pack_rice(zigzags, r):  # pragma: no cover - compiled
    n_bits = 0
    for z in zigzags:
        n_bits += (z >> r) + 1 + r
    out = np.zeros((n_bits + 7) // 8, dtype=np.uint8)
    bit = 0
    for z in zigzags:
        for _ in range(z >> r):  # unary quotient: ones, then a zero
            out[bit >> 3] |= 0x80 >> (bit & 7)
            bit += 1
        bit += 1
        for b in range(r - 1, -1, -1):
            if (z >> b) & 1:
                out[bit >> 3] |= 0x80 >> (bit & 7)
            bit += 1
    return out


def put_model(head: bytearray, model: Model) -> None:
    put_varint(head, model.tag)
    if not model.tag & 1:
        put_varint(head, (model.low << 1) ^ (model.low >> 63))  # zigzag
    if model.tag == 2:  # one value
        return
    put_varint(head, int(model.roots[0]))
    head.append(model.rice_r)
    head += _pack_rice(_zigzag_deltas(model.roots), model.rice_r).tobytes()


@numba.njit(cache=True)
def _unpack_rice(blob, pos, n, r, first):  # pragma: no cover - compiled
    """(roots, next byte position) of n roots whose n - 1 deltas are Rice codes at byte `pos`; pos -1 when
    the codes run past the end or a root leaves 0.._MAX_ROOT."""
    roots = np.empty(n, dtype=np.int64)
    roots[0] = first
    bit, end = 8 * pos, 8 * blob.size
    for i in range(1, n):
        q = 0
        while bit < end and (blob[bit >> 3] >> (7 - (bit & 7))) & 1:
            q += 1
            bit += 1
            if q > _MAX_UNARY:
                return roots, -1
        if bit + 1 + r > end:
            return roots, -1
        bit += 1
        low_bits = 0
        for _ in range(r):
            low_bits = (low_bits << 1) | ((blob[bit >> 3] >> (7 - (bit & 7))) & 1)
            bit += 1
        zigzag = (q << r) | low_bits
        roots[i] = roots[i - 1] + ((zigzag >> 1) ^ -(zigzag & 1))
        if roots[i] < 0 or roots[i] >= _MAX_ROOT:
            return roots, -1
    return roots, (bit + 7) >> 3


# --------------------------------------------------------------------------- row buckets

@numba.njit(cache=True)
def _row_histograms(rows, low, m):  # pragma: no cover - compiled
    hist = np.zeros((rows.shape[0], m), dtype=np.int64)
    for i in range(rows.shape[0]):
        for v in rows[i]:
            hist[i, v - low] += 1
    return hist


@numba.njit(cache=True)
def _bucket_histograms(hist, ids, k):  # pragma: no cover - compiled
    out = np.zeros((k, hist.shape[1]), dtype=np.int64)
    for i in range(hist.shape[0]):
        out[ids[i]] += hist[i]
    return out


@numba.njit(cache=True)
def code_lengths(counts):  # pragma: no cover - compiled
    """Whole 1/_FIXED-bit code lengths of a histogram smoothed by 1/2 per value. Integers: the costs summed
    from them are exact whatever the order (deterministic bytes), and integer dot products vectorize."""
    total = counts.sum() + 0.5 * counts.size
    out = np.empty(counts.size, dtype=np.int64)
    for v in range(counts.size):
        out[v] = round(-math.log2((counts[v] + 0.5) / total) * _FIXED)
    return out


@numba.njit(cache=True)
def _fold(hist, low):  # pragma: no cover - compiled
    """Row histograms of |value|: (rows, largest |value| + 1)."""
    m = hist.shape[1]
    width = max(abs(low), abs(low + m - 1)) + 1
    folded = np.zeros((hist.shape[0], width), dtype=np.int64)
    for i in range(hist.shape[0]):
        for v in range(m):
            folded[i, abs(low + v)] += hist[i, v]
    return folded


@numba.njit(cache=True)
def _lloyd(hist, folded, low, ids, k, steps):  # pragma: no cover - compiled
    """Move each row to the bucket that codes it and its id in the fewest bits, `steps` times or until
    nothing moves; empty buckets are dropped. Returns (ids, k).

    A row's cost is taken on its |value| histogram (`folded`) under each bucket's mean code length of +-a
    (twice over, to stay in integers): half the multiply-adds of the full alphabet, and on the bench it
    found slightly better buckets (smoother costs), 2 KB less over 165 refinements."""
    n_rows, m = hist.shape
    width = folded.shape[1]
    for _ in range(steps):
        per_bucket = _bucket_histograms(hist, ids, k)
        code_len = np.zeros((k, width), dtype=np.int64)
        for b in range(k):
            lengths = code_lengths(per_bucket[b])
            for v in range(m):
                value = low + v
                paired = value != 0 and 0 <= -value - low < m  # -value is in the alphabet too
                code_len[b, abs(value)] += lengths[v] if paired else 2 * lengths[v]
        id_len = 2 * code_lengths(np.bincount(ids, minlength=k))
        nearest = np.empty(n_rows, dtype=np.int64)
        for i in range(n_rows):
            row = folded[i]
            best, best_b = 0, -1
            for b in range(k):
                cost = id_len[b]
                lengths = code_len[b]
                for a in range(width):
                    cost += row[a] * lengths[a]
                if best_b < 0 or cost < best:
                    best, best_b = cost, b
            nearest[i] = best_b
        renumber = np.cumsum(np.bincount(nearest, minlength=k) > 0) - 1
        new_ids = renumber[nearest]
        new_k = renumber[-1] + 1
        if new_k == k and np.array_equal(new_ids, ids):
            break
        ids, k = new_ids, new_k
    return ids, k


@numba.njit(cache=True)
def _partition_bits(hist, ids, k, low):  # pragma: no cover - compiled
    """Coded bits of rows split into buckets: the ids' description plus each bucket's."""
    id_counts = np.bincount(ids, minlength=k)
    bits = _describe(id_counts, 0)[0]
    for counts in _bucket_histograms(hist, ids, k):
        bits += trimmed_bits(counts, low)
    return bits


def _row_buckets(rows: np.ndarray) -> tuple[np.ndarray, list[Model]]:
    """(bucket id per row, 0..K-1, models) minimizing the estimated coded size; ids all 0 when buckets do not pay.

    The models are the whole matrix's when K = 1, else the bucket ids' then each bucket's.
    Rows are ranked by the spread of their levels and cut into K equal buckets, then refined by Lloyd steps.
    K starts at _FIRST_BUCKET_COUNT and walks up _BUCKET_COUNTS while the size falls, or else down: the size
    is close to unimodal in K, and on the bench this found the same sizes as trying K = 4, 6, 8, ... until two
    in a row failed, with 189 Lloyd runs instead of 258.
    """
    n_rows = rows.shape[0]
    low = int(rows.min())
    m = int(rows.max()) - low + 1
    hist = _row_histograms(rows, low, m)
    spread = hist @ np.square(np.arange(low, low + m, dtype=np.int64))  # sum of squared levels per row
    ranks = np.argsort(np.argsort(spread, kind="stable"), kind="stable")
    folded = _fold(hist, low)
    counts = [k for k in _BUCKET_COUNTS if k <= n_rows]
    tried: dict[int, tuple[float, np.ndarray, int]] = {}

    def bits_at(j: int) -> float:  # size with counts[j] buckets, refined
        if j not in tried:
            ids, k = _lloyd(hist, folded, low, ranks * counts[j] // n_rows, counts[j], _LLOYD_STEPS)
            tried[j] = (_partition_bits(hist, ids, k, low), ids, k)
        return tried[j][0]

    best_ids, best_k = np.zeros(n_rows, dtype=np.int64), 1
    if counts:
        j = start = max(i for i, k in enumerate(counts) if k <= _FIRST_BUCKET_COUNT or i == 0)
        while j + 1 < len(counts) and bits_at(j + 1) < bits_at(j):
            j += 1
        while j == start and j > 0 and bits_at(j - 1) < bits_at(j):
            start, j = start - 1, j - 1
        if bits_at(j) < trimmed_bits(hist.sum(0), low):
            _, best_ids, best_k = tried[j]
    if best_k == 1:
        return best_ids, [trimmed_model(hist.sum(0), low)]
    per_bucket = _bucket_histograms(hist, best_ids, best_k)
    return best_ids, [fit_model(0, np.bincount(best_ids))] + [trimmed_model(h, low) for h in per_bucket]


# --------------------------------------------------------------------------- encode

def _segments(symbols: np.ndarray, itemsize: int, row_len: int) -> list[tuple[np.ndarray, Model]]:
    """(symbols, model) of each segment to code, in order: byte planes; or bucket ids then each bucket's rows;
    or the whole stream."""
    if itemsize > 1:
        planes = symbols.reshape(-1, itemsize).T
        return [(plane, fit_model(*histogram(plane))) for plane in planes]
    if row_len > 0:
        rows = symbols.reshape(-1, row_len)
        ids, models = _row_buckets(rows)
        if len(models) > 1:
            order = np.argsort(ids, kind="stable")
            bucket_rows = np.split(rows[order], np.cumsum(np.bincount(ids))[:-1])
            return list(zip([ids.astype(np.int8)] + [part.ravel() for part in bucket_rows], models))
        return [(symbols, models[0])]
    return [(symbols, fit_model(*histogram(symbols)))]


def encode(symbols: np.ndarray, itemsize: int, row_len: int) -> bytes:
    """The rans stream of int8 `symbols` (`itemsize` bytes per value, `row_len` values per matrix row)."""
    if symbols.size == 0:
        return b""
    segments = _segments(symbols, itemsize, row_len)
    head, coded = bytearray(), []
    if row_len > 0 and itemsize == 1:
        put_varint(head, len(segments) - 1 if len(segments) > 1 else 1)  # bucket count K
    for segment, model in segments:
        if model.bits / 8 >= segment.size:  # near-uniform and short (a mantissa plane): store it as it is
            put_varint(head, _RAW)
            put_varint(head, segment.size)
            head += segment.tobytes()
            continue
        put_model(head, model)
        if model.tag != 2:  # more than one value
            coded.append((segment, model.low, ans.frequencies(model.weights)))
    return bytes(head) + (ans.encode(coded) if coded else b"")


# --------------------------------------------------------------------------- decode

class SegmentReader:
    """Reads segment heads from the start of the stream, then decodes segments in order from the rANS words."""

    def __init__(self, blob: bytes):
        self.blob, self.pos, self.decoder = blob, 0, None

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.blob) or shift > 63:
                raise ArtifactError("corrupt rans stream (truncated histogram)")
            byte = self.blob[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def counts(self, n: int) -> np.ndarray:
        """Weights of a histogram written by put_model, `n` stored counts long."""
        first = self.varint()
        if self.pos >= len(self.blob) or first >= _MAX_ROOT:
            raise ArtifactError("corrupt rans stream (truncated histogram)")
        r = self.blob[self.pos]
        roots, self.pos = _unpack_rice(np.frombuffer(self.blob, dtype=np.uint8), self.pos + 1, n, r, first)
        if self.pos < 0:
            raise ArtifactError("corrupt rans stream (histogram codes out of range)")
        return roots * roots

    def segment(self) -> tuple[int, np.ndarray | bytes | None]:
        """(low, spec) of the next segment; spec: frequencies (coded), bytes (stored) or None (one value)."""
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
            half = self.counts(m // 2 + 1)
            weights, low = np.concatenate([half[:0:-1], half]), -(m // 2)
        else:
            zigzag = self.varint()
            low = (zigzag >> 1) ^ -(zigzag & 1)
            if not 1 <= m <= 256 or not -128 <= low <= 128 - m:
                raise ArtifactError(f"corrupt rans stream (alphabet {low}..{low + m - 1} is not within int8)")
            if m == 1:
                return low, None
            weights = self.counts(m)
        if weights[0] == 0 or weights[-1] == 0:
            raise ArtifactError("corrupt rans stream (histogram alphabet ends on an absent value)")
        return low, ans.frequencies(weights)

    def start_words(self, segments: list[tuple[int, np.ndarray | bytes | None]]) -> None:
        words = self.blob[self.pos :]
        if any(isinstance(spec, np.ndarray) for _, spec in segments):
            self.decoder = ans.Decoder(words)
        elif words:
            raise ArtifactError(f"corrupt rans stream ({len(words)} unexpected trailing bytes)")

    def decode(self, segment: tuple[int, np.ndarray | bytes | None], out: np.ndarray) -> np.ndarray:
        """Fill int8 `out` with the segment's values; returns it."""
        low, spec = segment
        if isinstance(spec, bytes):
            if len(spec) != out.size:
                raise ArtifactError(f"corrupt rans stream (stored segment of {len(spec)} bytes, expected {out.size})")
            out[:] = np.frombuffer(spec, dtype=np.int8)
        elif spec is None:
            out[:] = low
        else:
            self.decoder.decode(low, spec, out)
        return out

    def finish(self) -> None:
        if self.decoder is not None:
            self.decoder.finish()


def decode(blob: bytes, n_bytes: int, itemsize: int, row_len: int) -> np.ndarray:
    """The int8 values of a rans stream made by `encode` with the same layout; ArtifactError if corrupt."""
    if n_bytes == 0:
        if blob:
            raise ArtifactError("rans stream of 0 symbols is not empty")
        return np.zeros(0, dtype=np.int8)
    reader = SegmentReader(blob)
    if itemsize > 1:
        if n_bytes % itemsize:
            raise ArtifactError(f"rans stream of {n_bytes} bytes is not a whole number of {itemsize}-byte items")
        planes = [reader.segment() for _ in range(itemsize)]
        reader.start_words(planes)
        out = np.empty((itemsize, n_bytes // itemsize), dtype=np.int8)
        for plane, row in zip(planes, out):
            reader.decode(plane, row)
        reader.finish()
        return out.T.reshape(-1)
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
        out = reader.decode(segment, np.empty(n_bytes, dtype=np.int8))
        reader.finish()
        return out
    n_rows = n_bytes // row_len
    segments = [reader.segment() for _ in range(k + 1)]  # bucket ids, then each bucket's rows
    reader.start_words(segments)
    ids = reader.decode(segments[0], np.empty(n_rows, dtype=np.int8))
    if ids.min() < 0 or ids.max() >= k:
        raise ArtifactError(f"corrupt rans stream (row bucket ids outside 0..{k - 1})")
    ends = np.cumsum(np.bincount(ids, minlength=k)) * row_len
    by_bucket = np.empty(n_bytes, dtype=np.int8)  # bucket 0's rows, then bucket 1's, ...
    for segment, start, end in zip(segments[1:], np.concatenate([[0], ends[:-1]]), ends):
        reader.decode(segment, by_bucket[start:end])
    reader.finish()
    out = np.empty((n_rows, row_len), dtype=np.int8)
    out[np.argsort(ids, kind="stable")] = by_bucket.reshape(n_rows, row_len)
    return out.reshape(-1)

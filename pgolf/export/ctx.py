"""The `ctx` codec: quantized matrices coded under histograms conditioned on a context.

`rans` gives each row bucket one histogram. Trained weights carry more than
that: columns differ in spread as rows do, and in the embedding, rows of
tokens the text rarely uses drift together, so a level predicts the level
below it. `ctx` codes each level of a matrix under the histogram of its
context, the 4-tuple

    (row group, column group, class of the level above, match class)

with K row groups (quantiles of a row key, K in 1..16), L column groups
(quantiles of the column's sum of squared levels, L in 1..8), A classes of
the level in the previous coded row (clipped to -A//2..A//2, A in 1..25) and
M match classes (how many of the row's previous 4 levels equalled the level
above them, clipped to M - 1; M in 1, 2, 3, 5).

What is non-standard here:
- Static histograms, fitted per tensor, not adaptive binary models: the
  encoder sees every structure's exact size and keeps the smallest, and
  decoding stays one table lookup a level. The structure is chosen by its
  exact coded size: every context's histogram head (rans's square-root
  format, ~17 bytes a context) plus the levels' code length under it, plus
  the group ids. Structures nest (fewer groups merge neighbouring quantiles,
  fewer classes clip further), so one pass over the levels gives the
  histograms of every coarser structure. Row and column groups are chosen
  first (one histogram per group pair: the matrices' contexts), then a
  coordinate descent over (K, L, A, M) within them.
- Measured (bench/bench_codecs.py, int6 mse): the column groups are what pays
  on matrices (mlp_out -1.6% against rans on a 9.7M-parameter checkpoint);
  the level above is what pays on the embedding (-7.5% there, -11% on the
  demo model); the match classes add little once row groups split the
  drifting rows from the rest.
- Row keys: the row's sum of squared levels (its spread, as rans ranks rows),
  or its projection on the levels' first principal direction (integer power
  iteration, so every machine sorts alike), which groups the embedding's
  drifting rows.
- Row order: rows are coded in their natural order, or grouped by row group
  (stable): a permutation that costs nothing beyond the group ids, and puts
  similar rows above each other. A full sort by the principal key, stored
  (~1.1 KB for 1,024 rows), gained less than it cost on the demo embedding,
  and even a greedy nearest-neighbour chain (O(n^2)) only reached 1.3% under
  the grouped order before paying for its permutation.
- The stream is the `rans` stream itself whenever that is smaller (or the
  stream is not a matrix: scales and float tensors), so `ctx` is never larger
  than `rans`: a context stream starts with a 0 byte, which a rans row stream
  never does (it starts with its bucket count, >= 1).
- Layout of a context stream: a 0 byte; varints K, L, A, M; the order byte;
  the heads of the row ids (K > 1) and column ids (L > 1); one head per
  context in (row group, column group, class) order, 0 for a context no level
  uses; then one rANS word stream (ans.Encoder): row ids, column ids, levels.
- Decoding finds a level's slot through a 256-entry table per context, then a
  short forward scan: per-context tables of all 2^16 slots would take 64 MB
  at 1,000 contexts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from pgolf.errors import ArtifactError
from pgolf.export import ans, rans

_CONTEXT_MARK = 0  # first byte of a context stream: a rans row stream starts with its bucket count, >= 1
_NATURAL, _GROUPED = 0, 1
_ROW_GROUPS = (1, 2, 4, 8, 16)
_COL_GROUPS = (1, 2, 4, 8)
_ABOVE_CLASSES = (1, 3, 5, 9, 17, 25)
_MATCH_CLASSES = (1, 2, 3, 5)  # of the row's previous 4 levels, how many equalled the level above them
_MAX_CONTEXTS = 1024
_COARSE = 8  # bits of the per-context slot lookup (256 entries)
_PC_ITERATIONS = 6
_PC_MAX_SIDE = 1 << 16  # keeps the integer power iteration inside int64


# --------------------------------------------------------------------------- keys and groups

def _principal_key(levels: np.ndarray) -> np.ndarray:
    """Each row's projection on the first principal direction of the centred levels, by integer power iteration
    (exact, so every machine gets the same order); values are rescaled by shifts to stay under 2^16."""
    x = levels.astype(np.int64)
    n_rows = x.shape[0]

    def shrink(v: np.ndarray) -> np.ndarray:
        return v >> max(0, int(np.abs(v).max()).bit_length() - 16)

    v = shrink(x[int(np.argmax(np.square(x).sum(1)))] * n_rows - x.sum(0))  # the widest row, centred
    for _ in range(_PC_ITERATIONS):
        u = x @ v
        v = shrink(x.T @ shrink(u * n_rows - u.sum()))
        if not v.any():
            break
    return x @ v


def _quantile_ids(key: np.ndarray, groups: int) -> np.ndarray:
    """Group of each entry (0..groups-1): its rank by `key` (ties by position) cut into equal parts."""
    ranks = np.empty(key.size, dtype=np.int64)
    ranks[np.argsort(key, kind="stable")] = np.arange(key.size)
    return ranks * groups // key.size


def _coding_order(row_ids: np.ndarray, order: int) -> np.ndarray:
    """Rows in the order they are coded: natural, or grouped by row id (stable)."""
    return np.argsort(row_ids, kind="stable") if order == _GROUPED else np.arange(row_ids.size)


# --------------------------------------------------------------------------- structure search

@numba.njit(cache=True)
def _histograms(rows, row_ids, col_ids, n_row, n_col, classes, matches, low, m):  # pragma: no cover - compiled
    """Counts (row group, column group, class of the level above, match class, level - low) of `rows` in coding
    order."""
    hist = np.zeros((n_row, n_col, classes, matches, m), dtype=np.int64)
    half = classes // 2
    for r in range(rows.shape[0]):
        recent = 0  # bit i: the level i + 1 columns back equalled the level above it
        for c in range(rows.shape[1]):
            above = rows[r - 1, c] if r > 0 else 0
            a = min(max(int(above), -half), half) + half
            hist[row_ids[r], col_ids[c], a, min(_popcount4(recent), matches - 1), rows[r, c] - low] += 1
            recent = ((recent << 1) | (rows[r, c] == above)) & 15
    return hist


@numba.njit(cache=True)
def _popcount4(bits):  # pragma: no cover - compiled
    return (bits & 1) + (bits >> 1 & 1) + (bits >> 2 & 1) + (bits >> 3 & 1)


@numba.njit(cache=True)
def _structure_bits(hist, k, cg, a, mm, low):  # pragma: no cover - compiled
    """Head plus code bits of every context when the finest histograms `hist` merge into k x cg x a x mm
    contexts (groups merge neighbouring quantiles; classes clip)."""
    kf, lf, af, mf, m = hist.shape
    merged = np.zeros((k, cg, a, mm, m), dtype=np.int64)
    half_f, half = af // 2, a // 2
    for i in range(kf):
        for j in range(lf):
            for c in range(af):
                for t in range(mf):
                    merged[i * k // kf, j * cg // lf, min(max(c - half_f, -half), half) + half, min(t, mm - 1)] += \
                        hist[i, j, c, t]
    bits = 0.0
    for i in range(k):
        for j in range(cg):
            for c in range(a):
                for t in range(mm):
                    counts = merged[i, j, c, t]
                    bits += rans.trimmed_bits(counts, low) if counts.any() else 8.0
    return bits


def _ids_bits(ids: np.ndarray, groups: int) -> float:
    return rans.trimmed_bits(np.bincount(ids, minlength=groups), 0) if groups > 1 else 0.0


class _Plan(NamedTuple):
    """A context structure and its estimated size in bits."""

    bits: float
    row_ids: np.ndarray
    col_ids: np.ndarray
    shape: tuple[int, int, int, int]
    """(row groups, column groups, above classes, match classes)."""
    order: int


def _descend(hist: np.ndarray, low: int, choices: list[tuple[int, ...]], start: tuple[int, ...],
             ids_bits) -> tuple[float, tuple[int, ...]]:
    """(bits, structure) of the best structure a coordinate descent from `start` (indices into `choices`, one
    tuple of values per dimension) finds on the finest histograms `hist`."""
    seen: dict[tuple[int, ...], float] = {}

    def bits_of(at: tuple[int, ...]) -> float:
        if at not in seen:
            shape = tuple(choices[d][at[d]] for d in range(len(at)))
            seen[at] = math.inf if math.prod(shape) > _MAX_CONTEXTS else (
                _structure_bits(hist, *shape, low) + ids_bits(shape[0], shape[1]))
        return seen[at]

    best, improved = start, True
    while improved:
        improved = False
        for d in range(len(start)):
            for step in (1, -1):
                at = best[:d] + (best[d] + step,) + best[d + 1 :]
                if 0 <= at[d] < len(choices[d]) and bits_of(at) < bits_of(best):
                    best, improved = at, True
    return bits_of(best), tuple(choices[d][best[d]] for d in range(len(start)))


def _best_plan(levels: np.ndarray) -> _Plan:
    """The smallest context structure found for a matrix of levels (rows, cols).

    Per row key: the row and column groups first (one histogram per group pair, the cheap pass that finds
    the matrices' contexts), then the classes of the level above and of matches within those groups, in
    natural and in grouped row order."""
    n_rows, n_cols = levels.shape
    low = int(levels.min())
    m = int(levels.max()) - low + 1
    rows_up_to = tuple(g for g in _ROW_GROUPS if g <= n_rows)
    cols_up_to = tuple(g for g in _COL_GROUPS if g <= n_cols)
    squares = np.square(levels.astype(np.int64))
    col_ranks = _quantile_ids(squares.sum(0), n_cols)
    keys = [squares.sum(1)]
    if n_rows >= 16 and max(n_rows, n_cols) < _PC_MAX_SIDE:
        keys.append(_principal_key(levels))
    classes, matches = _ABOVE_CLASSES[-1], _MATCH_CLASSES[-1]
    best: _Plan | None = None
    for key in keys:
        row_ranks = _quantile_ids(key, n_rows)

        def ids_bits(k: int, cg: int, row_ranks=row_ranks) -> float:
            return _ids_bits(row_ranks * k // n_rows, k) + _ids_bits(col_ranks * cg // n_cols, cg)

        k, cg = rows_up_to[-1], cols_up_to[-1]
        hist = _histograms(levels, row_ranks * k // n_rows, col_ranks * cg // n_cols, k, cg, 1, 1, low, m)
        _, (k, cg, _, _) = _descend(hist, low, [rows_up_to, cols_up_to, (1,), (1,)],
                                   (rows_up_to.index(min(8, k)), 0, 0, 0), ids_bits)
        row_ids, col_ids = row_ranks * k // n_rows, col_ranks * cg // n_cols
        for order in (_NATURAL, _GROUPED) if k > 1 else (_NATURAL,):
            coded = _coding_order(row_ids, order)
            hist = _histograms(levels[coded], row_ids[coded], col_ids, k, cg, classes, matches, low, m)
            row_choices = (k,) if order == _GROUPED else tuple(g for g in rows_up_to if g <= k)
            choices = [row_choices, tuple(g for g in cols_up_to if g <= cg), _ABOVE_CLASSES, _MATCH_CLASSES]
            found = (len(choices[0]) - 1, len(choices[1]) - 1, 0, 0)
            for start in dict.fromkeys([found, (0, 0, 0, 0)]):  # from the groups found, and from none
                bits, shape = _descend(hist, low, choices, start, ids_bits)
                if best is None or bits < best.bits:
                    best = _Plan(bits, row_ranks * shape[0] // n_rows, col_ranks * shape[1] // n_cols, shape, order)
    return best


# --------------------------------------------------------------------------- coding kernels

@numba.njit(cache=True)
def _context_indices(rows, row_ids, col_ids, cg, a, mm):  # pragma: no cover - compiled
    """Context of every level of `rows` (coding order), flattened."""
    out = np.empty(rows.size, dtype=np.int32)
    half = a // 2
    i = 0
    for r in range(rows.shape[0]):
        recent = 0
        for c in range(rows.shape[1]):
            above = rows[r - 1, c] if r > 0 else 0
            out[i] = (((row_ids[r] * cg + col_ids[c]) * a + min(max(int(above), -half), half) + half) * mm
                      + min(_popcount4(recent), mm - 1))
            recent = ((recent << 1) | (rows[r, c] == above)) & 15
            i += 1
    return out


@numba.njit(cache=True, nogil=True)
def _encode_kernel(symbols, contexts, low, freq, cum, states, out, pos):  # pragma: no cover - compiled
    """Push `symbols` last first (symbol i onto state i & 1), each under its context's table."""
    top = np.uint64(64 - ans.PRECISION)
    x0, x1 = states[0], states[1]
    for i in range(symbols.size - 1, -1, -1):
        k = contexts[i]
        s = symbols[i] - low
        f = np.uint64(freq[k, s])
        x = x1 if i & 1 else x0
        if x >> top >= f:
            pos -= 1
            out[pos] = np.uint32(x & np.uint64(0xFFFFFFFF))
            x >>= np.uint64(32)
        q = x // f
        x = (q << np.uint64(ans.PRECISION)) + (x - q * f) + np.uint64(cum[k, s])
        if i & 1:
            x1 = x
        else:
            x0 = x
    states[0], states[1] = x0, x1
    return pos


@numba.njit(cache=True, nogil=True)
def _decode_kernel(words, pos, states, row_ids, col_ids, cg, a, mm, low, freq, cum, start, usable,
                   out):  # pragma: no cover - compiled
    """Decode the levels of `out` (rows in coding order), each under the table of its context; the new read
    position, -1 when the words run out, -2 when a level falls in a context that has no table."""
    mask, floor = np.uint64(ans.TOTAL - 1), np.uint64(1 << 32)
    shift = np.uint64(ans.PRECISION - _COARSE)
    half = a // 2
    x0, x1 = states[0], states[1]
    i = 0
    for r in range(out.shape[0]):
        row_base = row_ids[r] * cg
        recent = 0
        for c in range(out.shape[1]):
            above = out[r - 1, c] if r > 0 else 0
            k = ((row_base + col_ids[c]) * a + min(max(int(above), -half), half) + half) * mm + min(
                _popcount4(recent), mm - 1)
            if not usable[k]:
                return -2
            x = x1 if i & 1 else x0
            slot = x & mask
            s = start[k, slot >> shift]
            while cum[k, s + 1] <= slot:
                s += 1
            x = np.uint64(freq[k, s]) * (x >> np.uint64(ans.PRECISION)) + slot - np.uint64(cum[k, s])
            if x < floor:
                if pos >= words.size:
                    return -1
                x = (x << np.uint64(32)) | np.uint64(words[pos])
                pos += 1
            if i & 1:
                x1 = x
            else:
                x0 = x
            out[r, c] = low + s
            recent = ((recent << 1) | (out[r, c] == above)) & 15
            i += 1
    states[0], states[1] = x0, x1
    return pos


def _tables(models: list[tuple[int, np.ndarray | None] | None]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray,
                                                                         np.ndarray]:
    """(low, freq, cum, coarse start, usable) tables of the contexts' (low, frequencies or None for one value)
    models, None for an unused context; one row per context over the values low..high of all of them."""
    used = [model for model in models if model is not None]
    low = min(lo for lo, _ in used)
    high = max(lo + (1 if freq is None else freq.size) - 1 for lo, freq in used)
    m = high - low + 1
    freq = np.zeros((len(models), m), dtype=np.int64)
    usable = np.zeros(len(models), dtype=np.bool_)
    for k, model in enumerate(models):
        if model is not None:
            lo, f = model
            if f is None:
                freq[k, lo - low] = ans.TOTAL
            else:
                freq[k, lo - low : lo - low + f.size] = f
            usable[k] = True
    cum = np.zeros((len(models), m + 1), dtype=np.int64)
    np.cumsum(freq, axis=1, out=cum[:, 1:])
    cum[~usable, 1:] = ans.TOTAL  # never read: the decoder stops at an unusable context
    marks = np.arange(0, ans.TOTAL, 1 << (ans.PRECISION - _COARSE))
    start = np.empty((len(models), marks.size), dtype=np.int64)
    for k in range(len(models)):
        start[k] = np.searchsorted(cum[k], marks, side="right") - 1
    return low, freq, cum, start, usable


# --------------------------------------------------------------------------- encode

def _encode_plan(levels: np.ndarray, plan: _Plan) -> bytes:
    order = _coding_order(plan.row_ids, plan.order)
    rows, row_ids = levels[order], plan.row_ids[order]
    k, cg, a, mm = plan.shape
    contexts = _context_indices(rows, row_ids, plan.col_ids, cg, a, mm)
    n_contexts = k * cg * a * mm
    low = int(levels.min())
    m = int(levels.max()) - low + 1
    counts = np.bincount(contexts.astype(np.int64) * m + (rows.reshape(-1).astype(np.int64) - low),
                         minlength=n_contexts * m).reshape(n_contexts, m)
    head = bytearray([_CONTEXT_MARK])
    for value in plan.shape:
        rans.put_varint(head, value)
    head.append(plan.order)
    id_segments = []
    for ids, groups in ((plan.row_ids, k), (plan.col_ids, cg)):
        if groups > 1:
            model = rans.fit_model(0, np.bincount(ids, minlength=groups))
            rans.put_model(head, model)
            id_segments.append((ids.astype(np.int8), 0, ans.frequencies(model.weights)))
    models: list[tuple[int, np.ndarray | None] | None] = []
    for row in counts:
        if not row.any():
            head.append(0)
            models.append(None)
            continue
        model = rans.trimmed_model(row, low)
        rans.put_model(head, model)
        models.append((model.low, None if model.tag == 2 else ans.frequencies(model.weights)))
    table_low, freq, cum, _, _ = _tables(models)
    encoder = ans.Encoder(levels.size + sum(ids.size for ids, _, _ in id_segments))
    encoder.pos = _encode_kernel(rows.reshape(-1), contexts, table_low, freq, cum, encoder.states, encoder.out,
                                 encoder.pos)
    for ids, id_low, id_freq in reversed(id_segments):
        encoder.push(ids, id_low, id_freq)
    return bytes(head) + encoder.finish()


def encode(symbols: np.ndarray, itemsize: int, row_len: int) -> bytes:
    """The ctx stream of int8 `symbols` (`itemsize` bytes per value, `row_len` values per matrix row): a context
    stream, or the rans stream when that is smaller or the symbols are not a matrix of levels."""
    plain = rans.encode(symbols, itemsize, row_len)
    if itemsize != 1 or row_len <= 0 or symbols.size < 2 * row_len:
        return plain
    levels = symbols.reshape(-1, row_len)
    if levels.min() == levels.max():
        return plain
    coded = _encode_plan(levels, _best_plan(levels))
    return coded if len(coded) < len(plain) else plain


# --------------------------------------------------------------------------- decode

def _read_ids(reader: rans.SegmentReader, groups: int, what: str) -> tuple[int, np.ndarray | None] | None:
    """The head of a group id segment: values 0..groups-1 only, so decoded ids need no further check."""
    if groups == 1:
        return None
    low, spec = reader.segment()
    if isinstance(spec, bytes) or low != 0 or (spec is not None and spec.size > groups):
        raise ArtifactError(f"corrupt ctx stream ({what} ids are not a histogram of {groups} groups)")
    return low, spec


def decode(blob: bytes, n_bytes: int, itemsize: int, row_len: int) -> np.ndarray:
    """The int8 values of a ctx stream made by `encode` with the same layout; ArtifactError if corrupt."""
    if itemsize != 1 or row_len <= 0 or not blob or blob[0] != _CONTEXT_MARK:
        return rans.decode(blob, n_bytes, itemsize, row_len)
    if n_bytes % row_len:
        raise ArtifactError(f"corrupt ctx stream ({n_bytes} bytes are not a whole number of {row_len}-byte rows)")
    n_rows = n_bytes // row_len
    reader = rans.SegmentReader(blob)
    reader.pos = 1
    k, cg, a, mm = (reader.varint() for _ in range(4))
    if (k not in _ROW_GROUPS or k > n_rows or cg not in _COL_GROUPS or cg > row_len or a not in _ABOVE_CLASSES
            or mm not in _MATCH_CLASSES or k * cg * a * mm > _MAX_CONTEXTS):
        raise ArtifactError(f"corrupt ctx stream ({k} row groups, {cg} column groups, {a} x {mm} classes for "
                            f"{n_rows} x {row_len} levels)")
    if reader.pos >= len(blob) or blob[reader.pos] not in (_NATURAL, _GROUPED):
        raise ArtifactError("corrupt ctx stream (no row order)")
    order = blob[reader.pos]
    reader.pos += 1
    row_model = _read_ids(reader, k, "row")
    col_model = _read_ids(reader, cg, "column")
    models: list[tuple[int, np.ndarray | None] | None] = []
    for _ in range(k * cg * a * mm):
        if reader.pos < len(blob) and blob[reader.pos] == 0:
            reader.pos += 1
            models.append(None)
            continue
        low, spec = reader.segment()
        if isinstance(spec, bytes):
            raise ArtifactError("corrupt ctx stream (stored segment in a context table)")
        models.append((low, spec))
    if not any(model is not None for model in models):
        raise ArtifactError("corrupt ctx stream (no context has a table)")
    decoder = ans.Decoder(blob[reader.pos :])
    reader.decoder = decoder
    ids = []
    for model, n in ((row_model, n_rows), (col_model, row_len)):
        ids.append(np.zeros(n, dtype=np.int64) if model is None
                   else reader.decode(model, np.empty(n, dtype=np.int8)).astype(np.int64))
    row_ids, col_ids = ids
    low, freq, cum, start, usable = _tables(models)
    coding_order = _coding_order(row_ids, order)
    rows = np.empty((n_rows, row_len), dtype=np.int8)
    decoder.pos = _decode_kernel(decoder.words, decoder.pos, decoder.states, row_ids[coding_order], col_ids, cg, a,
                                 mm, low, freq, cum, start, usable, rows)
    if decoder.pos == -2:
        raise ArtifactError("corrupt ctx stream (a level falls in a context without a table)")
    if decoder.pos < 0:
        raise ArtifactError("corrupt ctx stream (coded words run out)")
    decoder.finish()
    out = np.empty_like(rows)
    out[coding_order] = rows
    return out.reshape(-1)

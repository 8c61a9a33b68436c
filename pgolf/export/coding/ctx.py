"""The `ctx` codec: quantized matrices coded under histograms conditioned on a context.

`rans` gives each row bucket one histogram. Trained weights carry more than
that: columns differ in spread as rows do, and in the embedding, the rows of
tokens the text rarely uses drift together, so a row predicts the rows like
it. `ctx` codes each level of a matrix under the histogram of its context:

    row group g -> (column group, class of the reference level, match class)

- Row groups: K <= 16 quantiles of the row's spread (sum of squared levels,
  as rans ranks rows), refined by Lloyd steps where classes pay. Column
  groups: quantiles of the column's spread; each row group merges them into
  its own L in 1, 2, 4, 8 groups.
- The reference level is the level at the same column in a reference row:
  the row above, the median of the three rows above, or a chosen row up to
  64 rows back (its offset stored per row: the row sharing the most levels).
  Each row group picks A reference classes (the reference level clipped to
  -A//2..A//2; A in 1, 3, 5, 9, 17, 25), M match classes (how many of the
  row's previous 4 levels equalled their reference, clipped to M - 1; M in
  1, 2, 3, 5) and whether it codes levels or their differences from the
  reference, modulo 256 (rows that drift together: one peaked histogram of
  differences instead of 25 shifted histograms of levels).
- Row order: natural, or grouped by row group (stable): a permutation that
  costs nothing beyond the group ids and puts similar rows above each other.

What is non-standard here:
- Static histograms fitted per tensor, not adaptive binary models: the
  encoder prices every structure exactly and keeps the smallest
  (ctx_search.py), and decoding stays one table lookup a level (~5 ns).
  ctx_model.py defines a level's reference, context and symbol for both.
- Measured (bench/bench_codecs.py, int6 mse) on the demo model and a
  9.7M-parameter checkpoint: column groups are what pays on matrices (mlp_out
  -1.6% against rans); on the embedding, chosen reference rows with
  difference coding for the rows that drift together (-16.6% and -10.3%
  against rans).
- The stream is the `rans` stream itself whenever that is smaller (or the
  stream is not a matrix: scales and float tensors), so `ctx` is never larger
  than `rans`: a context stream starts with a 0 byte, which a rans row stream
  never does (it starts with its bucket count, >= 1).
- Layout of a context stream: a 0 byte; varints K and L (the shared column
  groups); the reference byte (0 above, 1 median, 2 chosen) and the order byte
  (0 natural, 1 grouped); per row group varints (L_g, A_g, M_g, diff); the
  heads of the row ids (K > 1), column ids (L > 1) and, for chosen reference
  rows, the offsets of the rows whose group reads its reference; one head per
  context, row group by row group, in (column group, class, match class)
  order, 0 for a context no level uses; then one rANS word stream
  (ans.Encoder): row ids, column ids, offsets, levels.
- Decoding finds a level's slot through a 256-entry table per context, then a
  short forward scan: per-context tables of all 2^16 slots would take 64 MB
  at 1,000 contexts.
"""

from __future__ import annotations

import numba
import numpy as np

from pgolf.errors import ArtifactError
from pgolf.export.coding import ans, rans
from pgolf.export.coding.ctx_model import (
    ABOVE,
    CHOSEN,
    COL_GROUPS,
    GROUPED,
    MATCH_CLASSES,
    MAX_CONTEXTS,
    MEDIAN,
    NATURAL,
    REFERENCE_CLASSES,
    ROW_GROUPS,
    WINDOW,
    Plan,
    after,
    coding_order,
    context_bases,
    context_indices,
    fixed_offsets,
    group_sizes,
    level_context,
    level_of,
    reference_row,
    referencing,
    row_bases,
    stored_offsets,
)
from pgolf.export.coding.ctx_search import best_plan

_CONTEXT_MARK = 0  # first byte of a context stream: a rans row stream starts with its bucket count, >= 1
_COARSE = 8  # bits of the per-context slot lookup (256 entries)


@numba.njit(cache=True, nogil=True)
def _encode_kernel(symbols, contexts, low, freq, cum, states, out, pos):  # pragma: no cover - compiled
    """ans's encode kernel with a table per symbol (row contexts[i] of freq/cum): it lives here, beside the decode
    kernel that finds each context from the levels before it, so a packed script without ctx carries neither."""
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
def _decode_kernel(words, pos, states, row_ids, col_ids, n_col, shapes, bases, reference, offsets, low, freq, cum,
                   start, usable, out):  # pragma: no cover - compiled
    """Decode the levels of `out` (rows in coding order), each under the table of its context; the new read
    position, -1 when the words run out, -2 when a level falls in a context that has no table."""
    mask, floor = np.uint64(ans.TOTAL - 1), np.uint64(1 << 32)
    shift = np.uint64(ans.PRECISION - _COARSE)
    ref = np.zeros(out.shape[1], dtype=np.int64)
    first = np.zeros(out.shape[1], dtype=np.int64)
    x0, x1 = states[0], states[1]
    i = 0
    for r in range(out.shape[0]):
        g = row_ids[r]
        row_bases(col_ids, n_col, shapes[g], bases[g], first)
        reference_row(out, r, reference, offsets, ref)
        half, mm, diff = shapes[g, 1] // 2, shapes[g, 2], shapes[g, 3]
        recent = 0
        for c in range(out.shape[1]):
            k = level_context(first[c], ref[c], half, mm, recent)
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
            out[r, c] = level_of(low + s, ref[c], diff)
            recent = after(recent, out[r, c], ref[c])
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


def _encode_plan(levels: np.ndarray, plan: Plan) -> bytes:
    order = coding_order(plan.row_ids, plan.order)
    rows, row_ids = levels[order], plan.row_ids[order]
    shapes = np.array(plan.shapes, dtype=np.int64)
    bases = context_bases(shapes)
    contexts, symbols = context_indices(rows, row_ids, plan.col_ids, plan.n_col, shapes, bases, plan.reference,
                                         plan.offsets)
    n_contexts = int(group_sizes(shapes).sum())
    low = int(symbols.min())
    m = int(symbols.max()) - low + 1
    counts = np.bincount(contexts.astype(np.int64) * m + (symbols.astype(np.int64) - low),
                         minlength=n_contexts * m).reshape(n_contexts, m)
    head = bytearray([_CONTEXT_MARK])
    rans.put_varint(head, len(plan.shapes))
    rans.put_varint(head, plan.n_col)
    head += bytes([plan.reference, plan.order])
    for shape in plan.shapes:
        for value in shape:
            rans.put_varint(head, value)
    id_segments = []
    for ids, groups in ((plan.row_ids, len(plan.shapes)), (plan.col_ids, plan.n_col)):
        if groups > 1:
            model = rans.fit_model(0, np.bincount(ids, minlength=groups))
            rans.put_model(head, model)
            id_segments.append((ids.astype(np.int8), 0, ans.frequencies(model.weights)))
    if plan.reference == CHOSEN and referencing(plan.shapes).any():
        stored = stored_offsets(plan.offsets, row_ids, plan.shapes)
        model = rans.trimmed_model(np.bincount(stored), 0)
        rans.put_model(head, model)
        id_segments.append((stored.astype(np.int8), model.low, ans.frequencies(model.weights)))
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
    encoder.pos = _encode_kernel(symbols, contexts, table_low, freq, cum, encoder.states, encoder.out,
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
    coded = _encode_plan(levels, best_plan(levels))
    return coded if len(coded) < len(plain) else plain


def _read_ids(reader: rans.SegmentReader, groups: int, what: str) -> tuple[int, np.ndarray | None] | None:
    """The head of a group id segment: values 0..groups-1 only, so decoded ids need no further check."""
    if groups == 1:
        return None
    low, spec = reader.segment()
    if isinstance(spec, bytes) or low != 0 or (spec is not None and spec.size > groups):
        raise ArtifactError(f"corrupt ctx stream ({what} ids are not a histogram of {groups} groups)")
    return low, spec


def _read_structure(reader: rans.SegmentReader, n_rows: int, row_len: int) -> tuple[int, int, int, np.ndarray]:
    """(column groups, reference, order, per-row-group shapes) of a context stream's head, every value checked."""
    blob = reader.blob
    k, n_col = reader.varint(), reader.varint()
    if not 1 <= k <= min(ROW_GROUPS[-1], n_rows) or n_col not in COL_GROUPS or n_col > row_len:
        raise ArtifactError(f"corrupt ctx stream ({k} row groups, {n_col} column groups for {n_rows} x {row_len} "
                            f"levels)")
    if reader.pos + 2 > len(blob) or blob[reader.pos] not in (ABOVE, MEDIAN, CHOSEN) or blob[reader.pos + 1] not in (
            NATURAL, GROUPED):
        raise ArtifactError("corrupt ctx stream (no reference row or row order)")
    reference, order = blob[reader.pos], blob[reader.pos + 1]
    reader.pos += 2
    shapes = np.array([[reader.varint() for _ in range(4)] for _ in range(k)], dtype=np.int64)
    for cg, a, mm, diff in shapes:
        if (cg not in COL_GROUPS or cg > n_col or a not in REFERENCE_CLASSES or mm not in MATCH_CLASSES
                or diff not in (0, 1)):
            raise ArtifactError(f"corrupt ctx stream (row group of {cg} column groups, {a} x {mm} classes, "
                                f"difference flag {diff})")
    if group_sizes(shapes).sum() > MAX_CONTEXTS:
        raise ArtifactError(f"corrupt ctx stream ({group_sizes(shapes).sum()} contexts, over {MAX_CONTEXTS})")
    return n_col, reference, order, shapes


def decode(blob: bytes, n_bytes: int, itemsize: int, row_len: int) -> np.ndarray:
    """The int8 values of a ctx stream made by `encode` with the same layout; ArtifactError if corrupt."""
    if itemsize != 1 or row_len <= 0 or not blob or blob[0] != _CONTEXT_MARK:
        return rans.decode(blob, n_bytes, itemsize, row_len)
    if n_bytes % row_len:
        raise ArtifactError(f"corrupt ctx stream ({n_bytes} bytes are not a whole number of {row_len}-byte rows)")
    n_rows = n_bytes // row_len
    reader = rans.SegmentReader(blob)
    reader.pos = 1
    n_col, reference, order, shapes = _read_structure(reader, n_rows, row_len)
    row_model = _read_ids(reader, len(shapes), "row")
    col_model = _read_ids(reader, n_col, "column")
    offset_model = None
    if reference == CHOSEN and referencing(shapes).any():
        offset_model = reader.segment()
        low, spec = offset_model
        if isinstance(spec, bytes) or low < 0 or low + (1 if spec is None else spec.size) - 1 > WINDOW:
            raise ArtifactError(f"corrupt ctx stream (reference offsets are not a histogram of 0..{WINDOW})")
    models: list[tuple[int, np.ndarray | None] | None] = []
    for _ in range(int(group_sizes(shapes).sum())):
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
    row_ids, col_ids = (np.zeros(n, dtype=np.int64) if model is None
                        else reader.decode(model, np.empty(n, dtype=np.int8)).astype(np.int64)
                        for model, n in ((row_model, n_rows), (col_model, row_len)))
    coded = coding_order(row_ids, order)
    coded_row_ids = row_ids[coded]
    offsets = fixed_offsets(n_rows, reference)
    if offset_model is not None:
        reads = referencing(shapes)[coded_row_ids]
        offsets[reads] = reader.decode(offset_model, np.empty(int(reads.sum()), dtype=np.int8))
        if (offsets > np.arange(n_rows)).any():
            raise ArtifactError("corrupt ctx stream (a reference row before the first row)")
    low, freq, cum, start, usable = _tables(models)
    rows = np.empty((n_rows, row_len), dtype=np.int8)
    decoder.pos = _decode_kernel(decoder.words, decoder.pos, decoder.states, coded_row_ids, col_ids, n_col, shapes,
                                 context_bases(shapes), reference, offsets, low, freq, cum, start, usable, rows)
    if decoder.pos == -2:
        raise ArtifactError("corrupt ctx stream (a level falls in a context without a table)")
    if decoder.pos < 0:
        raise ArtifactError("corrupt ctx stream (coded words run out)")
    decoder.finish()
    out = np.empty_like(rows)
    out[coded] = rows
    return out.reshape(-1)


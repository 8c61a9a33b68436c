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
  reference, modulo 256 (rows that drift together: one peaked histogram of differences
  instead of 25 shifted histograms of levels).
- Row order: natural, or grouped by row group (stable): a permutation that
  costs nothing beyond the group ids and puts similar rows above each other.

What is non-standard here:
- Static histograms fitted per tensor, not adaptive binary models: the
  encoder prices every structure exactly (each context's head in rans's
  square-root format, ~17 bytes, plus the levels' code length under it, plus
  ids and offsets) and keeps the smallest, and decoding stays one table
  lookup a level (~5 ns). Structures nest (fewer groups merge neighbouring
  quantiles, fewer classes clip further), so one pass over the levels prices
  every coarser structure; coordinate descents walk them.
- Measured (bench/bench_codecs.py, int6 mse) on the demo model and a
  9.7M-parameter checkpoint: column groups are what pays on matrices (mlp_out
  -1.6% against rans); on the embedding, chosen reference rows with
  difference coding for the rows that drift together (-16.6% and -10.3%
  against rans). Reference classes never paid on matrices, so a screen
  (_classes_pay) skips their search there, which is most of the encode time.
- Tried and dropped: a row key from the levels' first principal direction
  (never chosen on either checkpoint); a stored full sort of the rows (~1.1 KB
  for 1,024 rows, gained less than it cost; even a greedy nearest-neighbour
  chain, O(n^2), was 1.3% under the grouped order before paying for itself).
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

import math
from typing import NamedTuple

import numba
import numpy as np

from pgolf.errors import ArtifactError
from pgolf.export import ans, rans

_CONTEXT_MARK = 0  # first byte of a context stream: a rans row stream starts with its bucket count, >= 1
_NATURAL, _GROUPED = 0, 1
_ABOVE, _MEDIAN, _CHOSEN = 0, 1, 2  # reference row: the row above, the median of the 3 above, or a stored choice
_WINDOW = 64  # a chosen reference row is at most this many rows back
_ROW_GROUPS = (1, 2, 4, 8, 16)
_COL_GROUPS = (1, 2, 4, 8)
_REFERENCE_CLASSES = (1, 3, 5, 9, 17, 25)
_MATCH_CLASSES = (1, 2, 3, 5)  # of the row's previous 4 levels, how many equalled their reference level
_MAX_CONTEXTS = 1024
_LLOYD_STEPS = 4
_COARSE = 8  # bits of the per-context slot lookup (256 entries)


# --------------------------------------------------------------------------- keys and groups

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
def _reference_row(rows, r, reference, offsets, out):  # pragma: no cover - compiled
    """Fill `out` with the reference levels of coded row r: the median of the three rows above (rows before the
    first count as zeros), or row r - offsets[r] (zeros for offset 0)."""
    for c in range(rows.shape[1]):
        if reference != _MEDIAN:
            out[c] = int(rows[r - offsets[r], c]) if offsets[r] > 0 else 0
            continue
        a = int(rows[r - 1, c]) if r >= 1 else 0
        b = int(rows[r - 2, c]) if r >= 2 else 0
        d = int(rows[r - 3, c]) if r >= 3 else 0
        out[c] = max(min(a, b), min(max(a, b), d))


@numba.njit(cache=True)
def _choose_offsets(rows, window):  # pragma: no cover - compiled
    """Per coded row, how far back its reference row is (0: none, zeros): the row among the `window` rows above
    it that has the most levels equal to it (the nearest on ties)."""
    offsets = np.zeros(rows.shape[0], dtype=np.int64)
    for r in range(rows.shape[0]):
        best = 0
        for c in range(rows.shape[1]):
            best += rows[r, c] == 0
        for d in range(1, min(window, r) + 1):
            same = 0
            for c in range(rows.shape[1]):
                same += rows[r, c] == rows[r - d, c]
            if same > best:
                best, offsets[r] = same, d
    return offsets


def _fixed_offsets(n_rows: int, reference: int) -> np.ndarray:
    """Reference row offsets the decoder knows without reading them: 1 for the row above (0 for the first row),
    0 (unused) for the median; a _CHOSEN stream overwrites those of its referencing rows."""
    offsets = np.full(n_rows, 1 if reference == _ABOVE else 0, dtype=np.int64)
    offsets[0] = 0
    return offsets


@numba.njit(cache=True)
def _wrapped(value):  # pragma: no cover - compiled
    """`value` modulo 256 as int8: differences of int8 levels always fit, and adding the reference back undoes
    them exactly."""
    return ((value + 128) & 255) - 128


@numba.njit(cache=True)
def _popcount4(bits):  # pragma: no cover - compiled
    return (bits & 1) + (bits >> 1 & 1) + (bits >> 2 & 1) + (bits >> 3 & 1)


@numba.njit(cache=True)
def _histograms(rows, row_ids, col_ids, n_row, n_col, classes, matches, reference, offsets, low, m,
                diff):  # pragma: no cover - compiled
    """Counts (row group, column group, class of the reference level, match class, symbol - low) of `rows` in
    coding order; the symbol is the level, or with `diff` the level minus its reference."""
    hist = np.zeros((n_row, n_col, classes, matches, m), dtype=np.int64)
    half = classes // 2
    ref = np.zeros(rows.shape[1], dtype=np.int64)
    for r in range(rows.shape[0]):
        _reference_row(rows, r, reference, offsets, ref)
        recent = 0  # bit i: the level i + 1 columns back equalled its reference
        for c in range(rows.shape[1]):
            a = min(max(ref[c], -half), half) + half
            symbol = _wrapped(rows[r, c] - ref[c]) if diff else rows[r, c]
            hist[row_ids[r], col_ids[c], a, min(_popcount4(recent), matches - 1), symbol - low] += 1
            recent = ((recent << 1) | (rows[r, c] == ref[c])) & 15
    return hist


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


def _offsets_bits(offsets: np.ndarray, coded_row_ids: np.ndarray, shapes, reference: int) -> float:
    """Bits of the reference offsets a _CHOSEN stream stores (head and codes)."""
    stored = _stored_offsets(offsets, coded_row_ids, shapes)
    return rans.trimmed_bits(np.bincount(stored), 0) if reference == _CHOSEN and stored.size else 0.0


class _Plan(NamedTuple):
    """A context structure and its estimated size in bits."""

    bits: float
    row_ids: np.ndarray
    """Row group of each row (natural order)."""
    col_ids: np.ndarray
    """Column group of each column, of `n_col` groups; a row group may merge them further."""
    n_col: int
    shapes: tuple[tuple[int, int, int, int], ...]
    """Per row group: (column groups, reference classes, match classes, 1 if it codes levels minus their
    reference)."""
    reference: int
    offsets: np.ndarray
    """Reference row offset of each coded row (stored for _CHOSEN, for the rows whose group has classes)."""
    order: int


def _descend(bits_of_shape, choices: list[tuple[int, ...]], start: tuple[int, ...]) -> tuple[float, tuple[int, ...]]:
    """(bits, shape) of the best shape a coordinate descent from `start` (indices into `choices`, one tuple of
    values per dimension) finds; `bits_of_shape` prices a shape."""
    seen: dict[tuple[int, ...], float] = {}

    def bits_of(at: tuple[int, ...]) -> float:
        if at not in seen:
            seen[at] = bits_of_shape(tuple(choices[d][at[d]] for d in range(len(at))))
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


def _group_shapes(hists: list[tuple[int, int, np.ndarray]], cols_up_to: tuple[int, ...],
                  class_choices: list[tuple[int, ...]], cap: int
                  ) -> tuple[float, tuple[tuple[int, int, int, int], ...]]:
    """(bits, per row group (column groups, classes, match classes, diff)) chosen for each row group on its own,
    from the finest histograms of each way to code it, (diff, low, hist): a group's contexts and symbols do not
    depend on the others'. Under the context cap one descent can stop at a corner (8 column groups x 9 classes)
    far from the best (1 x 25 on the demo embedding), hence two starts when classes are searched."""
    choices = [cols_up_to, *class_choices]
    # column groups found (what pays on matrices); else none, and all reference classes (what pays on embeddings)
    starts = ([(len(cols_up_to) - 1, 0, 0)] if class_choices[0] == (1,)
              else [(0, 0, 0), (0, len(class_choices[0]) - 1, 0)])
    total, shapes = 0.0, []
    for g in range(hists[0][2].shape[0]):
        found = []
        for diff, low, hist in hists:
            def bits_of_shape(shape: tuple[int, int, int], group=hist[g][None], low=low) -> float:
                return math.inf if math.prod(shape) > cap else _structure_bits(group, 1, *shape, low)

            bits, shape = min(_descend(bits_of_shape, choices, start) for start in starts)
            found.append((bits, (*shape, diff)))
        bits, shape = min(found)
        total += bits
        shapes.append(shape)
    return total, tuple(shapes)


def _alphabets(levels: np.ndarray) -> list[tuple[int, int, int]]:
    """(diff, low, size) of each way a row group may code its levels: as they are, and minus their reference.
    A reference level is a level, the median of levels and zeros, or 0 (no row), so it lies in
    [min(low, 0), max(high, 0)]; the differences are taken modulo 256, which only wraps when their range is
    wider than int8's."""
    low, high = int(levels.min()), int(levels.max())
    diff_low, diff_high = low - max(high, 0), high - min(low, 0)
    if diff_low < -128 or diff_high > 127:
        diff_low, diff_high = -128, 127
    return [(0, low, high - low + 1), (1, diff_low, diff_high - diff_low + 1)]


def _choose_shapes(rows: np.ndarray, row_ids: np.ndarray, col_ids: np.ndarray, k: int, cg: int, reference: int,
                   offsets: np.ndarray, cols_up_to: tuple[int, ...], class_choices: list[tuple[int, ...]],
                   alphabets: list[tuple[int, int, int]]) -> tuple[float, tuple[tuple[int, int, int, int], ...]]:
    """_group_shapes of `rows` (coding order) in k row groups and cg column groups."""
    classes, matches = class_choices[0][-1], class_choices[1][-1]
    hists = [(diff, low, _histograms(rows, row_ids, col_ids, k, cg, classes, matches, reference, offsets, low, m,
                                     diff)) for diff, low, m in alphabets]
    return _group_shapes(hists, tuple(g for g in cols_up_to if g <= cg), class_choices, _MAX_CONTEXTS // k)


def _classes_pay(levels: np.ndarray, row_ids: np.ndarray, k: int, low: int, m: int) -> bool:
    """Do reference or match classes (under the row above, in natural or grouped order) pay within the row groups
    found? The screen that keeps the class searches (most of the encode time) to the tensors where they can
    matter: the embeddings, on both trained checkpoints; never their matrices. Within row groups, not over the
    whole tensor: the match classes alone stand in for a row's spread there, which row groups capture better."""
    n_rows, n_cols = levels.shape

    def pays(order: int) -> bool:
        coded = _coding_order(row_ids, order)
        hist = _histograms(levels[coded], row_ids[coded], np.zeros(n_cols, dtype=np.int64), k, 1,
                           _REFERENCE_CLASSES[-1], _MATCH_CLASSES[-1], _ABOVE, _fixed_offsets(n_rows, _ABOVE), low, m,
                           0)

        def bits_of_shape(shape: tuple[int, int]) -> float:
            return _structure_bits(hist, k, 1, *shape, low) if k * math.prod(shape) <= _MAX_CONTEXTS else math.inf

        best = min(_descend(bits_of_shape, [_REFERENCE_CLASSES, _MATCH_CLASSES], start)
                   for start in ((0, 0), (len(_REFERENCE_CLASSES) - 1, 0)))
        return best[1] != (1, 1)

    return pays(_NATURAL) or (k > 1 and pays(_GROUPED))


def _best_plan(levels: np.ndarray) -> _Plan:
    """The smallest context structure found for a matrix of levels (rows, cols).

    1. Row groups (quantiles of the row's spread) and column groups (of the column's spread): one pass counts
       the finest groups, and a descent over (K, L) prices merged ones; each row group then picks its own
       column groups. This is the whole search on a matrix whose reference classes do not pay.
    2. Where they pay (_classes_pay: the embeddings), each row group also picks its classes and whether to
       code differences, under each reference (row above, median, chosen rows) and row order; also with rows
       grouped by how many levels they share with their chosen reference row (the rows that drift together);
       the best plan in natural order is then refined by Lloyd steps."""
    n_rows, n_cols = levels.shape
    low = int(levels.min())
    m = int(levels.max()) - low + 1
    rows_up_to = tuple(g for g in _ROW_GROUPS if g <= n_rows)
    cols_up_to = tuple(g for g in _COL_GROUPS if g <= n_cols)
    squares = np.square(levels.astype(np.int64))
    row_ranks, col_ranks = _quantile_ids(squares.sum(1), n_rows), _quantile_ids(squares.sum(0), n_cols)
    kf, lf = rows_up_to[-1], cols_up_to[-1]
    finest = _histograms(levels, row_ranks * kf // n_rows, col_ranks * lf // n_cols, kf, lf, 1, 1, _ABOVE,
                         _fixed_offsets(n_rows, _ABOVE), low, m, 0)

    def ids_bits(k: int, cg: int, row_ranks: np.ndarray = row_ranks) -> float:
        return _ids_bits(row_ranks * k // n_rows, k) + _ids_bits(col_ranks * cg // n_cols, cg)

    def bits_of_groups(shape: tuple[int, int]) -> float:
        return _structure_bits(finest, *shape, 1, 1, low) + ids_bits(*shape)

    _, (k, cg) = _descend(bits_of_groups, [rows_up_to, cols_up_to], (rows_up_to.index(min(8, kf)), 0))
    if not _classes_pay(levels, row_ranks * k // n_rows, k, low, m):
        merged = finest.reshape(k, kf // k, cg, lf // cg, 1, 1, m).sum(axis=(1, 3))  # quantile groups nest
        bits, shapes = _group_shapes([(0, low, merged)], tuple(g for g in cols_up_to if g <= cg), [(1,), (1,)],
                                     _MAX_CONTEXTS // k)
        return _Plan(bits + ids_bits(k, cg), row_ranks * k // n_rows, col_ranks * cg // n_cols, cg, shapes, _ABOVE,
                     _fixed_offsets(n_rows, _ABOVE), _NATURAL)

    class_choices = [_REFERENCE_CLASSES, _MATCH_CLASSES]
    alphabets = _alphabets(levels)
    plans: list[_Plan] = []

    def try_plan(row_ranks: np.ndarray, k: int, reference: int, order: int) -> None:
        row_ids, col_ids = row_ranks * k // n_rows, col_ranks * cg // n_cols
        coded = _coding_order(row_ids, order)
        offsets = (_choose_offsets(levels[coded], _WINDOW) if reference == _CHOSEN
                   else _fixed_offsets(n_rows, reference))
        bits, shapes = _choose_shapes(levels[coded], row_ids[coded], col_ids, k, cg, reference, offsets, cols_up_to,
                                      class_choices, alphabets)
        bits += ids_bits(k, cg, row_ranks) + _offsets_bits(offsets, row_ids[coded], shapes, reference)
        plans.append(_Plan(bits, row_ids, col_ids, cg, shapes, reference, offsets, order))

    for reference in (_ABOVE, _MEDIAN, _CHOSEN):
        for order in (_NATURAL, _GROUPED) if k > 1 else (_NATURAL,):
            try_plan(row_ranks, k, reference, order)
    offsets = _choose_offsets(levels, _WINDOW)
    shared = (levels == levels[np.arange(n_rows) - offsets] * (offsets > 0)[:, None]).sum(1)
    for groups in (g for g in (2, 4, 8) if g <= n_rows):
        for reference in (_ABOVE, _MEDIAN, _CHOSEN):
            try_plan(_quantile_ids(shared, n_rows), groups, reference, _NATURAL)
    best = min(plans, key=lambda plan: plan.bits)
    natural = min((plan for plan in plans if plan.order == _NATURAL), key=lambda plan: plan.bits)
    if len(natural.shapes) > 1:
        refined = _refined(levels, natural, cols_up_to, class_choices, alphabets)
        best = refined if refined.bits < best.bits else best
    return best


@numba.njit(cache=True)
def _row_costs(rows, col_ids, n_col, shapes, bases, reference, offsets, lengths, id_lengths, low):  # pragma: no cover
    """Code length (1/65536 bits) of each row (natural order) and its group id in each row group's contexts."""
    n_groups = shapes.shape[0]
    cost = np.zeros((rows.shape[0], n_groups), dtype=np.int64)
    ref = np.zeros(rows.shape[1], dtype=np.int64)
    first = np.zeros(rows.shape[1], dtype=np.int64)
    for r in range(rows.shape[0]):
        _reference_row(rows, r, reference, offsets, ref)
        for g in range(n_groups):
            _row_bases(col_ids, n_col, shapes[g], bases[g], first)
            half, mm = shapes[g, 1] // 2, shapes[g, 2]
            recent, total = 0, id_lengths[g]
            diff = shapes[g, 3]
            for c in range(rows.shape[1]):
                k = first[c] + (min(max(ref[c], -half), half) + half) * mm + min(_popcount4(recent), mm - 1)
                total += lengths[k, (_wrapped(rows[r, c] - ref[c]) if diff else rows[r, c]) - low]
                recent = ((recent << 1) | (rows[r, c] == ref[c])) & 15
            cost[r, g] = total
    return cost


def _refined(levels: np.ndarray, plan: _Plan, cols_up_to: tuple[int, ...], class_choices: list[tuple[int, ...]],
             alphabets: list[tuple[int, int, int]]) -> _Plan:
    """`plan` with its row groups refined by Lloyd steps: each row moves to the group whose contexts code it (and
    its id) in the fewest bits; kept while the exact size falls. Quantiles of one key cannot follow the rows
    that repeat an earlier row."""
    low = min(lo for _, lo, _ in alphabets)
    m = max(lo + size for _, lo, size in alphabets) - low
    for _ in range(_LLOYD_STEPS):
        shapes = np.array(plan.shapes, dtype=np.int64)
        bases = _bases(shapes)
        contexts, symbols = _context_indices(levels, plan.row_ids, plan.col_ids, plan.n_col, shapes, bases,
                                             plan.reference, plan.offsets)
        n_contexts = int(_group_sizes(shapes).sum())
        counts = np.bincount(contexts.astype(np.int64) * m + (symbols.astype(np.int64) - low),
                             minlength=n_contexts * m).reshape(n_contexts, m)
        lengths = np.stack([rans.code_lengths(row) for row in counts])
        id_lengths = rans.code_lengths(np.bincount(plan.row_ids, minlength=len(shapes)))
        nearest = _row_costs(levels, plan.col_ids, plan.n_col, shapes, bases, plan.reference, plan.offsets, lengths,
                             id_lengths, low).argmin(1)
        row_ids = np.cumsum(np.bincount(nearest, minlength=len(shapes)) > 0)[nearest] - 1  # empty groups dropped
        if np.array_equal(row_ids, plan.row_ids):
            break
        k = int(row_ids.max()) + 1
        bits, shapes = _choose_shapes(levels, row_ids, plan.col_ids, k, plan.n_col, plan.reference, plan.offsets,
                                      cols_up_to, class_choices, alphabets)
        bits += (_ids_bits(row_ids, k) + _ids_bits(plan.col_ids, plan.n_col)
                 + _offsets_bits(plan.offsets, row_ids, shapes, plan.reference))
        if bits >= plan.bits:
            break
        plan = plan._replace(bits=bits, row_ids=row_ids, shapes=shapes)
    return plan


# --------------------------------------------------------------------------- coding kernels

@numba.njit(cache=True)
def _row_bases(col_ids, n_col, shape, base, out):  # pragma: no cover - compiled
    """Fill `out` with each column's first context in a row group of `shape` whose contexts start at `base`."""
    cg, a, mm = shape[0], shape[1], shape[2]
    for c in range(col_ids.size):
        out[c] = base + col_ids[c] * cg // n_col * a * mm


@numba.njit(cache=True)
def _context_indices(rows, row_ids, col_ids, n_col, shapes, bases, reference, offsets):  # pragma: no cover
    """(context, symbol) of every level of `rows` (coding order), flattened; the symbol is the level, or the level
    minus its reference in a diff row group."""
    out = np.empty(rows.size, dtype=np.int32)
    symbols = np.empty(rows.size, dtype=np.int8)
    ref = np.zeros(rows.shape[1], dtype=np.int64)
    first = np.zeros(rows.shape[1], dtype=np.int64)
    i = 0
    for r in range(rows.shape[0]):
        g = row_ids[r]
        _row_bases(col_ids, n_col, shapes[g], bases[g], first)
        _reference_row(rows, r, reference, offsets, ref)
        half, mm = shapes[g, 1] // 2, shapes[g, 2]
        recent = 0
        diff = shapes[g, 3]
        for c in range(rows.shape[1]):
            out[i] = first[c] + (min(max(ref[c], -half), half) + half) * mm + min(_popcount4(recent), mm - 1)
            symbols[i] = _wrapped(rows[r, c] - ref[c]) if diff else rows[r, c]
            recent = ((recent << 1) | (rows[r, c] == ref[c])) & 15
            i += 1
    return out, symbols


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
        _row_bases(col_ids, n_col, shapes[g], bases[g], first)
        _reference_row(out, r, reference, offsets, ref)
        half, mm, diff = shapes[g, 1] // 2, shapes[g, 2], shapes[g, 3]
        recent = 0
        for c in range(out.shape[1]):
            k = first[c] + (min(max(ref[c], -half), half) + half) * mm + min(_popcount4(recent), mm - 1)
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
            out[r, c] = _wrapped(low + s + ref[c]) if diff else low + s
            recent = ((recent << 1) | (out[r, c] == ref[c])) & 15
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


def _referencing(shapes) -> np.ndarray:
    """Per row group: does it read the reference row (reference or match classes, or coding differences)?"""
    return np.array([tuple(shape[1:]) != (1, 1, 0) for shape in shapes], dtype=np.bool_)


def _group_sizes(shapes: np.ndarray) -> np.ndarray:
    """Contexts of each row group: column groups x reference classes x match classes."""
    return shapes[:, 0] * shapes[:, 1] * shapes[:, 2]


def _stored_offsets(offsets: np.ndarray, coded_row_ids: np.ndarray, shapes) -> np.ndarray:
    """The offsets a _CHOSEN stream stores: those of the rows (coding order) whose group reads its reference."""
    return offsets[_referencing(shapes)[coded_row_ids]]


def _bases(shapes: np.ndarray) -> np.ndarray:
    """First context of each row group: groups' contexts follow one another."""
    sizes = _group_sizes(shapes)
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


# --------------------------------------------------------------------------- encode

def _encode_plan(levels: np.ndarray, plan: _Plan) -> bytes:
    order = _coding_order(plan.row_ids, plan.order)
    rows, row_ids = levels[order], plan.row_ids[order]
    shapes = np.array(plan.shapes, dtype=np.int64)
    bases = _bases(shapes)
    contexts, symbols = _context_indices(rows, row_ids, plan.col_ids, plan.n_col, shapes, bases, plan.reference,
                                         plan.offsets)
    n_contexts = int(_group_sizes(shapes).sum())
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
    if plan.reference == _CHOSEN and _referencing(plan.shapes).any():
        stored = _stored_offsets(plan.offsets, row_ids, plan.shapes)
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


def _read_structure(reader: rans.SegmentReader, n_rows: int, row_len: int) -> tuple[int, int, int, np.ndarray]:
    """(column groups, reference, order, per-row-group shapes) of a context stream's head, every value checked."""
    blob = reader.blob
    k, n_col = reader.varint(), reader.varint()
    if not 1 <= k <= min(_ROW_GROUPS[-1], n_rows) or n_col not in _COL_GROUPS or n_col > row_len:
        raise ArtifactError(f"corrupt ctx stream ({k} row groups, {n_col} column groups for {n_rows} x {row_len} "
                            f"levels)")
    if reader.pos + 2 > len(blob) or blob[reader.pos] not in (_ABOVE, _MEDIAN, _CHOSEN) or blob[reader.pos + 1] not in (
            _NATURAL, _GROUPED):
        raise ArtifactError("corrupt ctx stream (no reference row or row order)")
    reference, order = blob[reader.pos], blob[reader.pos + 1]
    reader.pos += 2
    shapes = np.array([[reader.varint() for _ in range(4)] for _ in range(k)], dtype=np.int64)
    for cg, a, mm, diff in shapes:
        if (cg not in _COL_GROUPS or cg > n_col or a not in _REFERENCE_CLASSES or mm not in _MATCH_CLASSES
                or diff not in (0, 1)):
            raise ArtifactError(f"corrupt ctx stream (row group of {cg} column groups, {a} x {mm} classes, "
                                f"difference flag {diff})")
    if _group_sizes(shapes).sum() > _MAX_CONTEXTS:
        raise ArtifactError(f"corrupt ctx stream ({_group_sizes(shapes).sum()} contexts, over {_MAX_CONTEXTS})")
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
    if reference == _CHOSEN and _referencing(shapes).any():
        offset_model = reader.segment()
        low, spec = offset_model
        if isinstance(spec, bytes) or low < 0 or low + (1 if spec is None else spec.size) - 1 > _WINDOW:
            raise ArtifactError(f"corrupt ctx stream (reference offsets are not a histogram of 0..{_WINDOW})")
    models: list[tuple[int, np.ndarray | None] | None] = []
    for _ in range(int(_group_sizes(shapes).sum())):
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
    coding_order = _coding_order(row_ids, order)
    coded_row_ids = row_ids[coding_order]
    offsets = _fixed_offsets(n_rows, reference)
    if offset_model is not None:
        referencing = _referencing(shapes)[coded_row_ids]
        offsets[referencing] = reader.decode(offset_model, np.empty(int(referencing.sum()), dtype=np.int8))
        if (offsets > np.arange(n_rows)).any():
            raise ArtifactError("corrupt ctx stream (a reference row before the first row)")
    low, freq, cum, start, usable = _tables(models)
    rows = np.empty((n_rows, row_len), dtype=np.int8)
    decoder.pos = _decode_kernel(decoder.words, decoder.pos, decoder.states, coded_row_ids, col_ids, n_col, shapes,
                                 _bases(shapes), reference, offsets, low, freq, cum, start, usable, rows)
    if decoder.pos == -2:
        raise ArtifactError("corrupt ctx stream (a level falls in a context without a table)")
    if decoder.pos < 0:
        raise ArtifactError("corrupt ctx stream (coded words run out)")
    decoder.finish()
    out = np.empty_like(rows)
    out[coding_order] = rows
    return out.reshape(-1)

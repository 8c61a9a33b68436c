"""How the `ctx` encoder picks a context structure for a matrix of levels (ctx_model.py says what the structures
are; ctx.py codes under one).

- Every structure is priced exactly: each context's head in rans's square-root format (~17 bytes) plus the
  levels' code length under it, plus ids and offsets; the smallest found is kept.
- Structures nest (fewer groups merge neighbouring quantiles, fewer classes clip further), so one pass over the
  levels counts the finest histograms and prices every coarser structure; coordinate descents walk them.
- Reference classes never paid on the matrices of either trained checkpoint, so a screen (_classes_pay) skips
  their search there: it is most of the encode time.
- Tried and dropped: a row key from the levels' first principal direction (never chosen on either checkpoint);
  a stored full sort of the rows (~1.1 KB for 1,024 rows, gained less than it cost; even a greedy
  nearest-neighbour chain, O(n^2), was 1.3% under the grouped order before paying for itself).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pgolf.export.coding import rans
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
    reference_row,
    row_bases,
    stored_offsets,
    symbol_of,
)

_LLOYD_STEPS = 4


def _quantile_ids(key: np.ndarray, groups: int) -> np.ndarray:
    """Group of each entry (0..groups-1): its rank by `key` (ties by position) cut into equal parts."""
    ranks = np.empty(key.size, dtype=np.int64)
    ranks[np.argsort(key, kind="stable")] = np.arange(key.size)
    return ranks * groups // key.size


@numba.njit(cache=True)
def choose_offsets(rows, window):  # pragma: no cover - compiled
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


@numba.njit(cache=True)
def _histograms(rows, row_ids, col_ids, n_row, n_col, classes, matches, reference, offsets, low, m,
                diff):  # pragma: no cover - compiled
    """Counts (row group, column group, class of the reference level, match class, symbol - low) of `rows` in
    coding order; the symbol is the level, or with `diff` the level minus its reference."""
    hist = np.zeros((n_row, n_col, classes * matches, m), dtype=np.int64)  # (class, match class) flattened
    half = classes // 2
    ref = np.zeros(rows.shape[1], dtype=np.int64)
    for r in range(rows.shape[0]):
        reference_row(rows, r, reference, offsets, ref)
        recent = 0
        for c in range(rows.shape[1]):
            inner = level_context(0, ref[c], half, matches, recent)
            hist[row_ids[r], col_ids[c], inner, symbol_of(rows[r, c], ref[c], diff) - low] += 1
            recent = after(recent, rows[r, c], ref[c])
    return hist.reshape(n_row, n_col, classes, matches, m)


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
    """Bits of the reference offsets a CHOSEN stream stores (head and codes)."""
    stored = stored_offsets(offsets, coded_row_ids, shapes)
    return rans.trimmed_bits(np.bincount(stored), 0) if reference == CHOSEN and stored.size else 0.0


def _descend(bits_of_shape, choices: list[tuple[int, ...]], starts: list[tuple[int, ...]]
             ) -> tuple[float, tuple[int, ...]]:
    """(bits, shape) of the best shape coordinate descents from each of `starts` (indices into `choices`, one tuple
    of values per dimension) find; `bits_of_shape` prices a shape, once per shape over all the descents."""
    seen: dict[tuple[int, ...], float] = {}

    def bits_of(at: tuple[int, ...]) -> float:
        if at not in seen:
            seen[at] = bits_of_shape(tuple(choices[d][at[d]] for d in range(len(at))))
        return seen[at]

    found = []
    for start in starts:
        best, improved = start, True
        while improved:
            improved = False
            for d in range(len(start)):
                for step in (1, -1):
                    at = best[:d] + (best[d] + step,) + best[d + 1 :]
                    if 0 <= at[d] < len(choices[d]) and bits_of(at) < bits_of(best):
                        best, improved = at, True
        found.append((bits_of(best), tuple(choices[d][best[d]] for d in range(len(start)))))
    return min(found)


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

            bits, shape = _descend(bits_of_shape, choices, starts)
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
    return _group_shapes(hists, tuple(g for g in cols_up_to if g <= cg), class_choices, MAX_CONTEXTS // k)


def _classes_pay(levels: np.ndarray, row_ids: np.ndarray, k: int, low: int, m: int) -> bool:
    """Do reference or match classes (under the row above, in natural or grouped order) pay within the row groups
    found? The screen that keeps the class searches (most of the encode time) to the tensors where they can
    matter: the embeddings, on both trained checkpoints; never their matrices. Within row groups, not over the
    whole tensor: the match classes alone stand in for a row's spread there, which row groups capture better."""
    n_rows, n_cols = levels.shape

    def pays(order: int) -> bool:
        coded = coding_order(row_ids, order)
        hist = _histograms(levels[coded], row_ids[coded], np.zeros(n_cols, dtype=np.int64), k, 1,
                           REFERENCE_CLASSES[-1], MATCH_CLASSES[-1], ABOVE, fixed_offsets(n_rows, ABOVE), low, m,
                           0)

        def bits_of_shape(shape: tuple[int, int]) -> float:
            return _structure_bits(hist, k, 1, *shape, low) if k * math.prod(shape) <= MAX_CONTEXTS else math.inf

        best = _descend(bits_of_shape, [REFERENCE_CLASSES, MATCH_CLASSES], [(0, 0), (len(REFERENCE_CLASSES) - 1, 0)])
        return best[1] != (1, 1)

    return pays(NATURAL) or (k > 1 and pays(GROUPED))


def best_plan(levels: np.ndarray) -> Plan:
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
    rows_up_to = tuple(g for g in ROW_GROUPS if g <= n_rows)
    cols_up_to = tuple(g for g in COL_GROUPS if g <= n_cols)
    squares = np.square(levels.astype(np.int64))
    row_ranks, col_ranks = _quantile_ids(squares.sum(1), n_rows), _quantile_ids(squares.sum(0), n_cols)
    kf, lf = rows_up_to[-1], cols_up_to[-1]
    finest = _histograms(levels, row_ranks * kf // n_rows, col_ranks * lf // n_cols, kf, lf, 1, 1, ABOVE,
                         fixed_offsets(n_rows, ABOVE), low, m, 0)

    def ids_bits(k: int, cg: int, row_ranks: np.ndarray = row_ranks) -> float:
        return _ids_bits(row_ranks * k // n_rows, k) + _ids_bits(col_ranks * cg // n_cols, cg)

    def bits_of_groups(shape: tuple[int, int]) -> float:
        return _structure_bits(finest, *shape, 1, 1, low) + ids_bits(*shape)

    _, (k, cg) = _descend(bits_of_groups, [rows_up_to, cols_up_to], [(rows_up_to.index(min(8, kf)), 0)])
    if not _classes_pay(levels, row_ranks * k // n_rows, k, low, m):
        merged = finest.reshape(k, kf // k, cg, lf // cg, 1, 1, m).sum(axis=(1, 3))  # quantile groups nest
        bits, shapes = _group_shapes([(0, low, merged)], tuple(g for g in cols_up_to if g <= cg), [(1,), (1,)],
                                     MAX_CONTEXTS // k)
        return Plan(bits + ids_bits(k, cg), row_ranks * k // n_rows, col_ranks * cg // n_cols, cg, shapes, ABOVE,
                     fixed_offsets(n_rows, ABOVE), NATURAL)

    class_choices = [REFERENCE_CLASSES, MATCH_CLASSES]
    alphabets = _alphabets(levels)
    plans: list[Plan] = []
    natural_offsets = choose_offsets(levels, WINDOW)  # chosen reference rows in natural order, found once

    def try_plan(row_ranks: np.ndarray, k: int, reference: int, order: int) -> None:
        row_ids, col_ids = row_ranks * k // n_rows, col_ranks * cg // n_cols
        coded = coding_order(row_ids, order)
        if reference != CHOSEN:
            offsets = fixed_offsets(n_rows, reference)
        else:
            offsets = natural_offsets if order == NATURAL else choose_offsets(levels[coded], WINDOW)
        bits, shapes = _choose_shapes(levels[coded], row_ids[coded], col_ids, k, cg, reference, offsets, cols_up_to,
                                      class_choices, alphabets)
        bits += ids_bits(k, cg, row_ranks) + _offsets_bits(offsets, row_ids[coded], shapes, reference)
        plans.append(Plan(bits, row_ids, col_ids, cg, shapes, reference, offsets, order))

    for reference in (ABOVE, MEDIAN, CHOSEN):
        for order in (NATURAL, GROUPED) if k > 1 else (NATURAL,):
            try_plan(row_ranks, k, reference, order)
    references = levels[np.arange(n_rows) - natural_offsets] * (natural_offsets > 0)[:, None]
    shared = (levels == references).sum(1)
    for groups in (g for g in (2, 4, 8) if g <= n_rows):
        for reference in (ABOVE, MEDIAN, CHOSEN):
            try_plan(_quantile_ids(shared, n_rows), groups, reference, NATURAL)
    best = min(plans, key=lambda plan: plan.bits)
    natural = min((plan for plan in plans if plan.order == NATURAL), key=lambda plan: plan.bits)
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
        reference_row(rows, r, reference, offsets, ref)
        for g in range(n_groups):
            row_bases(col_ids, n_col, shapes[g], bases[g], first)
            half, mm = shapes[g, 1] // 2, shapes[g, 2]
            recent, total = 0, id_lengths[g]
            diff = shapes[g, 3]
            for c in range(rows.shape[1]):
                k = level_context(first[c], ref[c], half, mm, recent)
                total += lengths[k, symbol_of(rows[r, c], ref[c], diff) - low]
                recent = after(recent, rows[r, c], ref[c])
            cost[r, g] = total
    return cost


def _refined(levels: np.ndarray, plan: Plan, cols_up_to: tuple[int, ...], class_choices: list[tuple[int, ...]],
             alphabets: list[tuple[int, int, int]]) -> Plan:
    """`plan` with its row groups refined by Lloyd steps: each row moves to the group whose contexts code it (and
    its id) in the fewest bits; kept while the exact size falls. Quantiles of one key cannot follow the rows
    that repeat an earlier row."""
    low = min(lo for _, lo, _ in alphabets)
    m = max(lo + size for _, lo, size in alphabets) - low
    for _ in range(_LLOYD_STEPS):
        shapes = np.array(plan.shapes, dtype=np.int64)
        bases = context_bases(shapes)
        contexts, symbols = context_indices(levels, plan.row_ids, plan.col_ids, plan.n_col, shapes, bases,
                                             plan.reference, plan.offsets)
        n_contexts = int(group_sizes(shapes).sum())
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


"""What a level's context is in the `ctx` codec, shared by its encoder search (ctx_search.py) and its coder
(ctx.py): the structure constants, a plan, and the compiled functions that give every level its reference,
context and symbol.

A level at (r, c) of the coded rows, in row group g of shape (L_g, A_g, M_g, diff_g):
- its reference is the level at column c of a reference row: the row above (ABOVE), the median of the three rows
  above (MEDIAN), or row r - offset[r] (CHOSEN; offset 0: a row of zeros);
- its context is context_bases[g] + ((column group merged to L_g) x A_g + reference class) x M_g + match class,
  the reference class being the reference clipped to -A_g//2..A_g//2 and the match class how many of the row's
  previous 4 levels equalled their reference, clipped to M_g - 1;
- its symbol is the level, or with diff_g the level minus its reference modulo 256.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

NATURAL, GROUPED = 0, 1
"""Row orders: natural, or grouped by row group (stable)."""
ABOVE, MEDIAN, CHOSEN = 0, 1, 2
"""Reference rows: the row above, the median of the three above, or a stored choice."""
WINDOW = 64
"""A chosen reference row is at most this many rows back."""
ROW_GROUPS = (1, 2, 4, 8, 16)
COL_GROUPS = (1, 2, 4, 8)
REFERENCE_CLASSES = (1, 3, 5, 9, 17, 25)
MATCH_CLASSES = (1, 2, 3, 5)
MAX_CONTEXTS = 1024


class Plan(NamedTuple):
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
    """Reference row offset of each coded row (stored for CHOSEN, for the rows whose group reads its reference)."""
    order: int


def coding_order(row_ids: np.ndarray, order: int) -> np.ndarray:
    """Rows in the order they are coded: natural, or grouped by row id (stable)."""
    return np.argsort(row_ids, kind="stable") if order == GROUPED else np.arange(row_ids.size)


def fixed_offsets(n_rows: int, reference: int) -> np.ndarray:
    """Reference row offsets the decoder knows without reading them: 1 for the row above (0 for the first row),
    0 (unused) for the median; a CHOSEN stream overwrites those of its referencing rows."""
    offsets = np.full(n_rows, 1 if reference == ABOVE else 0, dtype=np.int64)
    offsets[0] = 0
    return offsets


@numba.njit(cache=True)
def reference_row(rows, r, reference, offsets, out):  # pragma: no cover - compiled
    """Fill `out` with the reference levels of coded row r: the median of the three rows above (rows before the
    first count as zeros), or row r - offsets[r] (zeros for offset 0)."""
    for c in range(rows.shape[1]):
        if reference != MEDIAN:
            out[c] = int(rows[r - offsets[r], c]) if offsets[r] > 0 else 0
            continue
        a = int(rows[r - 1, c]) if r >= 1 else 0
        b = int(rows[r - 2, c]) if r >= 2 else 0
        d = int(rows[r - 3, c]) if r >= 3 else 0
        out[c] = max(min(a, b), min(max(a, b), d))


@numba.njit(cache=True)
def wrapped(value):  # pragma: no cover - compiled
    """`value` modulo 256 as int8: differences of int8 levels always fit, and adding the reference back undoes
    them exactly."""
    return ((value + 128) & 255) - 128


@numba.njit(cache=True)
def symbol_of(level, ref, diff):  # pragma: no cover - compiled
    """What a level is coded as: itself, or in a diff row group its difference from the reference."""
    return wrapped(level - ref) if diff else level


@numba.njit(cache=True)
def level_of(symbol, ref, diff):  # pragma: no cover - compiled
    """The level a decoded symbol stands for: `symbol_of` undone."""
    return wrapped(symbol + ref) if diff else symbol


@numba.njit(cache=True)
def level_context(first, ref, half, mm, recent):  # pragma: no cover - compiled
    """Context of a level: its column's first context (`row_bases`), then the class of its reference level
    (clipped to -half..half) and its match class (of `recent`, clipped to mm - 1)."""
    matches = (recent & 1) + (recent >> 1 & 1) + (recent >> 2 & 1) + (recent >> 3 & 1)
    return first + (min(max(ref, -half), half) + half) * mm + min(matches, mm - 1)


@numba.njit(cache=True)
def after(recent, level, ref):  # pragma: no cover - compiled
    """`recent` after a level: bit i says whether the level i + 1 columns back equalled its reference."""
    return ((recent << 1) | (level == ref)) & 15


@numba.njit(cache=True)
def row_bases(col_ids, n_col, shape, base, out):  # pragma: no cover - compiled
    """Fill `out` with each column's first context in a row group of `shape` whose contexts start at `base`."""
    cg, a, mm = shape[0], shape[1], shape[2]
    for c in range(col_ids.size):
        out[c] = base + col_ids[c] * cg // n_col * a * mm


@numba.njit(cache=True)
def context_indices(rows, row_ids, col_ids, n_col, shapes, bases, reference, offsets):  # pragma: no cover
    """(context, symbol) of every level of `rows` (coding order), flattened; the symbol is the level, or the level
    minus its reference in a diff row group."""
    out = np.empty(rows.size, dtype=np.int32)
    symbols = np.empty(rows.size, dtype=np.int8)
    ref = np.zeros(rows.shape[1], dtype=np.int64)
    first = np.zeros(rows.shape[1], dtype=np.int64)
    i = 0
    for r in range(rows.shape[0]):
        g = row_ids[r]
        row_bases(col_ids, n_col, shapes[g], bases[g], first)
        reference_row(rows, r, reference, offsets, ref)
        half, mm = shapes[g, 1] // 2, shapes[g, 2]
        recent = 0
        diff = shapes[g, 3]
        for c in range(rows.shape[1]):
            out[i] = level_context(first[c], ref[c], half, mm, recent)
            symbols[i] = symbol_of(rows[r, c], ref[c], diff)
            recent = after(recent, rows[r, c], ref[c])
            i += 1
    return out, symbols


def referencing(shapes) -> np.ndarray:
    """Per row group: does it read the reference row (reference or match classes, or coding differences)?"""
    return np.array([tuple(shape[1:]) != (1, 1, 0) for shape in shapes], dtype=np.bool_)


def group_sizes(shapes: np.ndarray) -> np.ndarray:
    """Contexts of each row group: column groups x reference classes x match classes."""
    return shapes[:, 0] * shapes[:, 1] * shapes[:, 2]


def stored_offsets(offsets: np.ndarray, coded_row_ids: np.ndarray, shapes) -> np.ndarray:
    """The offsets a CHOSEN stream stores: those of the rows (coding order) whose group reads its reference."""
    return offsets[referencing(shapes)[coded_row_ids]]


def context_bases(shapes: np.ndarray) -> np.ndarray:
    """First context of each row group: groups' contexts follow one another."""
    sizes = group_sizes(shapes)
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


"""Helpers shared by the coding tests: int6 levels and the streams every codec round-trips, matrices of levels with
structure, the ctx layout (its constants, a parser, editors of a stream's head, context streams coded under fixed
structures) and the round-trip cases."""

from typing import NamedTuple

import numpy as np

from pgolf.export.coding import codecs, ctx, ctx_model, ctx_search, rans


def int6_levels(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Per-row int6 levels of heavy-tailed rows (row-max clip), as export makes them."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(4.5, size=(rows, cols))
    return np.round(w / (np.abs(w).max(axis=1, keepdims=True) / 31)).astype(np.int8)


STREAMS = {
    "empty": (b"", 1, 0),
    "one symbol": (b"\x07" * 50, 1, 0),
    "int6 rows": (int6_levels(24, 40).tobytes(), 1, 40),
    "rows of two kinds": (np.concatenate([int6_levels(8, 30), int6_levels(8, 30) // 8]).tobytes(), 1, 30),
    "all byte values": (bytes(range(256)) * 3, 1, 0),
    "fp16 values": (np.linspace(-3, 3, 101).astype(np.float16).tobytes(), 2, 0),
    "fp32 constants": (np.ones(64, dtype=np.float32).tobytes(), 4, 0),
}


def column_spreads(rows: int, cols: int, seed: int) -> np.ndarray:
    """Laplace levels whose columns fall in 4 groups of widths 1, 2, 4, 8 (shuffled): rows alike, columns not."""
    rng = np.random.default_rng(seed)
    widths = np.repeat([1.0, 2.0, 4.0, 8.0], cols // 4)[rng.permutation(cols)]
    return np.clip(np.round(rng.laplace(0, 1, (rows, cols)) * widths), -31, 31).astype(np.int8)


def drifting_rows(rows: int, cols: int, seed: int) -> np.ndarray:
    """An embedding's shape: half the rows are one shared row times a per-row factor plus small noise, the
    others independent heavy-tailed rows; all shuffled, so only a coder that groups rows sees the pattern."""
    rng = np.random.default_rng(seed)
    shared = 6 * rng.standard_t(4.5, cols)
    half = rows // 2
    drift = shared * rng.uniform(0.5, 1.5, (half, 1)) + rng.normal(0, 1, (half, cols))
    independent = 6 * rng.standard_t(4.5, (rows - half, cols))
    w = np.concatenate([drift, independent])[rng.permutation(rows)]
    return np.clip(np.round(w), -31, 31).astype(np.int8)


def random_walk(rows: int, cols: int, seed: int) -> np.ndarray:
    """Each row the one above plus -1, 0 or +1: the level above predicts the level."""
    rng = np.random.default_rng(seed)
    return np.clip(np.cumsum(rng.integers(-1, 2, (rows, cols)), axis=0), -31, 31).astype(np.int8)


def copied_runs(rows: int, cols: int, seed: int) -> np.ndarray:
    """Each row copies the one above in runs of 8 columns (half the runs), the other runs drawn afresh: a
    level that equalled the one above predicts that the next does too."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-8, 9, (rows, cols))
    copied = np.repeat(rng.random((rows, -(-cols // 8))) < 0.5, 8, axis=1)[:, :cols]
    for r in range(1, rows):
        w[r] = np.where(copied[r], w[r - 1], w[r])
    return w.astype(np.int8)


def spiked_rows(rows: int, cols: int, seed: int) -> np.ndarray:
    """One shared row in every row, with a tenth of each row's levels replaced by wide spikes: the median of
    the three rows above drops the spikes of the row above, which the row above itself carries."""
    rng = np.random.default_rng(seed)
    w = np.tile(rng.integers(-6, 7, cols), (rows, 1))
    spikes = rng.random((rows, cols)) < 0.1
    return np.where(spikes, rng.integers(-20, 21, (rows, cols)), w).astype(np.int8)


def rows_copied_from_further_back(rows: int, cols: int, seed: int) -> np.ndarray:
    """Each row copies a row 2..8 rows back (9 levels in 10; the first two rows drawn afresh): never the row
    above, so only a reference row chosen per row predicts it."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-8, 9, (rows, cols))
    for r in range(1, rows):
        back = min(r, int(rng.integers(2, 9)))
        w[r] = np.where(rng.random(cols) < 0.9, w[r - back], w[r])
    return w.astype(np.int8)


def interleaved_walk(rows: int, cols: int, seed: int) -> np.ndarray:
    """Half the rows (scattered) are consecutive steps of a narrow random walk, the others wide Laplace rows:
    the row above predicts a walk row only once the rows are grouped."""
    rng = np.random.default_rng(seed)
    half = rows // 2
    walk = np.clip(np.cumsum(rng.integers(-1, 2, (half, cols)), axis=0), -3, 3)
    wide = np.round(rng.laplace(0, 12, (rows - half, cols)))
    is_walk = np.zeros(rows, dtype=bool)
    is_walk[rng.permutation(rows)[:half]] = True
    w = np.empty((rows, cols))
    w[is_walk], w[~is_walk] = walk, wide
    return np.clip(w, -31, 31).astype(np.int8)


def ctx_and_rans(levels: np.ndarray) -> tuple[bytes, bytes]:
    """(ctx, rans) streams of a matrix of levels; asserts the ctx stream decodes to it."""
    row_len = levels.shape[1]
    blob = codecs.encode("ctx", levels, -1, 1, row_len)
    assert codecs.decode("ctx", blob, levels.size, 1, row_len) == levels.tobytes()
    return blob, codecs.encode("rans", levels, -1, 1, row_len)


# --------------------------------------------------------------------------- the layout

CONTEXT_MARK = 0
"""First byte of a context stream; any other stream is the rans stream itself (a rans stream of a matrix starts
with its bucket count, >= 1)."""
ABOVE, MEDIAN, CHOSEN = 0, 1, 2
"""The reference byte: the row above, the median of the three rows above, a row chosen per row (an offset
0..WINDOW back, 0 for a row of zeros)."""
NATURAL, GROUPED = 0, 1
"""The order byte: rows coded in their order, or grouped by row group (stable)."""
WINDOW = 64
ROW_GROUPS_MAX = 16
COLUMN_GROUPS = (1, 2, 4, 8)
REFERENCE_CLASSES = (1, 3, 5, 9, 17, 25)
MATCH_CLASSES = (1, 2, 3, 5)
MAX_CONTEXTS = 1024


class Header(NamedTuple):
    """A context stream's head: the structure, and where its parts lie ((start, end) byte spans)."""

    k: int
    """Row groups."""
    n_col: int
    """Column groups of the shared column ids."""
    reference: int
    order: int
    shapes: tuple[tuple[int, int, int, int], ...]
    """Per row group: (column groups, reference classes, match classes, difference flag)."""
    reference_at: int
    """The reference byte; the order byte follows it."""
    ids_at: int
    """Where the heads start: the end of the row groups' shapes."""
    row_ids: tuple[int, int] | None
    col_ids: tuple[int, int] | None
    offsets: tuple[int, int] | None
    contexts: list[tuple[int, int]]
    """One span per context, row group by row group, each in (column group, reference class, match class)
    order; a 1-byte span of 0 for an unused one."""
    words_at: int


def reads_reference(shape: tuple[int, int, int, int]) -> bool:
    """Does a row group read its reference row: reference or match classes, or levels coded minus the reference?"""
    return shape[1:] != (1, 1, 0)


def n_contexts(shapes: tuple[tuple[int, ...], ...]) -> int:
    return sum(cg * a * m for cg, a, m, _ in shapes)


def parse(blob: bytes) -> Header:
    """The head of a context stream: CONTEXT_MARK; varints K, L; reference and order bytes; K x varints (l, a, m, d);
    heads of the row ids (K > 1), column ids (L > 1) and reference offsets (CHOSEN, when a group reads its
    reference); one head per context; then the words. Asserts the values the decoder allows."""
    assert blob[0] == CONTEXT_MARK
    reader = rans.SegmentReader(blob)
    reader.pos = 1
    k, n_col = reader.varint(), reader.varint()
    reference_at = reader.pos
    reference, order = blob[reference_at], blob[reference_at + 1]
    reader.pos += 2
    shapes = tuple(tuple(reader.varint() for _ in range(4)) for _ in range(k))
    assert 1 <= k <= ROW_GROUPS_MAX and n_col in COLUMN_GROUPS and reference in (ABOVE, MEDIAN, CHOSEN)
    assert order in (NATURAL, GROUPED)
    assert all(cg in COLUMN_GROUPS and cg <= n_col and a in REFERENCE_CLASSES and m in MATCH_CLASSES and d in (0, 1)
               for cg, a, m, d in shapes)
    assert n_contexts(shapes) <= MAX_CONTEXTS
    ids_at = reader.pos
    spans = []
    for present in (k > 1, n_col > 1, reference == CHOSEN and any(map(reads_reference, shapes))):
        start = reader.pos
        if present:
            reader.segment()
        spans.append((start, reader.pos) if present else None)
    contexts = []
    for _ in range(n_contexts(shapes)):
        start = reader.pos
        if blob[start] == 0:
            reader.pos += 1
        else:
            reader.segment()
        contexts.append((start, reader.pos))
    return Header(k, n_col, reference, order, shapes, reference_at, ids_at, *spans, contexts, reader.pos)


def with_structure(blob: bytes, k: int | None = None, n_col: int | None = None,
                   shapes: tuple[tuple[int, ...], ...] | None = None, reference: int | None = None,
                   order: int | None = None) -> bytes:
    """`blob` with the given parts of its structure replaced (the heads and words as they were)."""
    header = parse(blob)
    head = bytearray([CONTEXT_MARK])
    rans.put_varint(head, header.k if k is None else k)
    rans.put_varint(head, header.n_col if n_col is None else n_col)
    head += bytes([header.reference if reference is None else reference, header.order if order is None else order])
    for shape in header.shapes if shapes is None else shapes:
        for value in shape:
            rans.put_varint(head, value)
    return bytes(head) + blob[header.ids_at :]


def splice(blob: bytes, span: tuple[int, int], replacement: bytes) -> bytes:
    return blob[: span[0]] + replacement + blob[span[1] :]


def head_of(low: int, counts: list[int]) -> bytes:
    head = bytearray()
    rans.put_model(head, rans.fit_model(low, np.array(counts)))
    return bytes(head)


def offsets_head(blob: bytes) -> tuple[int, int]:
    """(smallest, largest) reference offset the offsets head of a CHOSEN stream allows."""
    reader = rans.SegmentReader(blob)
    reader.pos = parse(blob).offsets[0]
    low, spec = reader.segment()
    return low, low + (0 if spec is None else spec.size - 1)


def planned(levels: np.ndarray, row_ids: np.ndarray, n_col: int, shapes: tuple[tuple[int, int, int, int], ...],
            reference: int, order: int) -> bytes:
    """The context stream of `levels` under a given structure, by ctx's own writer, so that the streams the
    damage tests start from do not depend on the structure search (tests below check what it picks). Column c
    is in column group c % n_col; chosen reference rows are picked as the encoder picks them."""
    coded = np.argsort(row_ids, kind="stable") if order == GROUPED else np.arange(row_ids.size)
    offsets = (ctx_search.choose_offsets(levels[coded], WINDOW) if reference == CHOSEN
               else ctx_model.fixed_offsets(row_ids.size, reference))
    plan = ctx_model.Plan(0.0, row_ids, np.arange(levels.shape[1]) % n_col, n_col, shapes, reference, offsets, order)
    return ctx._encode_plan(levels, plan)


def spread_halves(levels: np.ndarray) -> np.ndarray:
    """Row group 0 for the narrower half of the rows, 1 for the wider."""
    spread = np.square(levels.astype(np.int64)).sum(1)
    return (np.argsort(np.argsort(spread, kind="stable")) * 2 // len(levels)).astype(np.int64)


PLANS = {  # name: (levels, row ids, column groups, shapes, reference, order)
    "column groups": (column_spreads(64, 64, seed=0), None, 4, ((4, 1, 1, 0),), ABOVE, NATURAL),
    "level above": (random_walk(400, 3, seed=0), None, 2, ((1, 25, 1, 0),), ABOVE, NATURAL),  # some unused
    "copied runs": (copied_runs(64, 64, seed=0), None, 1, ((1, 3, 3, 1),), ABOVE, NATURAL),  # matches, differences
    "median": (spiked_rows(64, 32, seed=0), None, 1, ((1, 3, 1, 1),), MEDIAN, NATURAL),
    "chosen rows": (rows_copied_from_further_back(64, 64, seed=0), None, 8, ((1, 3, 1, 1),), CHOSEN, NATURAL),
    "grouped rows": (interleaved_walk(64, 32, seed=0), "spread halves", 1, ((1, 9, 1, 1), (1, 1, 1, 0)), ABOVE,
                     GROUPED),
    # K = 3 (not a power of two, as after a Lloyd step that empties a group), each group its own shape: no
    # reference; classes and matches; differences; the last two merge the 4 shared column groups.
    "three row groups": (rows_copied_from_further_back(48, 32, seed=7), "thirds", 4,
                         ((4, 1, 1, 0), (2, 3, 2, 0), (1, 5, 1, 1)), CHOSEN, GROUPED),
}


def _row_ids(levels: np.ndarray, kind: str | None) -> np.ndarray:
    if kind is None:
        return np.zeros(len(levels), dtype=np.int64)
    return spread_halves(levels) if kind == "spread halves" else np.arange(len(levels)) % 3


# Context streams that between them use every part of the layout (test_the_fixtures_... checks it).
FIXTURES = {name: plan[0] for name, plan in PLANS.items()}
CODED = {name: planned(levels, _row_ids(levels, ids), *rest) for name, (levels, ids, *rest) in PLANS.items()}


def decode(blob: bytes, levels: np.ndarray) -> bytes:
    return codecs.decode("ctx", blob, levels.size, 1, levels.shape[1])


# --------------------------------------------------------------------------- round trips

ROUND_TRIPS = {
    "two rows": (int6_levels(2, 50), 1, 50),
    "17 x 3": (int6_levels(17, 3, seed=1), 1, 3),
    "3 x 200": (int6_levels(3, 200, seed=2), 1, 200),
    "300 x 64 int6": (int6_levels(300, 64, seed=3), 1, 64),
    "one column": (random_walk(40, 1, seed=1), 1, 1),
    "one value": (np.full((20, 10), 5, dtype=np.int8), 1, 10),
    "whole int8 range": (np.arange(-128, 128, dtype=np.int8).reshape(16, 16), 1, 16),
    "empty": (np.zeros((0, 8), dtype=np.int8), 1, 8),
}
NOT_MATRICES = {
    "fp16 values": (np.linspace(-3, 3, 101).astype(np.float16), 2, 0),
    "fp16 rows": (np.linspace(-3, 3, 96).astype(np.float16).reshape(12, 8), 2, 8),
    "levels without rows": (int6_levels(30, 30, seed=4), 1, 0),
}

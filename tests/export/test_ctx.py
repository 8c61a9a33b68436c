"""The ctx codec: exact round trips, contexts that pay where levels have structure, clean errors on damage."""

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.errors import ArtifactError
from pgolf.export.coding import ans, codecs, ctx, ctx_model, ctx_search, rans

from .conftest import damaged
from .test_codecs import int6_levels


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


_PLANS = {  # name: (levels, row ids, column groups, shapes, reference, order)
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
FIXTURES = {name: plan[0] for name, plan in _PLANS.items()}
_CODED = {name: planned(levels, _row_ids(levels, ids), *rest) for name, (levels, ids, *rest) in _PLANS.items()}


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


@pytest.mark.parametrize("case", list(ROUND_TRIPS) + list(NOT_MATRICES))
def test_round_trips_exactly_and_is_never_larger_than_rans(case):
    values, itemsize, row_len = {**ROUND_TRIPS, **NOT_MATRICES}[case]
    raw = values.tobytes()
    blob = codecs.encode("ctx", raw, -1, itemsize, row_len)
    assert codecs.decode("ctx", blob, len(raw), itemsize, row_len) == raw
    assert len(blob) <= len(codecs.encode("rans", raw, -1, itemsize, row_len))


@pytest.mark.parametrize("case", ["one value", "empty"] + list(NOT_MATRICES))
def test_a_stream_that_is_not_a_matrix_of_levels_is_the_rans_stream(case):
    values, itemsize, row_len = {**ROUND_TRIPS, **NOT_MATRICES}[case]
    blob = codecs.encode("ctx", values, -1, itemsize, row_len)
    assert blob == codecs.encode("rans", values, -1, itemsize, row_len)


def test_the_fixtures_are_context_streams_of_the_structures_they_name():
    for name, (levels, _, n_col, shapes, reference, order) in _PLANS.items():
        header = parse(_CODED[name])  # parse asserts the mark and the value ranges
        assert (header.n_col, header.shapes, header.reference, header.order) == (n_col, shapes, reference, order)
        assert (header.row_ids is not None, header.col_ids is not None) == (len(shapes) > 1, n_col > 1)
        assert (header.offsets is not None) == (reference == CHOSEN)
        assert decode(_CODED[name], levels) == levels.tobytes()
    assert any(_CODED["level above"][start] == 0 for start, _ in parse(_CODED["level above"]).contexts)  # unused
    assert offsets_head(_CODED["chosen rows"])[1] > 1  # rows further back than the row above
    assert offsets_head(_CODED["three row groups"])[1] > 1


# --------------------------------------------------------------------------- compression


def test_columns_of_different_spreads_code_smaller_than_rans():
    blob, rans_blob = ctx_and_rans(column_spreads(256, 256, seed=1))
    assert parse(blob).n_col > 1  # column groups
    assert len(blob) < 0.97 * len(rans_blob)  # measured 6.6..6.8% smaller on seeds 0..5


def test_drifting_rows_get_row_groups_and_code_smaller_than_rans():
    levels = drifting_rows(512, 128, seed=1)
    blob, rans_blob = ctx_and_rans(levels)  # decodes to the input
    header = parse(blob)
    assert header.k > 1 and any(map(reads_reference, header.shapes))  # seeds 0..5: chosen reference rows, natural
    assert len(blob) < 0.85 * len(rans_blob)  # measured 20.4..22.3% smaller on seeds 0..5


@pytest.mark.parametrize(("make", "rows", "cols", "reference", "most"), [
    (random_walk, 256, 16, ABOVE, 0.45),  # measured 65.2..68.9% smaller on seeds 0..5
    (copied_runs, 128, 64, ABOVE, 0.8),  # measured 28.0..33.2% smaller on seeds 0..5
    (spiked_rows, 64, 32, MEDIAN, 0.5),  # measured 59.9..64.2% smaller on seeds 0..5 (seeds 1, 2: CHOSEN)
    (rows_copied_from_further_back, 64, 64, CHOSEN, 0.35),  # measured 70.4..72.3% smaller on seeds 0..5
])
def test_levels_a_reference_row_predicts_code_smaller_than_rans(make, rows, cols, reference, most):
    blob, rans_blob = ctx_and_rans(make(rows, cols, seed=5))
    header = parse(blob)
    assert header.reference == reference and any(map(reads_reference, header.shapes))
    assert len(blob) < most * len(rans_blob)


def test_a_random_walk_is_coded_as_differences_from_the_row_above():
    header = parse(ctx_and_rans(random_walk(256, 16, seed=5))[0])
    assert header.reference == ABOVE and all(d == 1 for *_, d in header.shapes)  # seeds 0..5: every group


def test_rows_the_row_above_predicts_once_grouped_are_grouped_and_code_smaller_than_rans():
    blob, rans_blob = ctx_and_rans(interleaved_walk(64, 32, seed=5))
    header = parse(blob)
    assert header.k > 1 and header.order == GROUPED and any(map(reads_reference, header.shapes))
    assert len(blob) < 0.92 * len(rans_blob)  # measured 14.2..16.2% smaller on seeds 0..5


@pytest.mark.parametrize("seed", range(4))
def test_iid_rows_cost_no_more_than_rans(seed):
    blob, rans_blob = ctx_and_rans(int6_levels(300, 64, seed=seed))
    assert len(blob) <= len(rans_blob)  # measured: the rans stream itself on seeds 0..3


def test_bytes_are_deterministic():
    levels = drifting_rows(128, 64, seed=0)  # the search's paths with classes
    blob = codecs.encode("ctx", levels, -1, 1, levels.shape[1])
    assert blob[0] == CONTEXT_MARK and codecs.encode("ctx", levels.copy(), -1, 1, levels.shape[1]) == blob


@st.composite
def small_matrices(draw) -> np.ndarray:
    rows, cols = draw(st.integers(2, 40)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["laplace", "uniform", "int8", "columns", "walk", "few values", "copies"]))
    if kind == "laplace":
        w = rng.laplace(0, draw(st.floats(0.05, 40.0)), (rows, cols))
    elif kind == "uniform":
        w = rng.integers(-3, 4, (rows, cols))
    elif kind == "int8":
        w = rng.integers(-128, 128, (rows, cols))
    elif kind == "columns":
        w = rng.laplace(0, 1, (rows, cols)) * rng.choice([0.2, 1.0, 8.0], cols)
    elif kind == "walk":
        w = np.cumsum(rng.integers(-2, 3, (rows, cols)), axis=0)
    elif kind == "copies":  # rows that repeat a few earlier rows, with noise
        bases = rng.integers(-8, 9, (draw(st.integers(1, 6)), cols))
        w = bases[rng.integers(0, len(bases), rows)]
        w = np.where(rng.random((rows, cols)) < 0.1, rng.integers(-8, 9, (rows, cols)), w)
    else:
        w = rng.choice(draw(st.lists(st.integers(-128, 127), min_size=1, max_size=3)), (rows, cols))
    return np.clip(np.round(w), -128, 127).astype(np.int8)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=small_matrices())
def test_random_matrices_round_trip_and_cost_no_more_than_rans(levels):
    blob, rans_blob = ctx_and_rans(levels)
    assert rans_blob[0] != CONTEXT_MARK  # so the decoder can tell the two apart
    assert blob == rans_blob or (blob[0] == CONTEXT_MARK and len(blob) < len(rans_blob))
    if blob[0] == CONTEXT_MARK:
        parse(blob)  # the structure is one the decoder allows


# --------------------------------------------------------------------------- bad input


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(sorted(_CODED)), data=st.data())
def test_random_damage_to_a_context_stream_gives_only_clean_errors(case, data):
    """numba does not bounds-check: every byte of a damaged stream must be validated before it indexes."""
    levels = FIXTURES[case]
    try:
        out = decode(damaged(_CODED[case], data), levels)
    except ArtifactError:
        return
    assert len(out) == levels.size


@pytest.mark.parametrize("case", sorted(_CODED))
def test_every_single_byte_flip_in_the_head_is_a_clean_error_or_a_whole_matrix(case):
    levels, blob = FIXTURES[case], _CODED[case]
    for pos in range(parse(blob).words_at + 16):  # the head and the flushed coder states
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(blob)
            damaged[pos] ^= flip
            try:
                out = decode(bytes(damaged), levels)
            except ArtifactError:
                continue
            assert len(out) == levels.size


@pytest.mark.parametrize("first", [1, 2, 0x80, 0xFF])
def test_a_context_stream_without_its_mark_is_read_as_rans_and_is_an_artifact_error(first):
    blob, levels = _CODED["column groups"], FIXTURES["column groups"]
    with pytest.raises(ArtifactError, match="corrupt rans stream"):
        decode(bytes([first]) + blob[1:], levels)


@pytest.mark.parametrize(("itemsize", "row_len"), [(2, 0), (2, 64), (1, 0)])
def test_a_context_stream_for_a_stream_that_is_not_a_matrix_is_read_as_rans_and_is_an_artifact_error(itemsize,
                                                                                                      row_len):
    with pytest.raises(ArtifactError, match="corrupt rans stream"):
        codecs.decode("ctx", _CODED["column groups"], 4096, itemsize, row_len)


def test_a_context_stream_of_part_rows_is_an_artifact_error():
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(4095 bytes are not a whole number of 64-byte rows"):
        codecs.decode("ctx", _CODED["column groups"], 4095, 1, 64)


def test_rewriting_the_structure_as_it_was_still_decodes():
    """The control for the tests below: with_structure changes only what it is given."""
    for case, blob in _CODED.items():
        assert with_structure(blob) == blob
        assert decode(blob, FIXTURES[case]) == FIXTURES[case].tobytes()


@pytest.mark.parametrize(("k", "n_col"), [
    (0, 4),  # no row groups
    (17, 4),  # more than 16
    (32, 4),
    (1, 3),  # not a column-group count
    (1, 16),
    (1, 0),
])
def test_group_counts_outside_the_allowed_ones_are_artifact_errors(k, n_col):
    levels = FIXTURES["column groups"]  # 64 x 64: every allowed count fits
    with pytest.raises(ArtifactError, match=f"corrupt ctx stream \\({k} row groups, {n_col} column groups for 64 x "):
        decode(with_structure(_CODED["column groups"], k=k, n_col=n_col, shapes=((1, 1, 1, 0),) * max(k, 1)), levels)


@pytest.mark.parametrize("k", [3, 5, 7, 16])
def test_any_row_group_count_up_to_16_is_a_structure_the_decoder_reads(k):
    """K need not be a power of two (Lloyd steps drop empty groups): the decoder reads on, to the next part."""
    levels = FIXTURES["column groups"]
    damaged = with_structure(_CODED["column groups"], k=k, shapes=((1, 1, 1, 0),) * k)
    with pytest.raises(ArtifactError) as error:
        decode(damaged, levels)  # the column ids' head now stands where the row ids' should
    assert "row groups" not in str(error.value)


@pytest.mark.parametrize("shape", [
    (8, 1, 1, 0),  # more column groups than the shared 4
    (3, 1, 1, 0),  # not a column-group count
    (0, 1, 1, 0),
    (4, 0, 1, 0),  # not a reference-class count
    (4, 2, 1, 0),
    (4, 7, 1, 0),
    (4, 27, 1, 0),
    (4, 1, 0, 0),  # not a match-class count
    (4, 1, 4, 0),
    (4, 1, 6, 0),
    (4, 1, 1, 2),  # not a difference flag
    (1, 3, 1, 0x80),
])
def test_a_row_group_shape_outside_the_allowed_ones_is_an_artifact_error(shape):
    levels, blob = FIXTURES["three row groups"], _CODED["three row groups"]  # 4 shared column groups
    shapes = list(parse(blob).shapes)
    for group in (0, 2):
        shapes[group] = shape
        message = (f"corrupt ctx stream \\(row group of {shape[0]} column groups, {shape[1]} x {shape[2]} classes, "
                   f"difference flag {shape[3]}\\)")
        with pytest.raises(ArtifactError, match=message):
            decode(with_structure(blob, shapes=tuple(shapes)), levels)


def test_more_contexts_than_the_cap_is_an_artifact_error():
    levels, blob = FIXTURES["three row groups"], _CODED["three row groups"]  # 3 row groups, 4 column groups
    over = ((4, 25, 5, 0), (4, 25, 5, 1), (1, 25, 1, 0))  # 1,025 contexts
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(1025 contexts, over 1024\\)"):
        decode(with_structure(blob, shapes=over), levels)
    at_cap = ((4, 25, 5, 0), (4, 25, 5, 1), (4, 3, 2, 0))  # 1,024: allowed; the heads that follow do not fit
    with pytest.raises(ArtifactError) as error:
        decode(with_structure(blob, shapes=at_cap), levels)
    assert "contexts, over" not in str(error.value)


def test_a_structure_varint_past_64_bits_is_an_artifact_error():
    with pytest.raises(ArtifactError, match="corrupt rans stream \\(truncated histogram\\)"):
        decode(with_structure(_CODED["column groups"], k=2**70), FIXTURES["column groups"])


def test_more_groups_than_rows_or_columns_is_an_artifact_error():
    rows = column_spreads(8, 256, seed=0)
    blob, _ = ctx_and_rans(rows)
    assert (parse(blob).k, parse(blob).n_col) == (1, 2)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(9 row groups, .* for 8 x 256 levels"):
        decode(with_structure(blob, k=9, shapes=((1, 1, 1, 0),) * 9), rows)
    with pytest.raises(ArtifactError) as error:  # 8 row groups for 8 rows: allowed, fails further on
        decode(with_structure(blob, k=8, shapes=((1, 1, 1, 0),) * 8), rows)
    assert "row groups" not in str(error.value)
    columns = FIXTURES["level above"]  # 400 x 3
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(1 row groups, 4 column groups for 400 x 3 "):
        decode(with_structure(_CODED["level above"], n_col=4), columns)


@pytest.mark.parametrize("value", [3, 0x80, 0xFF])
@pytest.mark.parametrize("byte", ["reference", "order"])
def test_a_bad_reference_or_order_byte_is_an_artifact_error(byte, value):
    levels, blob = FIXTURES["grouped rows"], _CODED["grouped rows"]
    damaged = with_structure(blob, **{byte: value})
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(no reference row or row order\\)"):
        decode(damaged, levels)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(no reference row or row order\\)"):
        decode(blob[: parse(blob).reference_at + (byte == "order")], levels)  # the stream ends before it


def test_an_empty_stream_is_an_artifact_error():
    with pytest.raises(ArtifactError, match="corrupt rans stream"):
        codecs.decode("ctx", b"", 4096, 1, 64)


@pytest.mark.parametrize("case", sorted(_CODED))
def test_a_truncated_stream_or_trailing_words_are_artifact_errors(case):
    levels, blob = FIXTURES[case], _CODED[case]
    words_at = parse(blob).words_at
    for end in (1, words_at // 2, words_at, words_at + 16, len(blob) - 4, len(blob) - 1):
        with pytest.raises(ArtifactError):
            decode(blob[:end], levels)
    with pytest.raises(ArtifactError, match="coder did not end where the encoder began"):
        decode(blob + b"\x00\x00\x00\x00", levels)
    with pytest.raises(ArtifactError, match="payload bytes do not hold the coder states"):
        decode(blob + b"\x00", levels)


def test_row_or_column_ids_beyond_their_groups_are_artifact_errors():
    levels, blob = FIXTURES["three row groups"], _CODED["three row groups"]
    header = parse(blob)
    for span, what, groups in ((header.row_ids, "row", header.k), (header.col_ids, "column", header.n_col)):
        assert groups > 1
        for low, n_ids in ((0, groups + 1), (1, groups), (-1, groups + 1)):  # ids 0..K, 1..K, -1..K-1
            message = f"corrupt ctx stream \\({what} ids are not a histogram of {groups} groups"
            with pytest.raises(ArtifactError, match=message):
                decode(splice(blob, span, head_of(low, [5] * n_ids)), levels)
        with pytest.raises(ArtifactError, match=f"corrupt ctx stream \\({what} ids are not a histogram"):
            decode(splice(blob, span, b"\x00\x00"), levels)  # a stored segment


@pytest.mark.parametrize("case", ["chosen rows", "three row groups"])
def test_reference_offsets_outside_the_window_are_artifact_errors(case):
    levels, blob = FIXTURES[case], _CODED[case]
    span = parse(blob).offsets
    message = f"corrupt ctx stream \\(reference offsets are not a histogram of 0..{WINDOW}\\)"
    for bad in (head_of(-1, [1, 1, 1]), head_of(WINDOW - 1, [1, 1, 1]), head_of(WINDOW + 1, [1]), b"\x00\x00"):
        with pytest.raises(ArtifactError, match=message):
            decode(splice(blob, span, bad), levels)
    for good in (head_of(0, [1] * (WINDOW + 1)), head_of(WINDOW, [1])):  # fail, if at all, further on
        try:
            decode(splice(blob, span, good), levels)
        except ArtifactError as error:
            assert "reference offsets" not in str(error)


@pytest.mark.parametrize(("case", "first_reader"), [("chosen rows", 0), ("three row groups", 16)])
def test_a_reference_row_before_the_first_row_is_an_artifact_error(case, first_reader):
    """The offsets head made one value: every stored offset is that value. Offsets are stored only for the rows
    whose group reads its reference: in "three row groups" (grouped order) the 16 rows of group 0 (no
    reference) come first, so the first stored offset is coded row 16's, and 16 rows back is still a row."""
    levels, blob = FIXTURES[case], _CODED[case]
    span = parse(blob).offsets
    for offset in (first_reader + 1, WINDOW):
        with pytest.raises(ArtifactError, match="corrupt ctx stream \\(a reference row before the first row\\)"):
            decode(splice(blob, span, head_of(offset, [1])), levels)
    for offset in {0, first_reader}:  # allowed: the levels, read from where the offsets were, fail if anything
        try:
            decode(splice(blob, span, head_of(offset, [1])), levels)
        except ArtifactError as error:
            assert "reference row" not in str(error)


def test_a_level_in_a_context_marked_unused_is_an_artifact_error():
    """A used context's head replaced by 0: decoding runs as before until the first level in it."""
    tested = 0
    for case in sorted(_CODED):
        levels, blob = FIXTURES[case], _CODED[case]
        used = [span for span in parse(blob).contexts if blob[span[0]] != 0]
        if len(used) == 1:  # none left: test_context_heads_that_are_all_unused_or_stored_are_artifact_errors
            continue
        tested += 1
        for span in (used[0], used[-1]):
            with pytest.raises(ArtifactError, match="corrupt ctx stream \\(a level falls in a context without"):
                decode(splice(blob, span, b"\x00"), levels)
    assert tested >= 4


def test_context_heads_that_are_all_unused_or_stored_are_artifact_errors():
    levels, blob = FIXTURES["grouped rows"], _CODED["grouped rows"]
    contexts = parse(blob).contexts
    heads = slice(contexts[0][0], contexts[-1][1])
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(no context has a table\\)"):
        decode(blob[: heads.start] + bytes(len(contexts)) + blob[heads.stop :], levels)
    used = next(span for span in contexts if blob[span[0]] != 0)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(stored segment in a context table\\)"):
        decode(splice(blob, used, b"\x80\x00\x00"), levels)  # tag 0 in a 2-byte varint: a stored segment


# --------------------------------------------------------------------------- hand-built streams

TABLE = rans.fit_model(-1, np.array([1, 2, 3]))
"""One histogram of the symbols -1, 0, 1; its head is head_of(-1, [1, 2, 3])."""


def hand_built(structure: bytes, heads: bytes, symbols: np.ndarray | None) -> bytes:
    """A context stream of one row group and one column group: CONTEXT_MARK, K = L = 1, `structure` (reference
    and order bytes, the group's shape), `heads` (offsets and contexts), then `symbols` coded under TABLE (None:
    no words but the coder states, as when every head is of one value)."""
    encoder = ans.Encoder(0 if symbols is None else symbols.size)
    if symbols is not None:
        encoder.push(symbols.reshape(-1), TABLE.low, ans.frequencies(TABLE.weights))
    return bytes([CONTEXT_MARK, 1, 1]) + structure + heads + encoder.finish()


def test_a_hand_built_context_stream_decodes_and_an_unused_class_is_an_error():
    """The row above, 3 reference classes, 1 match class: class -1 unused, classes 0 and +1 one table. Row 0
    (above: 0) decodes; row 1 sits under row 0's levels, and a -1 there sends it to the unused class."""
    table = head_of(-1, [1, 2, 3])
    structure, heads = bytes([ABOVE, NATURAL, 1, 3, 1, 0]), b"\x00" + table + table
    good = np.array([[0, 1], [1, 0]], dtype=np.int8)
    assert decode(hand_built(structure, heads, good), good) == good.tobytes()
    bad = np.array([[-1, 1], [1, 0]], dtype=np.int8)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(a level falls in a context without a table\\)"):
        decode(hand_built(structure, heads, bad), bad)


def test_a_hand_built_difference_stream_adds_the_row_above():
    """Difference flag 1: each symbol is the level minus the level above (0 above the first row)."""
    symbols = np.array([[0, 1, -1], [1, 0, 0], [1, 1, 1]], dtype=np.int8)
    blob = hand_built(bytes([ABOVE, NATURAL, 1, 1, 1, 1]), head_of(-1, [1, 2, 3]), symbols)
    assert decode(blob, symbols) == np.cumsum(symbols, axis=0, dtype=np.int8).tobytes()
    assert decode(blob, symbols) != decode(with_structure(blob, shapes=((1, 1, 1, 0),)), symbols)


@pytest.mark.parametrize("value", [127, -128, 100])
def test_differences_add_back_modulo_256(value):
    """One context of one value: every symbol is `value`, so row 0 holds it and row 1 twice it, modulo 256 as
    int8 (the encoder wraps differences of int8 levels the same way, so every difference fits)."""
    blob = hand_built(bytes([ABOVE, NATURAL, 1, 1, 1, 1]), head_of(value, [1]), None)
    one_row = np.zeros((1, 2), dtype=np.int8)
    assert decode(blob, one_row) == bytes([value & 0xFF] * 2)
    assert decode(blob, np.zeros((2, 2), dtype=np.int8)) == bytes([value & 0xFF] * 2 + [2 * value & 0xFF] * 2)


def test_levels_whose_differences_wrap_round_trip():
    """int8 levels spanning more than 127 (differences up to +-254) round-trip through difference coding."""
    rng = np.random.default_rng(3)
    base = rng.integers(-127, 128, 64)
    rows = np.array([np.where(rng.random(64) < 0.9, base, rng.integers(-127, 128, 64)) for _ in range(48)])
    levels = rows.astype(np.int8)
    blob = codecs.encode("ctx", levels, -1, 1, 64)
    assert blob[0] == CONTEXT_MARK and any(shape[3] for shape in parse(blob).shapes)
    assert codecs.decode("ctx", blob, levels.size, 1, 64) == levels.tobytes()


@pytest.mark.parametrize("shape", [(1, 3, 1, 0), (1, 1, 2, 0), (1, 1, 1, 1)])
def test_a_hand_built_chosen_reference_stream_stores_offsets_only_when_a_group_reads_its_reference(shape):
    """CHOSEN with no classes and no differences: no offsets head, the context head follows the structure. With
    reference classes, match classes or differences, an offsets head (one value: none in the words); offset 0,
    a row of zeros, puts every level in the middle reference class and adds nothing to a difference."""
    levels = np.array([[0, 1, -1], [1, 0, 0]], dtype=np.int8)
    table = head_of(-1, [1, 2, 3])
    plain = hand_built(bytes([CHOSEN, NATURAL, 1, 1, 1, 0]), table, levels)
    assert parse(plain).offsets is None
    assert decode(plain, levels) == levels.tobytes()
    contexts = {3: b"\x00" + table + b"\x00", 2: table + table, 1: table}[shape[1] * shape[2]]
    structure = bytes([CHOSEN, NATURAL, *shape])
    reading = hand_built(structure, head_of(0, [1]) + contexts, levels)
    assert offsets_head(reading) == (0, 0)
    assert decode(reading, levels) == levels.tobytes()
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(a reference row before the first row\\)"):
        decode(hand_built(structure, head_of(1, [1]) + contexts, levels), levels)  # row 0, 1 row back

"""The ctx codec: exact round trips, contexts that pay where levels have structure, clean errors on damage."""

import math
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.errors import ArtifactError
from pgolf.export import ans, codecs, rans

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


def ctx_and_rans(levels: np.ndarray) -> tuple[bytes, bytes]:
    """(ctx, rans) streams of a matrix of levels; asserts the ctx stream decodes to it."""
    row_len = levels.shape[1]
    blob = codecs.encode("ctx", levels, -1, 1, row_len)
    assert codecs.decode("ctx", blob, levels.size, 1, row_len) == levels.tobytes()
    return blob, codecs.encode("rans", levels, -1, 1, row_len)


CONTEXT_MARK = 0
"""First byte of a context stream; any other stream is the rans stream itself (a rans stream of a matrix starts
with its bucket count, >= 1)."""
STRUCTURE = ("row groups", "column groups", "above classes", "match classes")
"""The varints after the mark, in order; their product is the number of contexts."""


class Header(NamedTuple):
    """Where the parts of a context stream's head lie: (start, end) byte spans."""

    shape: tuple[int, ...]
    """One value per STRUCTURE entry."""
    order_at: int
    row_ids: tuple[int, int] | None
    col_ids: tuple[int, int] | None
    contexts: list[tuple[int, int]]
    """One span per context in (row group, column group, class) order; a 1-byte span of 0 for an unused one."""
    words_at: int


def parse(blob: bytes) -> Header:
    """The head of a context stream (CONTEXT_MARK; STRUCTURE varints; order byte; id heads; context heads)."""
    assert blob[0] == CONTEXT_MARK
    reader = rans.SegmentReader(blob)
    reader.pos = 1
    shape = tuple(reader.varint() for _ in STRUCTURE)
    order_at = reader.pos
    reader.pos += 1
    ids = []
    for groups in shape[:2]:
        start = reader.pos
        if groups > 1:
            reader.segment()
        ids.append((start, reader.pos) if groups > 1 else None)
    contexts = []
    for _ in range(math.prod(shape)):
        start = reader.pos
        if blob[start] == 0:
            reader.pos += 1
        else:
            reader.segment()
        contexts.append((start, reader.pos))
    return Header(shape, order_at, ids[0], ids[1], contexts, reader.pos)


def with_structure(blob: bytes, shape: tuple[int, ...]) -> bytes:
    """`blob` with its STRUCTURE varints replaced (the rest as it was)."""
    head = bytearray([CONTEXT_MARK])
    for value in shape:
        rans.put_varint(head, value)
    return bytes(head) + blob[parse(blob).order_at :]


def splice(blob: bytes, span: tuple[int, int], replacement: bytes) -> bytes:
    return blob[: span[0]] + replacement + blob[span[1] :]


def head_of(low: int, counts: list[int]) -> bytes:
    head = bytearray()
    rans.put_model(head, rans.fit_model(low, np.array(counts)))
    return bytes(head)


# Context streams that between them use every part of the layout (test_the_fixtures_... checks it).
FIXTURES = {
    "column groups": column_spreads(64, 64, seed=0),  # column ids only
    "grouped rows": drifting_rows(128, 64, seed=0),  # row and column ids, rows grouped, classes of the level above
    "level above": random_walk(400, 3, seed=0),  # many classes, some contexts unused
    "copied runs": copied_runs(64, 64, seed=0),  # match classes
}
_CODED = {name: ctx_and_rans(levels)[0] for name, levels in FIXTURES.items()}


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
    headers = {name: parse(blob) for name, blob in _CODED.items()}  # parse asserts the context mark
    assert headers["column groups"].shape == (1, 4, 1, 1)
    grouped = headers["grouped rows"]
    assert grouped.shape[0] > 1 and grouped.shape[1] > 1 and grouped.shape[2] > 1
    assert _CODED["grouped rows"][grouped.order_at] == 1  # rows coded grouped by row group
    assert headers["level above"].shape[2] >= 9
    assert any(_CODED["level above"][start] == 0 for start, _ in headers["level above"].contexts)  # unused
    assert headers["copied runs"].shape[3] > 1


# --------------------------------------------------------------------------- compression


def test_columns_of_different_spreads_code_smaller_than_rans():
    blob, rans_blob = ctx_and_rans(column_spreads(256, 256, seed=1))
    assert parse(blob).shape[1] > 1  # column groups
    assert len(blob) < 0.97 * len(rans_blob)  # measured 6.6..6.8% smaller on seeds 0..5


def test_drifting_rows_are_grouped_and_code_smaller_than_rans():
    levels = drifting_rows(512, 128, seed=1)
    blob, rans_blob = ctx_and_rans(levels)  # decodes to the input
    assert parse(blob).shape[0] > 1 and blob[parse(blob).order_at] == 1  # rows coded grouped by row group
    assert len(blob) < 0.9 * len(rans_blob)  # measured 15.7..17.6% smaller on seeds 0..5


@pytest.mark.parametrize(("make", "rows", "cols", "most"), [
    (random_walk, 256, 16, 0.7),  # measured 51..57% smaller on seeds 0..5
    (copied_runs, 128, 64, 0.85),  # measured 25..31% smaller on seeds 0..5
])
def test_levels_the_level_above_predicts_code_smaller_than_rans(make, rows, cols, most):
    blob, rans_blob = ctx_and_rans(make(rows, cols, seed=5))
    assert parse(blob).shape[2] > 1  # classes of the level above
    assert len(blob) < most * len(rans_blob)


@pytest.mark.parametrize("seed", range(4))
def test_iid_rows_cost_no_more_than_rans(seed):
    blob, rans_blob = ctx_and_rans(int6_levels(300, 64, seed=seed))
    assert len(blob) <= len(rans_blob)  # measured: the rans stream itself on seeds 0..3


def test_bytes_are_deterministic():
    levels = FIXTURES["grouped rows"]  # row groups by the principal key: the search's most involved path
    assert codecs.encode("ctx", levels.copy(), -1, 1, levels.shape[1]) == _CODED["grouped rows"]


@st.composite
def small_matrices(draw) -> np.ndarray:
    rows, cols = draw(st.integers(2, 40)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["laplace", "uniform", "int8", "columns", "walk", "few values"]))
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
    else:
        w = rng.choice(draw(st.lists(st.integers(-128, 127), min_size=1, max_size=3)), (rows, cols))
    return np.clip(np.round(w), -128, 127).astype(np.int8)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=small_matrices())
def test_random_matrices_round_trip_and_cost_no_more_than_rans(levels):
    blob, rans_blob = ctx_and_rans(levels)
    assert rans_blob[0] != CONTEXT_MARK  # so the decoder can tell the two apart
    assert blob == rans_blob or (blob[0] == CONTEXT_MARK and len(blob) < len(rans_blob))


# --------------------------------------------------------------------------- bad input


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(sorted(_CODED)), data=st.data())
def test_random_damage_to_a_context_stream_gives_only_clean_errors(case, data):
    """numba does not bounds-check: every byte of a damaged stream must be validated before it indexes."""
    levels, damaged = FIXTURES[case], bytearray(_CODED[case])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(damaged) - 1, 0)))
        if kind == "flip" and damaged:
            damaged[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del damaged[pos : pos + data.draw(st.integers(1, 8))]
        else:
            damaged[pos:pos] = bytes(data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=8)))
    try:
        out = decode(bytes(damaged), levels)
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
        assert decode(with_structure(blob, parse(blob).shape), FIXTURES[case]) == FIXTURES[case].tobytes()


@pytest.mark.parametrize("shape", [
    (3, 4, 1, 1),  # K not a row-group count
    (32, 4, 1, 1),
    (0, 4, 1, 1),
    (1, 3, 1, 1),  # L not a column-group count
    (1, 16, 1, 1),
    (1, 0, 1, 1),
    (1, 4, 2, 1),  # an even number of above classes
    (1, 4, 0, 1),
    (1, 4, 27, 1),  # more above classes than 25
    (1, 4, 7, 1),  # odd, at most 25, not a class count
    (1, 4, 1, 0),  # not a match-class count
    (1, 4, 1, 4),
    (1, 4, 1, 6),
    (16, 8, 9, 1),  # 1,152 contexts, over the cap of 1,024
    (8, 8, 9, 2),  # 1,152 again
])
def test_a_structure_outside_the_allowed_ones_is_an_artifact_error(shape):
    levels = FIXTURES["column groups"]  # 64 x 64: every group count fits
    with pytest.raises(ArtifactError, match=f"corrupt ctx stream \\({shape[0]} row groups, {shape[1]} column groups"):
        decode(with_structure(_CODED["column groups"], shape), levels)


def test_a_structure_varint_past_64_bits_is_an_artifact_error():
    with pytest.raises(ArtifactError, match="corrupt rans stream \\(truncated histogram\\)"):
        decode(with_structure(_CODED["column groups"], (2**70, 4, 1, 1)), FIXTURES["column groups"])


def test_more_groups_than_rows_or_columns_is_an_artifact_error():
    rows = column_spreads(8, 256, seed=0)
    blob, _ = ctx_and_rans(rows)
    assert parse(blob).shape == (1, 2, 1, 1)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(16 row groups, .* for 8 x 256 levels"):
        decode(with_structure(blob, (16, 2, 1, 1)), rows)
    columns = FIXTURES["level above"]  # 400 x 3
    k, _, a, matches = parse(_CODED["level above"]).shape
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(1 row groups, 4 column groups, .* for 400 x 3 "):
        decode(with_structure(_CODED["level above"], (k, 4, a, matches)), columns)


@pytest.mark.parametrize("order", [2, 0x80, 0xFF])
def test_a_bad_order_byte_is_an_artifact_error(order):
    levels, blob = FIXTURES["grouped rows"], _CODED["grouped rows"]
    at = parse(blob).order_at
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(no row order\\)"):
        decode(blob[:at] + bytes([order]) + blob[at + 1 :], levels)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(no row order\\)"):
        decode(blob[:at], levels)  # the stream ends before it


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
    levels, blob = FIXTURES["grouped rows"], _CODED["grouped rows"]
    header = parse(blob)
    for span, what, groups in ((header.row_ids, "row", header.shape[0]), (header.col_ids, "column", header.shape[1])):
        assert groups > 1
        for low, n_ids in ((0, groups + 1), (1, groups), (-1, groups + 1)):  # ids 0..K, 1..K, -1..K-1
            message = f"corrupt ctx stream \\({what} ids are not a histogram of {groups} groups"
            with pytest.raises(ArtifactError, match=message):
                decode(splice(blob, span, head_of(low, [5] * n_ids)), levels)
        with pytest.raises(ArtifactError, match=f"corrupt ctx stream \\({what} ids are not a histogram"):
            decode(splice(blob, span, b"\x00\x00"), levels)  # a stored segment


def test_a_level_in_a_context_marked_unused_is_an_artifact_error():
    """A used context's head replaced by 0: decoding runs as before until the first level in it."""
    for case in sorted(_CODED):
        levels, blob = FIXTURES[case], _CODED[case]
        used = [span for span in parse(blob).contexts if blob[span[0]] != 0]
        assert len(used) > 1
        for span in (used[0], used[-1]):
            with pytest.raises(ArtifactError, match="corrupt ctx stream \\(a level falls in a context without"):
                decode(splice(blob, span, b"\x00"), levels)


def test_context_heads_that_are_all_unused_or_stored_are_artifact_errors():
    levels, blob = FIXTURES["level above"], _CODED["level above"]
    contexts = parse(blob).contexts
    heads = slice(contexts[0][0], contexts[-1][1])
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(no context has a table\\)"):
        decode(blob[: heads.start] + bytes(len(contexts)) + blob[heads.stop :], levels)
    used = next(span for span in contexts if blob[span[0]] != 0)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(stored segment in a context table\\)"):
        decode(splice(blob, used, b"\x80\x00\x00"), levels)  # tag 0 in a 2-byte varint: a stored segment


def test_a_hand_built_context_stream_decodes_and_an_unused_class_is_an_error():
    """K = L = 1, A = 3 classes of the level above, 1 match class: class -1 unused, classes 0 and +1 one table.
    Row 0 (above: 0) decodes; row 1 sits under row 0's levels, and a -1 there sends it to the unused class."""
    model = rans.fit_model(-1, np.array([1, 2, 3]))
    table = head_of(-1, [1, 2, 3])
    head = bytes([CONTEXT_MARK, 1, 1, 3, 1, 0, 0]) + table + table  # STRUCTURE, natural order, class -1 unused

    def stream(levels: np.ndarray) -> bytes:
        encoder = ans.Encoder(levels.size)
        encoder.push(levels.reshape(-1), model.low, ans.frequencies(model.weights))
        return head + encoder.finish()

    good = np.array([[0, 1], [1, 0]], dtype=np.int8)
    assert decode(stream(good), good) == good.tobytes()
    bad = np.array([[-1, 1], [1, 0]], dtype=np.int8)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(a level falls in a context without a table\\)"):
        decode(stream(bad), bad)

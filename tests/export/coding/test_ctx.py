"""The ctx codec's coder: exact round trips, clean errors on damage to every part of a context stream."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.errors import ArtifactError
from pgolf.export.coding import codecs

from ..conftest import damaged
from .conftest import (
    CODED,
    FIXTURES,
    NOT_MATRICES,
    ROUND_TRIPS,
    WINDOW,
    column_spreads,
    ctx_and_rans,
    decode,
    head_of,
    parse,
    splice,
    with_structure,
)

# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("case", list(ROUND_TRIPS) + list(NOT_MATRICES))
def test_round_trips_exactly_and_is_never_larger_than_rans(case):
    values, itemsize, row_len = {**ROUND_TRIPS, **NOT_MATRICES}[case]
    raw = values.tobytes()
    blob = codecs.encode("ctx", raw, -1, itemsize, row_len)
    assert codecs.decode("ctx", blob, len(raw), itemsize, row_len) == raw
    assert len(blob) <= len(codecs.encode("rans", raw, -1, itemsize, row_len))


# --------------------------------------------------------------------------- bad input


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(sorted(CODED)), data=st.data())
def test_random_damage_to_a_context_stream_gives_only_clean_errors(case, data):
    """numba does not bounds-check: every byte of a damaged stream must be validated before it indexes."""
    levels = FIXTURES[case]
    try:
        out = decode(damaged(CODED[case], data), levels)
    except ArtifactError:
        return
    assert len(out) == levels.size


@pytest.mark.parametrize("case", sorted(CODED))
def test_every_single_byte_flip_in_the_head_is_a_clean_error_or_a_whole_matrix(case):
    levels, blob = FIXTURES[case], CODED[case]
    for pos in range(parse(blob).words_at + 16):  # the head and the flushed coder states
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(blob)
            damaged[pos] ^= flip
            try:
                out = decode(bytes(damaged), levels)
            except ArtifactError:
                continue
            assert len(out) == levels.size


def test_a_context_stream_of_part_rows_is_an_artifact_error():
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(4095 bytes are not a whole number of 64-byte rows"):
        codecs.decode("ctx", CODED["column groups"], 4095, 1, 64)


def test_rewriting_the_structure_as_it_was_still_decodes():
    """The control for the tests below: with_structure changes only what it is given."""
    for case, blob in CODED.items():
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
        decode(with_structure(CODED["column groups"], k=k, n_col=n_col, shapes=((1, 1, 1, 0),) * max(k, 1)), levels)


@pytest.mark.parametrize("k", [3, 5, 7, 16])
def test_any_row_group_count_up_to_16_is_a_structure_the_decoder_reads(k):
    """K need not be a power of two (Lloyd steps drop empty groups): the decoder reads on, to the next part."""
    levels = FIXTURES["column groups"]
    damaged = with_structure(CODED["column groups"], k=k, shapes=((1, 1, 1, 0),) * k)
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
    levels, blob = FIXTURES["three row groups"], CODED["three row groups"]  # 4 shared column groups
    shapes = list(parse(blob).shapes)
    for group in (0, 2):
        shapes[group] = shape
        message = (f"corrupt ctx stream \\(row group of {shape[0]} column groups, {shape[1]} x {shape[2]} classes, "
                   f"difference flag {shape[3]}\\)")
        with pytest.raises(ArtifactError, match=message):
            decode(with_structure(blob, shapes=tuple(shapes)), levels)


def test_more_contexts_than_the_cap_is_an_artifact_error():
    levels, blob = FIXTURES["three row groups"], CODED["three row groups"]  # 3 row groups, 4 column groups
    over = ((4, 25, 5, 0), (4, 25, 5, 1), (1, 25, 1, 0))  # 1,025 contexts
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(1025 contexts, over 1024\\)"):
        decode(with_structure(blob, shapes=over), levels)
    at_cap = ((4, 25, 5, 0), (4, 25, 5, 1), (4, 3, 2, 0))  # 1,024: allowed; the heads that follow do not fit
    with pytest.raises(ArtifactError) as error:
        decode(with_structure(blob, shapes=at_cap), levels)
    assert "contexts, over" not in str(error.value)


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
        decode(with_structure(CODED["level above"], n_col=4), columns)


@pytest.mark.parametrize("value", [3, 0x80, 0xFF])
@pytest.mark.parametrize("byte", ["reference", "order"])
def test_a_bad_reference_or_order_byte_is_an_artifact_error(byte, value):
    levels, blob = FIXTURES["grouped rows"], CODED["grouped rows"]
    damaged = with_structure(blob, **{byte: value})
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(no reference row or row order\\)"):
        decode(damaged, levels)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(no reference row or row order\\)"):
        decode(blob[: parse(blob).reference_at + (byte == "order")], levels)  # the stream ends before it


@pytest.mark.parametrize("case", sorted(CODED))
def test_a_truncated_stream_or_trailing_words_are_artifact_errors(case):
    levels, blob = FIXTURES[case], CODED[case]
    words_at = parse(blob).words_at
    for end in (1, words_at // 2, words_at, words_at + 16, len(blob) - 4, len(blob) - 1):
        with pytest.raises(ArtifactError):
            decode(blob[:end], levels)
    with pytest.raises(ArtifactError, match="coder did not end where the encoder began"):
        decode(blob + b"\x00\x00\x00\x00", levels)
    with pytest.raises(ArtifactError, match="payload bytes do not hold the coder states"):
        decode(blob + b"\x00", levels)


def test_row_or_column_ids_beyond_their_groups_are_artifact_errors():
    levels, blob = FIXTURES["three row groups"], CODED["three row groups"]
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
    levels, blob = FIXTURES[case], CODED[case]
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
    levels, blob = FIXTURES[case], CODED[case]
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
    for case in sorted(CODED):
        levels, blob = FIXTURES[case], CODED[case]
        used = [span for span in parse(blob).contexts if blob[span[0]] != 0]
        if len(used) == 1:  # none left: test_context_heads_that_are_all_unused_or_stored_are_artifact_errors
            continue
        tested += 1
        for span in (used[0], used[-1]):
            with pytest.raises(ArtifactError, match="corrupt ctx stream \\(a level falls in a context without"):
                decode(splice(blob, span, b"\x00"), levels)
    assert tested >= 4


def test_context_heads_that_are_all_unused_or_stored_are_artifact_errors():
    levels, blob = FIXTURES["grouped rows"], CODED["grouped rows"]
    contexts = parse(blob).contexts
    heads = slice(contexts[0][0], contexts[-1][1])
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(no context has a table\\)"):
        decode(blob[: heads.start] + bytes(len(contexts)) + blob[heads.stop :], levels)
    used = next(span for span in contexts if blob[span[0]] != 0)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(stored segment in a context table\\)"):
        decode(splice(blob, used, b"\x80\x00\x00"), levels)  # tag 0 in a 2-byte varint: a stored segment

"""The rans codec: on the entropy bound, row buckets, compact heads, clean errors on damage; and a ctx stream that is
the rans stream (not a matrix, no context mark) is read as one."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.errors import ArtifactError
from pgolf.export.coding import codecs, rans

from ..conftest import damaged
from .conftest import CODED, FIXTURES, NOT_MATRICES, ROUND_TRIPS, STREAMS, decode, int6_levels, with_structure


def test_rans_is_within_half_a_percent_of_the_entropy_bound_and_beats_zstd_and_lzma():
    levels = int6_levels(512, 1024, seed=1)  # 0.5M int6 values
    bound_bytes = rans.entropy_bits(levels) / 8
    coded = len(codecs.encode("rans", levels, row_len=1024))
    assert coded <= 1.005 * bound_bytes
    assert coded < len(codecs.encode("zstd", levels, 22))
    assert coded < len(codecs.encode("lzma", levels, 9))


def test_rans_row_buckets_beat_one_histogram_on_mixed_rows():
    rng = np.random.default_rng(2)
    mixed = np.concatenate([int6_levels(64, 256, seed=3), int6_levels(64, 256, seed=4) // 6])[rng.permutation(128)]
    bucketed = len(codecs.encode("rans", mixed, row_len=256))
    assert bucketed < 0.97 * len(codecs.encode("rans", mixed))
    assert bucketed < rans.entropy_bits(mixed) / 8


def test_entropy_bits_of_a_known_histogram():
    symbols = np.array([0, 0, 1, 1, 2, 2, 3, 3], dtype=np.int8)
    assert rans.entropy_bits(symbols) == pytest.approx(16.0)
    assert rans.entropy_bits(np.zeros(10, dtype=np.int8)) == 0.0


def test_rans_bytes_are_deterministic():
    raw, itemsize, row_len = STREAMS["rows of two kinds"]
    assert codecs.encode("rans", raw, -1, itemsize, row_len) == codecs.encode("rans", raw, -1, itemsize, row_len)


def test_rans_stores_half_a_symmetric_histogram_and_all_of_a_skewed_one():
    levels = int6_levels(64, 256, seed=5).ravel()
    skewed = np.where(levels > 0, levels // 3, levels)  # positive side squeezed, alphabet still -31..31
    skewed[:2] = (31, 30)
    for symbols, symmetric in ((levels, True), (skewed, False)):
        model = rans.fit_model(*rans.histogram(symbols))
        assert bool(model.tag & 1) == symmetric
        assert model.bits <= rans.entropy_bits(symbols) + 8 * 48  # within a 48-byte head of the bound
        assert codecs.decode("rans", codecs.encode("rans", symbols), symbols.size) == symbols.tobytes()


@pytest.mark.parametrize("case", ["int6 rows", "rows of two kinds", "fp16 values"])
def test_rans_damaged_heads_are_artifact_errors(case):
    raw, itemsize, row_len = STREAMS[case]
    blob = codecs.encode("rans", raw, -1, itemsize, row_len)
    for pos in range(min(len(blob), 24)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(blob)
            damaged[pos] ^= flip
            try:
                out = codecs.decode("rans", bytes(damaged), len(raw), itemsize, row_len)
            except ArtifactError:
                continue
            assert len(out) == len(raw)  # a flip the coder cannot see still gives a whole tensor


RANS_STREAMS = {case: (raw, itemsize, row_len, codecs.encode("rans", raw, -1, itemsize, row_len))
          for case, (raw, itemsize, row_len) in STREAMS.items() if raw}



@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(sorted(RANS_STREAMS)), data=st.data())
def test_random_damage_to_a_rans_stream_gives_only_clean_errors(case, data):
    """numba does not bounds-check: every byte of a damaged stream must be validated before it indexes."""
    raw, itemsize, row_len, blob = RANS_STREAMS[case]
    try:
        out = codecs.decode("rans", damaged(blob, data), len(raw), itemsize, row_len)
    except ArtifactError:
        return
    assert len(out) == len(raw)


# --------------------------------------------------------------------------- ctx streams read as rans


@pytest.mark.parametrize("case", ["one value", "empty"] + list(NOT_MATRICES))
def test_a_stream_that_is_not_a_matrix_of_levels_is_the_rans_stream(case):
    values, itemsize, row_len = {**ROUND_TRIPS, **NOT_MATRICES}[case]
    blob = codecs.encode("ctx", values, -1, itemsize, row_len)
    assert blob == codecs.encode("rans", values, -1, itemsize, row_len)


@pytest.mark.parametrize("first", [1, 2, 0x80, 0xFF])
def test_a_context_stream_without_its_mark_is_read_as_rans_and_is_an_artifact_error(first):
    blob, levels = CODED["column groups"], FIXTURES["column groups"]
    with pytest.raises(ArtifactError, match="corrupt rans stream"):
        decode(bytes([first]) + blob[1:], levels)


@pytest.mark.parametrize(("itemsize", "row_len"), [(2, 0), (2, 64), (1, 0)])
def test_a_context_stream_for_a_stream_that_is_not_a_matrix_is_read_as_rans_and_is_an_artifact_error(itemsize,
                                                                                                      row_len):
    with pytest.raises(ArtifactError, match="corrupt rans stream"):
        codecs.decode("ctx", CODED["column groups"], 4096, itemsize, row_len)


def test_an_empty_stream_is_an_artifact_error():
    with pytest.raises(ArtifactError, match="corrupt rans stream"):
        codecs.decode("ctx", b"", 4096, 1, 64)


def test_a_structure_varint_past_64_bits_is_an_artifact_error():
    with pytest.raises(ArtifactError, match="corrupt rans stream \\(truncated histogram\\)"):
        decode(with_structure(CODED["column groups"], k=2**70), FIXTURES["column groups"])

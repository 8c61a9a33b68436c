"""Codecs: every codec round-trips, rans lands on the entropy bound, errors are one line."""

import sys

import numpy as np
import pytest

from pgolf.errors import ArtifactError, CodecError
from pgolf.export.coding import codecs, rans


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


@pytest.mark.parametrize("codec", codecs.CODECS)
@pytest.mark.parametrize("case", list(STREAMS))
def test_every_codec_round_trips(codec, case):
    raw, itemsize, row_len = STREAMS[case]
    blob = codecs.encode(codec, raw, 1 if codec == "lzma" else -1, itemsize, row_len)
    assert codecs.decode(codec, blob, len(raw), itemsize, row_len) == raw


def test_encode_takes_arrays_as_their_bytes():
    levels = int6_levels(4, 16)
    assert codecs.decode("rans", codecs.encode("rans", levels), levels.size) == levels.tobytes()


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


def test_unknown_codec_is_a_codec_error():
    with pytest.raises(CodecError, match="unknown codec 'snappy'"):
        codecs.encode("snappy", b"abc")
    with pytest.raises(CodecError, match="unknown codec"):
        codecs.decode("snappy", b"abc", 3)


def test_level_out_of_range_is_a_codec_error():
    with pytest.raises(CodecError, match="zlib level"):
        codecs.encode("zlib", b"abc", 12)


def test_missing_brotli_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "brotli", None)  # makes `import brotli` raise ImportError
    with pytest.raises(CodecError, match=r"codec brotli needs the 'brotli' package: pip install brotli"):
        codecs.encode("brotli", b"abc")
    assert "brotli" not in codecs.available_codecs()
    assert "rans" in codecs.available_codecs()


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_wrong_length_or_garbage_is_an_artifact_error(codec):
    raw, itemsize, row_len = STREAMS["int6 rows"]
    blob = codecs.encode(codec, raw, 1 if codec == "lzma" else -1, itemsize, row_len)
    with pytest.raises(ArtifactError):
        codecs.decode(codec, blob, len(raw) + 1, itemsize, row_len)
    with pytest.raises(ArtifactError):
        codecs.decode(codec, blob[: len(blob) // 2], len(raw), itemsize, row_len)


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

"""Codecs: every codec round-trips, errors are one line (rans's own tests: test_rans.py)."""

import sys

import pytest

from pgolf.errors import ArtifactError, CodecError
from pgolf.export.coding import codecs

from .conftest import STREAMS, int6_levels


@pytest.mark.parametrize("codec", codecs.CODECS)
@pytest.mark.parametrize("case", list(STREAMS))
def test_every_codec_round_trips(codec, case):
    raw, itemsize, row_len = STREAMS[case]
    blob = codecs.encode(codec, raw, 1 if codec == "lzma" else -1, itemsize, row_len)
    assert codecs.decode(codec, blob, len(raw), itemsize, row_len) == raw


def test_encode_takes_arrays_as_their_bytes():
    levels = int6_levels(4, 16)
    assert codecs.decode("rans", codecs.encode("rans", levels), levels.size) == levels.tobytes()


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

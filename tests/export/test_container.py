"""Container: round trip, and every kind of damage is one ArtifactError naming the file and the problem."""

import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.errors import ArtifactError
from pgolf.export.container import FORMAT_VERSION, MAGIC, pack_container, read_container, write_container

HEADER = {"tensors": [{"name": "a", "streams": {"q": {"offset": 0, "length": 5}}},
                      {"name": "b", "streams": {"data": {"offset": 5, "length": 3}}}], "note": "x"}
PAYLOAD = b"hello" + b"abc"


def reseal(body: bytes) -> bytes:
    """`body` (a container without its checksum) with a valid CRC32 appended."""
    return body + struct.pack("<I", zlib.crc32(body))


def with_header(header: dict, payload: bytes = PAYLOAD, version: int = FORMAT_VERSION) -> bytes:
    """A correctly framed and checksummed container around any header."""
    blob = pack_container(header, payload)
    return reseal(struct.pack("<6sH", MAGIC, version) + blob[8:-4])


def test_round_trip_through_a_file(tmp_path):
    path = tmp_path / "model.pgolf"
    write_container(path, HEADER, PAYLOAD)
    assert read_container(path) == (HEADER, PAYLOAD)
    assert read_container(path.read_bytes()) == (HEADER, PAYLOAD)


def test_packing_is_deterministic_and_key_order_free():
    reordered = {"note": "x", "tensors": HEADER["tensors"]}
    assert pack_container(HEADER, PAYLOAD) == pack_container(reordered, PAYLOAD)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:10], "too short"),
    (lambda b: b + b"\0", "padded"),
    (lambda b: b"XGOLF\0" + b[6:], "bad magic"),
    (lambda b: b[:30] + bytes([b[30] ^ 4]) + b[31:], "checksum mismatch"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum mismatch"),
])
def test_damaged_files_fail_with_one_line(tmp_path, damage, message):
    path = tmp_path / "bad.pgolf"
    path.write_bytes(damage(pack_container(HEADER, PAYLOAD)))
    with pytest.raises(ArtifactError, match=message) as info:
        read_container(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_newer_format_version_is_refused():
    with pytest.raises(ArtifactError, match="unsupported format version 9"):
        read_container(with_header(HEADER, version=9))


@pytest.mark.parametrize(("stream", "message"), [
    ({"offset": 6, "length": 5}, "outside the 8-byte payload"),
    ({"offset": -1, "length": 2}, "bad offset/length"),
    ({"offset": "0", "length": 2}, "bad offset/length"),
    ({"length": 2}, "bad offset/length"),
])
def test_offsets_outside_the_payload_are_refused(stream, message):
    header = {"tensors": [{"name": "a", "streams": {"q": stream}}]}
    with pytest.raises(ArtifactError, match=message):
        read_container(with_header(header))


def test_header_that_is_not_deflated_json_is_refused():
    body = struct.pack("<6sHIQ", MAGIC, FORMAT_VERSION, 4, 0) + b"junk"
    with pytest.raises(ArtifactError, match="header is not valid deflated JSON"):
        read_container(reseal(body), name="x.pgolf")
    with pytest.raises(ArtifactError, match="no 'tensors' list"):
        read_container(with_header({"format": 1}))


def test_missing_file_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        read_container(tmp_path / "nope.pgolf")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_corruption_is_always_an_artifact_error(data):
    blob = bytearray(pack_container(HEADER, PAYLOAD))
    kind = data.draw(st.sampled_from(["flip", "truncate", "pad", "overwrite"]))
    if kind == "flip":
        for position in data.draw(st.lists(st.integers(0, len(blob) * 8 - 1), min_size=1, max_size=8, unique=True)):
            blob[position // 8] ^= 1 << (position % 8)
    elif kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "pad":
        blob += data.draw(st.binary(min_size=1, max_size=64))
    else:
        start = data.draw(st.integers(0, len(blob) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=16))
        if bytes(blob[start : start + len(patch)]) == patch[: len(blob) - start]:
            return
        blob[start : start + len(patch)] = patch
    with pytest.raises(ArtifactError):
        read_container(bytes(blob))

import numpy as np
import pytest

from pgolf.data.shards import HEADER_BYTES, SHARD_MAGIC, find_shards, read_shard, write_shard
from pgolf.errors import DataError


def _header(path):
    return np.fromfile(path, dtype="<i4", count=256)


def test_round_trip_is_byte_exact(tmp_path):
    tokens = np.array([1, 0, 65535, 300, 7], dtype=np.int64)
    path = tmp_path / "x_train_000000.bin"
    write_shard(path, tokens)
    raw = path.read_bytes()
    assert len(raw) == HEADER_BYTES + 2 * tokens.size
    header = _header(path)
    assert list(header[:3]) == [SHARD_MAGIC, 1, tokens.size]
    assert not header[3:].any()
    assert raw[HEADER_BYTES:] == tokens.astype("<u2").tobytes()
    back = read_shard(path)
    assert back.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(back, tokens)


def test_empty_shard_round_trips(tmp_path):
    write_shard(tmp_path / "e.bin", [])
    assert read_shard(tmp_path / "e.bin").size == 0


@pytest.mark.parametrize("bad", [[-1], [65536], [1.5]])
def test_write_rejects_ids_outside_uint16(tmp_path, bad):
    with pytest.raises(DataError, match="e.bin"):
        write_shard(tmp_path / "e.bin", bad)
    assert not list(tmp_path.iterdir())


def _corrupt(path, offset, value):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(raw))


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "foo_val_000000.bin"
    write_shard(path, np.arange(1000))
    return path


def test_bad_magic(shard):
    _corrupt(shard, 0, 12345)
    with pytest.raises(DataError, match=r"foo_val_000000\.bin: not a token shard: magic is 12345"):
        read_shard(shard)


def test_bad_version(shard):
    _corrupt(shard, 4, 2)
    with pytest.raises(DataError, match="unsupported shard version 2"):
        read_shard(shard)


def test_truncated(shard):
    shard.write_bytes(shard.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"truncated shard: header says 1000 tokens \(3024 bytes\), file has 2000"):
        read_shard(shard)


def test_shorter_than_header(shard):
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated shard"):
        read_shard(shard)


def test_padded(shard):
    shard.write_bytes(shard.read_bytes() + b"\0\0")
    with pytest.raises(DataError, match="padded shard"):
        read_shard(shard)


def test_negative_count(shard):
    _corrupt(shard, 8, -5)
    with pytest.raises(DataError, match="-5 tokens"):
        read_shard(shard)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.bin: shard not found"):
        read_shard(tmp_path / "nope.bin")


def test_find_shards_sorted_and_errors(tmp_path):
    for index in (2, 0, 1):
        write_shard(tmp_path / f"d_train_{index:06d}.bin", [1])
    write_shard(tmp_path / "d_val_000000.bin", [1])
    assert [p.name for p in find_shards(tmp_path, "*_train_*.bin")] == [
        "d_train_000000.bin", "d_train_000001.bin", "d_train_000002.bin"]
    with pytest.raises(DataError, match=r"no shards matching '\*_test_\*\.bin' in .*pgolf data prepare"):
        find_shards(tmp_path, "*_test_*.bin")
    with pytest.raises(DataError, match="not found"):
        find_shards(tmp_path / "missing", "*.bin")

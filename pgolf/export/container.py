"""pgolf's artifact container: a small binary frame around a JSON header and a payload.

Layout (all integers little-endian):

    magic        6 bytes  b"PGOLF\\0"
    version      u16      FORMAT_VERSION
    header_len   u32      bytes of the compressed header
    payload_len  u64      bytes of the payload
    header       raw-deflate (level 9) of compact JSON with sorted keys
    payload      concatenated streams; records point into it by offset/length
    crc32        u32      of every byte before it

What is non-standard here: the JSON header is deflated. A baseline artifact has
~90 tensor records (~20 KB of JSON, ~3 KB deflated); in a 16 MB budget those
bytes buy parameters. The reader checks, in order, the magic, the version, the
file size against the lengths (truncated or padded), the checksum, the header
JSON, then every stream's offset and length against the payload, before
anything is decoded. Every failure is one ArtifactError line naming the source.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

from pgolf.atomic import atomic_write_bytes
from pgolf.errors import ArtifactError

MAGIC = b"PGOLF\0"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<6sHIQ")
_CRC = struct.Struct("<I")
_MAX_HEADER_JSON_BYTES = 64 * 2**20


def _header_json(header: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"artifact header is not JSON-serializable: {exc}") from None
    return text.encode("utf-8")


def pack_container(header: dict[str, Any], payload: bytes) -> bytes:
    """The complete container bytes for `header` and `payload` (deterministic)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    header_blob = packer.compress(_header_json(header)) + packer.flush()
    body = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header_blob), len(payload)) + header_blob + payload
    return body + _CRC.pack(zlib.crc32(body))


def write_container(path: Path | str, header: dict[str, Any], payload: bytes) -> None:
    """Write a container file atomically."""
    atomic_write_bytes(path, pack_container(header, payload))


def read_container(source: Path | str | bytes, name: str | None = None) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of a container file or its bytes, after checking everything checkable."""
    where = name or ("<bytes>" if isinstance(source, bytes | bytearray) else str(source))
    if isinstance(source, bytes | bytearray):
        blob = bytes(source)
    else:
        try:
            blob = Path(source).read_bytes()
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {where}: {exc.strerror or exc}") from None

    def fail(problem: str) -> ArtifactError:
        return ArtifactError(f"artifact {where}: {problem}")

    if len(blob) < _PREAMBLE.size + _CRC.size:
        raise fail(f"file is {len(blob)} bytes, too short for a pgolf artifact (truncated?)")
    magic, version, header_len, payload_len = _PREAMBLE.unpack_from(blob)
    if magic != MAGIC:
        raise fail("not a pgolf artifact (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise fail(f"unsupported format version {version} (this pgolf reads version {FORMAT_VERSION})")
    expected = _PREAMBLE.size + header_len + payload_len + _CRC.size
    if len(blob) != expected:
        state = "truncated" if len(blob) < expected else "padded"
        raise fail(f"file is {len(blob)} bytes but its lengths say {expected} ({state})")
    (stored_crc,) = _CRC.unpack_from(blob, len(blob) - _CRC.size)
    if zlib.crc32(blob[: -_CRC.size]) != stored_crc:
        raise fail("checksum mismatch (the file is corrupt)")
    header_start = _PREAMBLE.size
    payload_start = header_start + header_len
    try:
        unpacker = zlib.decompressobj(-15)
        header_bytes = unpacker.decompress(blob[header_start:payload_start], _MAX_HEADER_JSON_BYTES)
        if not unpacker.eof or unpacker.unconsumed_tail or unpacker.unused_data:
            raise ValueError("header stream is incomplete or has trailing bytes")
        header = json.loads(header_bytes.decode("utf-8"))
    except (zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise fail(f"header is not valid deflated JSON ({exc})") from None
    if not isinstance(header, dict):
        raise fail(f"header is a JSON {type(header).__name__}, expected an object")
    check_streams(header, payload_len, fail)
    return header, blob[payload_start : payload_start + payload_len]


def check_streams(header: dict[str, Any], payload_len: int, fail) -> None:
    """Every `tensors[i].streams[k]` {offset, length} must lie inside the payload."""
    tensors = header.get("tensors")
    if not isinstance(tensors, list):
        raise fail("header has no 'tensors' list")
    for i, record in enumerate(tensors):
        if not isinstance(record, dict) or not isinstance(record.get("streams"), dict):
            raise fail(f"tensor record {i} has no 'streams' object")
        label = record.get("name", i)
        for key, stream in record["streams"].items():
            if not isinstance(stream, dict):
                raise fail(f"tensor {label} stream {key} is not an object")
            offset, length = stream.get("offset"), stream.get("length")
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, length)):
                raise fail(f"tensor {label} stream {key} has a bad offset/length ({offset!r}, {length!r})")
            if offset + length > payload_len:
                raise fail(f"tensor {label} stream {key} spans bytes {offset}..{offset + length} "
                           f"outside the {payload_len}-byte payload")

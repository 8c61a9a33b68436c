"""The challenge's token shard format, read and written byte-exactly.

A shard is a header of 256 little-endian int32 (`[0]` magic 20240520, `[1]`
version 1, `[2]` token count, the rest zero) followed by the tokens as
little-endian uint16. The file size must be exactly 1024 + 2 * count; a shard
of any other size is corrupt, and reading one is a DataError naming the file
and the problem, never a silently short or padded token array.

A missing data folder or tokenizer names the command that makes it: `pgolf data
fetch <variant>` for the challenge's FineWeb layout (`<root>/datasets/
fineweb10B_<variant>/`, `<root>/tokenizers/fineweb_*`), `pgolf data prepare`
for anything else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pgolf.atomic import atomic_write_bytes
from pgolf.errors import DataError

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
FINEWEB_VARIANTS = ("sp1024", "sp4096", "sp8192", "byte260")
"""The challenge's published FineWeb exports; each lives in `<root>/datasets/fineweb10B_<variant>/`."""
_FINEWEB_TOKENIZER = re.compile(r"fineweb_(?:(\d+)_bpe\.(?:model|vocab)|pure_byte_(\d+)\.json)")


def write_shard(path: Path | str, tokens: np.ndarray | Sequence[int]) -> None:
    """Write `tokens` (ints in [0, 65535]) as one shard, atomically."""
    path = Path(path)
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise DataError(f"{path}: tokens must be a 1-D sequence, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: tokens must be integers, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 65535):
        raise DataError(f"{path}: token ids must be in [0, 65535], got range [{array.min()}, {array.max()}]")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, array.size
    atomic_write_bytes(path, header.tobytes() + array.astype(TOKEN_DTYPE).tobytes())


def read_shard(path: Path | str) -> np.ndarray:
    """The tokens of a shard as a read-only uint16 array (memory-mapped), after checking the header and size."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: shard not found")
    file_bytes = path.stat().st_size
    if file_bytes < HEADER_BYTES:
        raise DataError(f"{path}: truncated shard: {file_bytes} bytes is shorter than the {HEADER_BYTES}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != SHARD_MAGIC:
        raise DataError(f"{path}: not a token shard: magic is {header[0]}, expected {SHARD_MAGIC}")
    if header[1] != SHARD_VERSION:
        raise DataError(f"{path}: unsupported shard version {header[1]} (expected {SHARD_VERSION})")
    num_tokens = int(header[2])
    if num_tokens < 0:
        raise DataError(f"{path}: corrupt shard: header says {num_tokens} tokens")
    expected_bytes = HEADER_BYTES + 2 * num_tokens
    if file_bytes != expected_bytes:
        problem = "truncated" if file_bytes < expected_bytes else "padded"
        raise DataError(f"{path}: {problem} shard: header says {num_tokens} tokens ({expected_bytes} bytes), "
                        f"file has {file_bytes} bytes")
    if num_tokens == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(num_tokens,))


def find_shards(directory: Path | str, pattern: str) -> list[Path]:
    """Shards in `directory` matching the glob `pattern`, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data folder {directory} not found (run `{command_that_makes(directory)}`)")
    files = sorted(p for p in directory.glob(pattern) if p.is_file())
    if not files:
        raise DataError(f"no shards matching {pattern!r} in {directory} (run `{command_that_makes(directory)}`)")
    return files


def command_that_makes(path: Path | str) -> str:
    """The command that writes `path`, a data folder or a tokenizer (see the module docstring)."""
    path = Path(path)
    variant = None
    if path.parent.name == "datasets" and path.name.startswith("fineweb10B_"):
        variant = path.name.removeprefix("fineweb10B_")
    elif path.parent.name == "tokenizers" and (match := _FINEWEB_TOKENIZER.fullmatch(path.name)):
        variant = f"sp{match.group(1)}" if match.group(1) else f"byte{match.group(2)}"
    if variant not in FINEWEB_VARIANTS:
        built_in = re.fullmatch(r"builtin_sp(\d+)", (path if path.suffix == "" else path.parent).name)
        return "pgolf data prepare" + (f" --vocab-size {built_in.group(1)}" if built_in else "")
    root = path.parent.parent
    return f"pgolf data fetch {variant}" + ("" if root == Path("data") else f" --out {root}")

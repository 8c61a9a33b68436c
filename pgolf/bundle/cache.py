"""pgolf's cache between processes: $PGOLF_CACHE, else ~/.cache/pgolf. Each entry is a file named by a hash of
everything its content depends on, so an edited checkout never reads a stale one; an unreadable or unwritable
cache only costs the rebuild."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from pgolf.atomic import atomic_write_text


def cache_dir(kind: str) -> Path:
    """The folder of one kind of entry (`code-bytes`, `compact`)."""
    return Path(os.environ.get("PGOLF_CACHE") or Path.home() / ".cache" / "pgolf") / kind


def content_key(files: Iterable[Path], root: Path, parts: Iterable[str]) -> str:
    """An entry's name: a hash of the Python that unparses and the python-minifier that prints the script, of each
    file (its path under `root` and its bytes) and of `parts`."""
    digest = hashlib.sha256(f"{sys.version}\0{importlib.metadata.version('python-minifier')}\0".encode())
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def read_entry(kind: str, name: str) -> str | None:
    try:
        return (cache_dir(kind) / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def write_entry(kind: str, name: str, text: str) -> None:
    try:
        atomic_write_text(cache_dir(kind) / name, text)
    except OSError:
        pass

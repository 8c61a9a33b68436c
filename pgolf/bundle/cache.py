"""pgolf's cache between processes: $PGOLF_CACHE, else ~/.cache/pgolf. Each entry is a file named by a hash of
everything its content depends on, so an edited checkout never reads a stale one; an unreadable or unwritable
cache only costs the rebuild."""

from __future__ import annotations

import os
from pathlib import Path

from pgolf.atomic import atomic_write_text


def cache_dir(kind: str) -> Path:
    """The folder of one kind of entry (`code-bytes`, `compact`)."""
    return Path(os.environ.get("PGOLF_CACHE") or Path.home() / ".cache" / "pgolf") / kind


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

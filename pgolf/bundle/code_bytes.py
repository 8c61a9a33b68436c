"""The code bytes of `total = artifact + code`: the measured size of the script pack would ship, cached by
a hash of the sources and the packed config (in-process and on disk), unless the config names a number or files.
"""

from __future__ import annotations

import json
from pathlib import Path

from pgolf.bundle.cache import content_key, read_entry, write_entry
from pgolf.bundle.graph import PACKAGE, packed_config
from pgolf.bundle.script import script
from pgolf.errors import ConfigError
from pgolf.schema import Config, ExportConfig

_MEASURED: dict[str, int] = {}


def _cache_key(cfg: Config) -> str:
    """A hash of everything the measured size depends on: pgolf's sources, the packed config, the Python that
    unparses them and the python-minifier that prints them."""
    return content_key(PACKAGE.rglob("*.py"), PACKAGE, [repr(packed_config(cfg))])


def measured_code_bytes(cfg: Config) -> int:
    """Size of the wrapped script `pgolf pack` would ship for `cfg`; a build takes about a second, so sizes are
    cached by `_cache_key` in this process and in pgolf's cache folder (bundle/cache.py)."""
    key = _cache_key(cfg)
    if key not in _MEASURED:
        try:
            _MEASURED[key] = int(json.loads(read_entry("code-bytes", f"{key}.json") or "")["bytes"])
        except (ValueError, KeyError, TypeError):
            _MEASURED[key] = len(script(cfg, "lzma"))
            write_entry("code-bytes", f"{key}.json", json.dumps({"bytes": _MEASURED[key]}) + "\n")
    return _MEASURED[key]


def count_code_bytes(cfg: Config) -> int:
    """Code bytes of `total = artifact + code`: `export.code_files`' sizes when listed, else `export.code_bytes`
    when set (>= 0), else the measured script (docs/bytes.md)."""
    e: ExportConfig = cfg.export
    if e.code_files:
        total = 0
        for name in e.code_files:
            path = Path(name)
            if not path.is_file():
                raise ConfigError(f"export.code_files: {path} is not a file")
            total += path.stat().st_size
        return total
    if e.code_bytes >= 0:
        return e.code_bytes
    return measured_code_bytes(cfg)

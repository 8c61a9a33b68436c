"""Code bytes: the part of `total = artifact bytes + code bytes` that is not weights.

The challenge counts the exact code that ships. pgolf is not itself a
submission, so what to count is the user's choice (docs/bytes.md):

1. `export.code_files`: the summed sizes of those files (paths relative to
   the working directory), e.g. the user's own train_gpt.py. A missing file
   is a ConfigError.
2. Otherwise `export.code_bytes`, by default 47,642: the size of the
   challenge's reference train_gpt.py, so pgolf's totals line up with the
   reference baseline's 15,863,489 and stay fixed while pgolf's own code
   changes. Records that ship a compressed wrapper count 16-32 KB; set the
   number you ship.
"""

from __future__ import annotations

from pathlib import Path

from pgolf.config import ExportConfig
from pgolf.errors import ConfigError


def count_code_bytes(cfg: ExportConfig) -> int:
    """Code bytes under `cfg`: the listed files' sizes when given, else `code_bytes` (see module doc)."""
    if not cfg.code_files:
        return cfg.code_bytes
    total = 0
    for name in cfg.code_files:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"export.code_files: {path} is not a file")
        total += path.stat().st_size
    return total

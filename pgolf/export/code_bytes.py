"""Code bytes: the part of `total = artifact bytes + code bytes` that is not weights.

The challenge counts the exact code that ships (the reference's train_gpt.py
is 47,642 bytes). pgolf is not itself a submission, so what to count is a
choice:

1. `export.code_bytes >= 0`: that number, as given (for a script measured
   elsewhere, e.g. an lzma+base85 self-extracting wrapper).
2. `export.code_files`: the summed sizes of those files (paths relative to
   the working directory), e.g. the user's own train_gpt.py. A missing file
   is a ConfigError.
3. Otherwise the default: every `.py` file of the pgolf package except the
   tooling that a submission never ships (cli.py, fit.py, sweep.py, report.py),
   uncompressed. That is the code that trains, exports and scores a model, so
   a budget fitted with it is conservative: a leaner real script only adds
   headroom, never overruns. It over-counts by pgolf's docstrings and checks;
   set `code_files` or `code_bytes` to count what you actually ship.
"""

from __future__ import annotations

from pathlib import Path

from pgolf.config import ExportConfig
from pgolf.errors import ConfigError

TOOLING_FILES = ("cli.py", "fit.py", "sweep.py", "report.py")
"""Top-level package modules left out of the default count: they drive experiments, no submission needs them."""


def default_code_files(package_dir: Path) -> list[Path]:
    """The package's .py files a submission would need (sorted), for the default count."""
    package_dir = Path(package_dir)
    if not package_dir.is_dir():
        raise ConfigError(f"package folder {package_dir} does not exist (needed to count default code bytes)")
    return sorted(p for p in package_dir.rglob("*.py")
                  if "__pycache__" not in p.parts and p.relative_to(package_dir).as_posix() not in TOOLING_FILES)


def count_code_bytes(cfg: ExportConfig, package_dir: Path) -> int:
    """Code bytes under `cfg`: an explicit number, the listed files, or the package default (see module doc)."""
    if cfg.code_bytes >= 0:
        return cfg.code_bytes
    files = [Path(f) for f in cfg.code_files] if cfg.code_files else default_code_files(package_dir)
    total = 0
    for path in files:
        if not path.is_file():
            raise ConfigError(f"export.code_files: {path} is not a file")
        total += path.stat().st_size
    return total

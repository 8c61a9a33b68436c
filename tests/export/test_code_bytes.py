"""Code bytes: an explicit number, the listed files, or the package default."""

from pathlib import Path

import pytest

import pgolf
from pgolf.config import ExportConfig
from pgolf.errors import ConfigError
from pgolf.export.code_bytes import TOOLING_FILES, count_code_bytes, default_code_files

PACKAGE_DIR = Path(pgolf.__file__).resolve().parent


def test_an_explicit_number_wins(tmp_path):
    assert count_code_bytes(ExportConfig(code_bytes=47642, code_files=["missing.py"]), PACKAGE_DIR) == 47642
    assert count_code_bytes(ExportConfig(code_bytes=0), PACKAGE_DIR) == 0


def test_listed_files_are_summed(tmp_path):
    (tmp_path / "train_gpt.py").write_bytes(b"x" * 1234)
    (tmp_path / "extra.py").write_bytes(b"y" * 10)
    cfg = ExportConfig(code_files=[str(tmp_path / "train_gpt.py"), str(tmp_path / "extra.py")])
    assert count_code_bytes(cfg, PACKAGE_DIR) == 1244


def test_a_missing_listed_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.py is not a file"):
        count_code_bytes(ExportConfig(code_files=[str(tmp_path / "nope.py")]), PACKAGE_DIR)


def test_default_counts_the_package_without_tooling(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "gpt.py").write_bytes(b"m" * 100)
    (tmp_path / "cli.py").write_bytes(b"c" * 1000)
    (tmp_path / "evaluate.py").write_bytes(b"e" * 10)
    (tmp_path / "notes.txt").write_bytes(b"n" * 5)
    assert count_code_bytes(ExportConfig(), tmp_path) == 110
    files = default_code_files(PACKAGE_DIR)
    assert files and not any(f.name in TOOLING_FILES and f.parent == PACKAGE_DIR for f in files)
    assert count_code_bytes(ExportConfig(), PACKAGE_DIR) == sum(f.stat().st_size for f in files)


def test_default_needs_the_package_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        count_code_bytes(ExportConfig(), tmp_path / "gone")

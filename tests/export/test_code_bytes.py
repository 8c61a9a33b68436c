"""Code bytes: the listed files' sizes, else the configured number (the reference script's size by default)."""

import pytest

from pgolf.config import ExportConfig, compose
from pgolf.errors import ConfigError
from pgolf.export.code_bytes import count_code_bytes


def test_default_is_the_reference_train_gpt_size():
    assert count_code_bytes(compose([]).export) == 47642


def test_an_explicit_number_is_used_when_no_files_are_listed():
    assert count_code_bytes(ExportConfig(code_bytes=12345)) == 12345
    assert count_code_bytes(ExportConfig(code_bytes=0)) == 0


def test_listed_files_are_summed_and_win_over_the_number(tmp_path):
    (tmp_path / "train_gpt.py").write_bytes(b"x" * 1234)
    (tmp_path / "extra.py").write_bytes(b"y" * 10)
    cfg = ExportConfig(code_bytes=99, code_files=[str(tmp_path / "train_gpt.py"), str(tmp_path / "extra.py")])
    assert count_code_bytes(cfg) == 1244


def test_a_missing_listed_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.py is not a file"):
        count_code_bytes(ExportConfig(code_files=[str(tmp_path / "nope.py")]))

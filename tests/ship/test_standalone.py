"""The shipped script's main: the reference script's environment variables, usage and one-line errors."""

import pytest

from pgolf.config import compose
from pgolf.errors import ConfigError
from pgolf.ship import standalone


def test_environment_variables_override_the_packed_config():
    cfg = compose([])
    applied = standalone.apply_env(cfg, {
        "DATA_PATH": "/d", "TOKENIZER_PATH": "/d/t.model", "ITERATIONS": "7", "MAX_WALLCLOCK_SECONDS": "12.5",
        "TRAIN_BATCH_TOKENS": "2048", "TRAIN_SEQ_LEN": "128", "SEED": "3", "VAL_TOKENS": "0",
        "VAL_PATTERN": "*_valid_*.bin", "UNRELATED": "x", "RUN_ID": ""})
    assert (cfg.data.dir, cfg.data.tokenizer, cfg.data.val_pattern, cfg.data.val_tokens) == (
        "/d", "/d/t.model", "*_valid_*.bin", 0)
    assert (cfg.train.iterations, cfg.train.wallclock_s, cfg.train.batch_tokens, cfg.train.seq_len, cfg.seed) == (
        7, 12.5, 2048, 128, 3)
    assert "ITERATIONS=7" in applied and len(applied) == 9


def test_an_unset_or_empty_variable_keeps_the_packed_value():
    cfg = compose([])
    assert standalone.apply_env(cfg, {"ITERATIONS": ""}) == []
    assert cfg.train.iterations == compose([]).train.iterations


def test_a_bad_variable_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="ITERATIONS='ten' is not a valid int"):
        standalone.apply_env(compose([]), {"ITERATIONS": "ten"})


def test_main_reports_usage_and_errors_in_one_line(capsys, monkeypatch, tmp_path):
    assert standalone.main({}, ["--bogus"]) == 2
    assert capsys.readouterr().err.strip() == "usage: train_gpt.py [--eval ARTIFACT]"
    monkeypatch.setenv("ITERATIONS", "ten")
    assert standalone.main({}, []) == 1
    assert capsys.readouterr().err.strip() == "error: ITERATIONS='ten' is not a valid int"
    monkeypatch.delenv("ITERATIONS")
    assert standalone.main({}, ["--eval", str(tmp_path / "missing.pgolf")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.pgolf" in err and "\n" not in err


def test_an_unknown_packed_key_is_a_config_error():
    assert standalone.main({"model": {"depth": 3}}, []) == 1

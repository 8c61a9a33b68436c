"""audit_folder as a whole: bad input is one DataError each; a failing folder fails only what it breaks."""

import pytest

from pgolf.audit.audit import audit_folder
from pgolf.errors import DataError, UsageError

from .conftest import make_folder, train_log


def test_a_folder_without_train_gpt_py_is_a_data_error(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(DataError, match="has no train_gpt.py"):
        audit_folder(tmp_path / "r")


def test_logs_without_a_scored_line_are_a_data_error(tmp_path):
    root = make_folder(tmp_path / "r", logs={"train_seed1.log": "step:1/10 train_loss:3.0\n"})
    with pytest.raises(DataError, match="no log in .* prints a scored line"):
        audit_folder(root)


def test_a_submission_json_that_is_not_json_is_a_data_error(tmp_path):
    root = make_folder(tmp_path / "r", submission="{not json")
    with pytest.raises(DataError, match=r"submission.json is not JSON"):
        audit_folder(root)


def test_a_script_that_does_not_parse_is_a_data_error(tmp_path):
    root = make_folder(tmp_path / "r", script="def f(:\n")
    with pytest.raises(DataError, match="does not parse as Python"):
        audit_folder(root)


def test_against_and_against_bpb_together_are_a_usage_error(tmp_path):
    root = make_folder(tmp_path / "r")
    with pytest.raises(UsageError):
        audit_folder(root, against=root, against_bpb=1.2)


def test_an_over_time_folder_fails_time_and_nothing_else(tmp_path):
    logs = {f"train_seed{s}.log": train_log(1.1 + s / 1000, train_ms=700_000, artifact=1000, total=1006)
            for s in (1, 2, 3)}
    root = make_folder(tmp_path / "r", "x = 1\n", logs=logs,
                       submission={"val_bpb": 1.102, "bytes_total": 1006, "bytes_code": 6})
    report = audit_folder(root, against_bpb=1.2)
    assert {(row.check, row.item) for row in report.failed} == {("time", f"train train_seed{s}.log") for s in (1, 2, 3)}
    assert report.seeds["n"] == 3 and report.seeds["bpb_mean"] == pytest.approx(1.102)
    assert [row.verdict for row in report.rows if row.check == "lut"] == ["unknown"]

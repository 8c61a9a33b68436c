from pgolf.audit.folder import read_folder
from pgolf.audit.logs import parse_log
from pgolf.audit.timing import time_rows

from .conftest import make_folder, train_log


def _verdicts(tmp_path, **log):
    root = make_folder(tmp_path / "r", logs={"train_seed1.log": train_log(1.1, **log)})
    folder = read_folder(root)
    return {row.item: row for row in time_rows(folder, [parse_log(p) for p in folder.logs])}


def test_training_past_600_seconds_fails_with_the_stop_line_as_evidence(tmp_path):
    row = _verdicts(tmp_path, train_ms=650_000)["train train_seed1.log"]
    assert row.verdict == "fail" and row.detail == "650.0 s loop of 600"
    assert row.evidence.startswith("train_seed1.log:3 stopping_early")


def test_a_stop_within_a_second_of_the_cap_is_on_time(tmp_path):
    assert _verdicts(tmp_path, train_ms=600_999)["train train_seed1.log"].verdict == "pass"
    assert _verdicts(tmp_path, train_ms=601_001)["train train_seed1.log"].verdict == "fail"


def test_calibration_after_the_loop_counts_toward_training(tmp_path):
    rows = _verdicts(tmp_path, train_ms=597_000, extra=("gptq:generated 64 sequences in 4.5s", "gptq:done in 4.6s",
                                                        "GPTQ:quantized in 10.2s"))
    row = rows["train train_seed1.log"]
    assert row.verdict == "fail" and "597.0 s loop + 4.5 s calibration after it = 601.5 s" in row.detail
    assert rows["eval train_seed1.log"].verdict == "pass" and rows["eval train_seed1.log"].detail == "1.5 s of 600"

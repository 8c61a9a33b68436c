from pgolf.audit.bytes_check import bytes_rows
from pgolf.audit.code import analyse
from pgolf.audit.folder import read_folder
from pgolf.audit.logs import parse_log

from .conftest import make_folder, train_log


def _rows(root):
    folder = read_folder(root)
    return {row.item: row for row in bytes_rows(folder, analyse(root, folder.script),
                                                [parse_log(p) for p in folder.logs])}


def test_an_execd_second_file_counts_and_pushes_the_total_over_the_cap(tmp_path):
    """The #1412 pattern: a small train_gpt.py execs the real code from a second file the log did not count."""
    script = 'exec(open(__file__.replace("train_gpt.py", "train_gpt_decode.py")).read())\n'
    inner = "# code\n" * 10_000  # 70,000 bytes
    code = len(script) + len(inner)
    artifact = 15_950_000
    root = make_folder(tmp_path / "r", script, files={"train_gpt_decode.py": inner},
                       logs={"train_seed1.log": train_log(1.1, artifact=artifact, total=artifact + len(script))},
                       submission={"bytes_total": artifact + len(script), "bytes_code": len(script)})
    rows = _rows(root)
    assert rows["code"].detail.startswith(f"{code:,} bytes")
    assert "train_gpt_decode.py <- train_gpt.py:1 exec(" in rows["code"].evidence
    total = rows["total train_seed1.log"]
    assert total.verdict == "fail" and f"= {artifact + code:,} of 16,000,000" in total.detail
    assert f"the log prints {artifact + len(script):,}" in total.detail
    assert rows["submission.json bytes_code"].verdict == "fail"
    assert rows["submission.json bytes_total"].verdict == "fail"


def test_totals_within_the_cap_that_match_the_claims_pass(tmp_path):
    script = "x = 1\n"
    root = make_folder(tmp_path / "r", script, files={"final_model.int8.ptz": b"\0" * 1000},
                       logs={"train_seed1.log": train_log(1.1, artifact=1000, total=1000 + len(script))},
                       submission={"bytes_total": 1000 + len(script), "bytes_code": len(script)})
    rows = _rows(root)
    assert {item: row.verdict for item, row in rows.items()} == {
        "code": "pass", "total final_model.int8.ptz": "pass", "total train_seed1.log": "pass",
        "submission.json bytes_code": "pass", "submission.json bytes_total": "pass"}


def test_a_log_that_counts_more_than_ships_warns(tmp_path):
    """Raw source counted while a smaller wrapper ships: not over the cap, but not the shipped bytes either."""
    root = make_folder(tmp_path / "r", "x = 1\n", logs={"train_seed1.log": train_log(1.1, artifact=1000, total=9000)})
    assert _rows(root)["total train_seed1.log"].verdict == "warn"

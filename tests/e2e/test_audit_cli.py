"""`pgolf audit` as a user runs it: on a folder `pgolf pack` wrote (its artifact scored again), on a folder that
breaks a rule (exit 4), and on bad input (one line, exit 1)."""

import json

import pytest

from tests.audit.conftest import make_folder, train_log

from .conftest import exited, one_line_error, run_pgolf_each

pytestmark = pytest.mark.slow


def test_audit_passes_a_packed_folder_and_fails_or_refuses_the_others(run_copy, tmp_path):
    run_dir, _ = run_copy
    packed = tmp_path / "packed"
    over = make_folder(tmp_path / "over", "x = 1\n", logs={"train_seed1.log": train_log(1.1, train_ms=650_000)})
    bad_json = make_folder(tmp_path / "bad_json", submission="{")
    pack, audit, failing, missing, broken = run_pgolf_each([
        (["pack", run_dir, "--out", packed], tmp_path),
        (["audit", packed, "--json"], tmp_path),
        (["audit", over], tmp_path),
        (["audit", run_dir], tmp_path),
        (["audit", bad_json], tmp_path)])
    exited(pack)
    report = json.loads(exited(audit).stdout)
    verdicts = {(row["check"], row["item"]): row for row in report["rows"]}
    sub = json.loads((packed / "submission.json").read_text())
    replay = verdicts[("replay", "final_model.pgolf")]
    assert replay["verdict"] == "pass", replay["detail"]
    assert f"submission.json claims {sub['val_bpb']:.8f}" in replay["detail"]
    assert verdicts[("bytes", "submission.json bytes_total")]["verdict"] == "pass"
    assert verdicts[("bytes", "code")]["detail"].startswith(f"{sub['bytes_code']:,} bytes")
    assert verdicts[("lut", "tokenizer.model")]["verdict"] == "unknown"  # its script trains at import: not loaded
    assert report["failed"] == 0 and report["seeds"]["n"] == 1
    assert exited(failing, 4).stdout.count("fail") == 1
    assert "1 checks fail: time (train train_seed1.log)" in one_line_error(failing)
    assert "has no train_gpt.py" in one_line_error(exited(missing, 1))
    assert "submission.json is not JSON" in one_line_error(exited(broken, 1))

"""`model=records_tiny` through the CLI: it trains and exports, its artifact alone rebuilds it; bad knobs: one line."""

import json
import subprocess

import pytest

from .conftest import QUICK, one_line_error, run_pgolf

pytestmark = pytest.mark.slow


def test_records_tiny_trains_and_eval_rebuilds_it_from_the_artifact_alone(tmp_path, data_overrides):
    proc = run_pgolf("train", "model=records_tiny", *data_overrides, *QUICK, "train.iterations=6",
                     "data.val_tokens=8192", "model.recur_from=0.5", "--json", cwd=tmp_path, check_code=0)
    summary = json.loads(proc.stdout)
    artifact = summary["artifact"]
    evaluated = run_pgolf("eval", artifact, *data_overrides, "data.val_tokens=8192", "--json", cwd=tmp_path,
                          check_code=0)
    assert json.loads(evaluated.stdout)["val_bpb"] == pytest.approx(summary["val_bpb_roundtrip"], abs=1e-9)
    groups = {g["group"]: g for g in summary["export_groups"]}
    assert groups["attn_q"]["params"] == 6 * 128 * 128  # each looped layer exported once


def test_a_knob_that_cannot_work_stops_before_anything_is_written(tmp_path, data_overrides, capsys, monkeypatch):
    from pgolf import cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "model=records_tiny", "model.recur_end=6", *data_overrides])
    assert info.value.code == 1
    stderr = capsys.readouterr().err
    assert "model.recur_start..model.recur_end must be a range of layers 0..5" in one_line_error(
        subprocess.CompletedProcess([], 1, "", stderr))
    assert not (tmp_path / "runs").exists()

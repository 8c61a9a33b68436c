"""`export.lqer_rank` as a user runs it: export with the correction, and `pgolf eval` of the artifact alone gives
the round-trip score export printed."""

import json

import pytest

from tests.e2e.conftest import exited, run_pgolf_each


@pytest.mark.slow
def test_an_lqer_artifact_scores_the_same_in_eval_and_is_bigger_than_without(trained_run, builtin_data, tmp_path):
    cwd, summary, _ = trained_run
    data = [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}", "data.val_tokens=4096"]
    run_dir = summary["run_dir"]
    with_lqer, without, evaluated = run_pgolf_each([
        (["export", run_dir, *data, "export.bits=4", "export.lqer_rank=4", "--out", tmp_path / "l.pgolf", "--json"],
         cwd),
        (["export", run_dir, *data, "export.bits=4", "--out", tmp_path / "p.pgolf", "--json"], cwd),
        (["eval", tmp_path / "l.pgolf", *data, "--json"], cwd),
    ])
    made, plain = json.loads(exited(with_lqer).stdout), json.loads(exited(without).stdout)
    assert json.loads(exited(evaluated).stdout)["val_bpb"] == made["val_bpb_roundtrip"]
    assert made["bytes"]["model"] == (tmp_path / "l.pgolf").stat().st_size > plain["bytes"]["model"]
    assert made["val_bpb_roundtrip"] != plain["val_bpb_roundtrip"]

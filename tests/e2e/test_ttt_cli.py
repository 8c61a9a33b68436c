"""`ttt=NAME` wherever a score is made, as a user runs it: eval (with --losses), export, fit-budget, a sweep and
its report, and bad TTT input."""

import json

import numpy as np
import pytest

from tests.e2e.conftest import exited, one_line_error, run_pgolf, run_pgolf_each

SMALL = ["data.val_tokens=3072", "ttt=cpu", "ttt.prefix_docs=2", "ttt.global_chunk_tokens=512"]


@pytest.mark.slow
def test_eval_export_and_fit_budget_score_with_ttt(trained_run, builtin_data, tmp_path):
    cwd, summary, _ = trained_run
    data = [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]
    run_dir = summary["run_dir"]
    static, ttt, exported, fit, bad = run_pgolf_each([
        (["eval", run_dir, *data, "data.val_tokens=3072", "--json"], cwd),
        (["eval", run_dir, *data, *SMALL, "--losses", tmp_path / "l.npy", "--json"], cwd),
        (["export", run_dir, *data, *SMALL, "export.bits=5", "--out", tmp_path / "a.pgolf", "--json"], cwd),
        (["fit-budget", run_dir, *data, *SMALL, "--max-bytes", "420KB", "--json"], cwd),
        (["eval", run_dir, *data, "ttt=cpu", "ttt.chunk=512"], cwd),
    ])
    plain, scored = json.loads(exited(static).stdout), json.loads(exited(ttt).stdout)
    assert scored["val_bpb"] == plain["val_bpb"]  # the static score is still there, beside the TTT one
    assert scored["ttt"] == "cpu" and scored["ttt_seconds"] > 0 and scored["val_bpb_ttt"] != plain["val_bpb"]
    losses = np.load(tmp_path / "l.npy", allow_pickle=False)  # with TTT: the TTT score's losses
    assert losses.shape == (scored["val_tokens"],)
    assert float(losses.astype(np.float64).sum()) / np.log(2) / scored["val_bytes"] == pytest.approx(
        scored["val_bpb_ttt"], rel=1e-5)
    made = json.loads(exited(exported).stdout)
    record = json.loads((tmp_path / "a.json").read_text())
    assert made["val_bpb_ttt"] == record["val_bpb_ttt"] and record["config"]["ttt"]["name"] == "cpu"
    assert made["val_bpb_ttt"] != made["val_bpb_roundtrip"]
    fitted = json.loads(exited(fit).stdout)
    assert fitted["ttt"] == "cpu" and fitted["val_bpb_ttt"] != fitted["val_bpb_roundtrip"]
    assert one_line_error(exited(bad, 1)) == ("error: ttt.context (128) must hold at least one chunk (ttt.chunk "
                                              "512)")


@pytest.mark.slow
def test_a_sweep_with_ttt_has_its_columns_and_the_report_shows_them(builtin_data, tmp_path):
    data = [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]
    exited(run_pgolf("sweep", *data, *SMALL, "train.iterations=10", "train.val_every=0", "export.bits=5,8",
                     "--name", "t", cwd=tmp_path))
    import pandas as pd

    rows = pd.read_csv(tmp_path / "runs" / "sweeps" / "t" / "results.csv")
    assert rows["val_bpb_ttt"].notna().all() and (rows["ttt_seconds"] > 0).all()
    assert (rows["val_bpb_ttt"] != rows["val_bpb_roundtrip"]).all()
    report = exited(run_pgolf("report", tmp_path / "runs" / "sweeps" / "t", cwd=tmp_path)).stdout
    assert "val_bpb (ttt)" in report and "ttt s" in report

"""`ttt=NAME` wherever a score is made, as a user runs it: eval (with --losses), export, fit-budget, a sweep and
its report, and bad TTT input."""

import json
import shutil

import numpy as np
import pytest

from pgolf.data.shards import read_shard, write_shard
from tests.e2e.conftest import NARROW_FIT, exited, one_line_error, run_pgolf, run_pgolf_each

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
        (["fit-budget", run_dir, *data, *SMALL, *NARROW_FIT, "--max-bytes", "420KB", "--json"], cwd),
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


@pytest.mark.slow
def test_bad_ttt_input_is_a_one_line_error_naming_the_key_and_nothing_is_scored(trained_run, builtin_data, tmp_path):
    cwd, summary, _ = trained_run
    no_bos = tmp_path / "no_bos"
    shutil.copytree(builtin_data, no_bos)
    for shard in no_bos.glob("*_val_*.bin"):
        tokens = read_shard(shard)
        write_shard(shard, np.where(tokens == 1, 2, tokens))
    data = [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]
    run_dir = summary["run_dir"]
    out = tmp_path / "x.pgolf"
    cases = [
        (["ttt=cpu", "ttt.rank=4096"], "ttt.rank (4096) is larger than the model's width (model.model_dim 128)"),
        (["ttt=cpu", "ttt.chunk=0"], "ttt.chunk must be >= 1, got 0"),
        (["ttt=cpu", "ttt.prefix_docs=0"], "ttt.phases (2) needs ttt.prefix_docs >= ttt.phases, got 0"),
        ([f"data.dir={no_bos}", "ttt=cpu"], f"ttt=cpu needs BOS-separated documents, but the validation shards in "
                                            f"{no_bos} hold no BOS token (id 1)"),
    ]
    procs = run_pgolf_each([(["export", run_dir, *data, *args, "--out", out], cwd) for args, _ in cases]
                           + [(["eval", summary["artifact"], *data, "model.model_dim=512", "ttt=cpu", "ttt.rank=256"],
                               cwd)])
    for proc, (_, message) in zip(procs, cases):
        assert message in one_line_error(exited(proc, 1))
    assert not out.exists() and not out.with_suffix(".json").exists()
    # an artifact: the config says nothing of its width (512 here), the model does (128)
    assert "ttt.rank (256) is larger than the model's width (model.model_dim 128)" in one_line_error(
        exited(procs[-1], 1))

"""`pgolf eval --losses FILE.npy`: every scored token's loss, as a user reads it back with numpy."""

import json

import numpy as np
import pytest

from tests.e2e.conftest import exited, one_line_error, run_pgolf_each


@pytest.mark.slow
def test_eval_writes_every_scored_tokens_loss_in_validation_order(trained_run, builtin_data, tmp_path):
    cwd, summary, _ = trained_run
    data = [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]
    run_dir = summary["run_dir"]
    plain, with_losses, strided, bad = run_pgolf_each([
        (["eval", run_dir, *data, "data.val_tokens=4096", "--json"], cwd),
        (["eval", run_dir, *data, "data.val_tokens=4096", "--losses", tmp_path / "l.npy", "--json"], cwd),
        (["eval", run_dir, *data, "data.val_tokens=4096", "export.eval_stride=64", "--losses", tmp_path / "s.npy",
          "--json"], cwd),
        (["eval", run_dir, *data, "--losses", tmp_path / "l.txt"], cwd),
    ])
    scored = json.loads(exited(with_losses).stdout)
    assert scored["val_bpb"] == json.loads(exited(plain).stdout)["val_bpb"]  # keeping the losses changes no score
    losses = np.load(tmp_path / "l.npy", allow_pickle=False)
    assert losses.dtype == np.float32 and losses.shape == (scored["val_tokens"],)
    assert float(losses.astype(np.float64).mean()) == pytest.approx(scored["val_loss"], rel=1e-5)
    assert float(losses.astype(np.float64).sum()) / np.log(2) / scored["val_bytes"] == pytest.approx(
        scored["val_bpb"], rel=1e-5)
    windows = json.loads(exited(strided).stdout)
    longer = np.load(tmp_path / "s.npy", allow_pickle=False)
    assert longer.shape == losses.shape and float(longer.mean()) < float(losses.mean())  # more context per token
    assert one_line_error(exited(bad, 2)).endswith("must be a .npy file") and not (tmp_path / "l.txt").exists()
    assert windows["val_tokens"] == scored["val_tokens"]

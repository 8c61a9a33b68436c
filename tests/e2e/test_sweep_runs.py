"""`pgolf sweep` as a user runs it when a run does not go to plan: killed with SIGKILL, SIGTERM or Ctrl-C mid-training,
with a failing cell; and in parallel workers, locally and through submitit's local executor."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from .conftest import TINY, interruptible, results, run_pgolf, sweep_folder

pytestmark = pytest.mark.slow


def scores(frame):
    """The columns a resumed sweep must reproduce exactly (everything but timings)."""
    return frame[["cell", "point", "status", "model_bytes", "total_bytes", "val_bpb", "val_bpb_roundtrip", "steps"]]

def _wait_for(predicate, proc, what, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"the sweep ended before {what}: {proc.communicate()}"
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def _popen_sweep(cwd, args):
    return subprocess.Popen([sys.executable, "-m", "pgolf", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)


def _second_training_running(cwd):
    def check():
        root = cwd / "runs" / "sweeps"
        cells = sorted(root.glob("*/cells/*")) if root.exists() else []
        done = [c for c in cells if (c / "cell.json").is_file()]
        running = [c for c in cells if not (c / "cell.json").is_file() and (c / "metrics.jsonl").is_file()
                   and (c / "metrics.jsonl").stat().st_size > 0]
        return len(done) == 1 and len(running) == 1
    return check


def test_kill_9_mid_training_loses_no_finished_cell_and_the_rerun_matches(tmp_path, data_overrides):
    args = ["sweep", "reg.weight_decay=0,0.04", *data_overrides, "train.iterations=30", *TINY[1:]]
    killed = tmp_path / "killed"
    killed.mkdir()
    proc = _popen_sweep(killed, args)
    _wait_for(_second_training_running(killed), proc, "the second training")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    folder = sweep_folder(killed)
    first = next(c for c in (folder / "cells").iterdir() if (c / "cell.json").is_file())
    finished_at = (first / "cell.json").stat().st_mtime_ns
    assert len(results(folder)) == 1  # the finished cell was written before the kill
    rerun = run_pgolf(*args, cwd=killed, check_code=0)
    assert "1 finished before, 1 to run" in rerun.stderr
    assert (first / "cell.json").stat().st_mtime_ns == finished_at  # not redone
    clean = tmp_path / "clean"
    clean.mkdir()
    run_pgolf(*args, cwd=clean, check_code=0)
    pd.testing.assert_frame_equal(scores(results(folder)), scores(results(sweep_folder(clean))))


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_write_what_finished(tmp_path, data_overrides, sig, code):
    first_short = ["sweep", "train.iterations=12,100000", *data_overrides, *TINY[1:]]
    proc = _popen_sweep(tmp_path, first_short)
    _wait_for(_second_training_running(tmp_path), proc, "the second training")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "1 of 2 cells finished" in stderr.strip().splitlines()[-1] and "Traceback" not in stderr
    assert len(pd.read_csv(sweep_folder(tmp_path) / "results.csv")) == 1


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, data_overrides):
    proc = run_pgolf("sweep", "train.embed_lr=0.05,1e38", "reg.grad_clip=0", *data_overrides, *TINY, cwd=tmp_path,
                     check_code=0)
    frame = pd.read_csv(sweep_folder(tmp_path) / "results.csv")
    assert list(frame["status"]) == ["ok", "failed"]
    assert "loss became nan" in frame["error"][1] and "\n" not in frame["error"][1]
    assert frame["val_bpb_roundtrip"].isna()[1]
    ok_row = pd.read_csv(sweep_folder(tmp_path) / "results.csv", dtype=str).iloc[0]
    assert ok_row["params"].isdigit() and ok_row["total_bytes"].isdigit()  # a failed row does not make them floats
    assert "failed" in proc.stderr


@pytest.mark.parametrize("launcher", ["local", "submitit"])
def test_parallel_cells_locally_and_through_submitit(tmp_path, data_overrides, launcher):
    proc = run_pgolf("sweep", "reg.weight_decay=0,0.04", *data_overrides, *TINY, "--jobs", "2", "--launcher",
                     launcher, "--json", cwd=tmp_path, check_code=0)
    frame = results(sweep_folder(tmp_path))
    assert list(frame["status"]) == ["ok", "ok"] and list(frame["reg.weight_decay"]) == ["0", "0.04"]
    assert all((tmp_path / a).is_file() for a in frame["artifact"])
    assert len(json.loads(proc.stdout)) == 2

"""The multi-process path (torchrun + DDP) on CPU with gloo and two processes, as a user starts it."""

import json
import subprocess
import sys

import pytest

from .conftest import QUICK

pytestmark = pytest.mark.slow


def _torchrun(tmp_path, port: int, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "-m", "pgolf",
           "train", *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_torchrun_two_cpu_processes_train_and_score(tmp_path, data_overrides):
    proc = _torchrun(tmp_path, 29533, *data_overrides, *QUICK, "train.iterations=6", "train.val_every=3", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 6 and summary["stop_reason"] == "completed" and summary["world_size"] == 2
    runs = list((tmp_path / "runs").glob("*/*/summary.json"))
    assert len(runs) == 1  # only rank 0 writes a run directory
    log = (runs[0].parent / "train.log").read_text()
    assert f"weights agree on all 2 ranks (sha256 {summary['weights_sha256']})" in log


def test_a_world_size_that_does_not_divide_the_batch_is_one_line_and_writes_nothing(tmp_path, data_overrides):
    proc = _torchrun(tmp_path, 29534, *data_overrides, "train.batch_tokens=4352")  # 17 sequences of 256
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("must be a positive multiple of world_size * train.grad_accum * train.seq_len (2 * 1 * 256"
                          in line for line in errors), proc.stderr[-3000:]
    assert not (tmp_path / "runs").exists()

"""The multi-process path (torchrun + DDP) on CPU with gloo and two processes."""

import json
import subprocess
import sys

import pytest

from .conftest import QUICK

pytestmark = pytest.mark.slow


def test_torchrun_two_cpu_processes_train_and_score(tmp_path, data_overrides):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "pgolf",
           "train", *data_overrides, *QUICK, "train.iterations=6", "train.val_every=3", "--json"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 6 and summary["stop_reason"] == "completed"
    runs = list((tmp_path / "runs").glob("*/*/summary.json"))
    assert len(runs) == 1  # only rank 0 writes a run directory

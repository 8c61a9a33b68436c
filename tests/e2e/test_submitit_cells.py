"""Sweep cells as submitit jobs: a preempted cell is requeued and resumes from its checkpoint; a cell of
several processes trains through torchrun."""

import dataclasses
import json
import os
import signal
import time

import pytest

from pgolf.sweep.cells import cell_specs
from pgolf.sweep.launch import CellJob
from pgolf.sweep.plan import CELL_FILE, make_plan, prepare_folder

pytestmark = pytest.mark.slow


def _first_cell(tmp_path, data_overrides, iters: int, *extra: str):
    """The plan and spec of the first cell of a two-cell sweep (the grid needs an axis)."""
    plan = make_plan([*data_overrides, f"run.root={tmp_path / 'runs'}", f"train.iterations={iters}",
                      "train.log_every=1", "train.val_every=0", "data.val_tokens=16384", "reg.weight_decay=0,0.01",
                      *extra], name="cells")
    prepare_folder(plan)
    return plan, cell_specs(plan)[0]


def _submit(tmp_path, spec, procs_per_node: int = 1):
    submitit = pytest.importorskip("submitit")  # pgolf[submitit]; `make test` installs it
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="local")
    executor.update_parameters(timeout_min=10)
    return executor.submit(CellJob(), json.dumps(dataclasses.asdict(spec)), 1, 1, procs_per_node)


def test_a_preempted_cell_is_requeued_and_resumes_from_its_checkpoint(tmp_path, data_overrides):
    iters = 20
    plan, spec = _first_cell(tmp_path, data_overrides, iters, "train.checkpoint_every=3")
    job = _submit(tmp_path, spec)
    run_dir = plan.cell_dir(plan.cells[0])
    pointer = run_dir / "checkpoints" / "latest.json"
    deadline = time.time() + 180
    while not (pointer.is_file() and json.loads(pointer.read_text())["step"] >= 6):
        assert time.time() < deadline and not job.done(), "the cell never checkpointed"
        time.sleep(0.2)
    task = json.loads((run_dir / "state.json").read_text())["pid"]  # the job's task process, mid-training
    os.kill(task, signal.SIGUSR2)  # what Slurm sends a job it preempts (submitit's default USR2)
    assert job.result() == spec.run_dir
    rows = json.loads((run_dir / CELL_FILE).read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["steps"] == iters
    assert "resumed at step" in (run_dir / "train.log").read_text()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, iters + 1))


def test_a_cell_of_two_processes_trains_through_torchrun(tmp_path, data_overrides):
    plan, spec = _first_cell(tmp_path, data_overrides, 6)
    job = _submit(tmp_path, spec, procs_per_node=2)  # on CPU: two gloo ranks
    assert job.result() == spec.run_dir
    run_dir = plan.cell_dir(plan.cells[0])
    rows = json.loads((run_dir / CELL_FILE).read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["steps"] == 6
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and "weights agree on all 2 ranks" in (run_dir / "train.log").read_text()

"""Running a sweep's cells: in process, in a pool of spawned workers (torch threads = cores / jobs), or as
submitit jobs (local or Slurm, several processes through torchrun); results rewritten after every cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgolf.atomic import atomic_write_json
from pgolf.errors import Interrupted, PgolfError, Terminated, UsageError
from pgolf.progress import ProgressFn, no_progress
from pgolf.runtime.signals import StopSignals
from pgolf.sweep.cells import CellSpec, _failed_rows, cell_specs, run_cell
from pgolf.sweep.plan import CELL_FILE, Plan, prepare_folder, read_cell, write_results


@dataclass
class SweepOutcome:
    plan: Plan
    rows: list[dict[str, Any]]
    ran: list[str] = field(default_factory=list)
    """Cell ids run by this invocation (the others were finished before)."""
    wall_time_s: float = 0.0


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _worker_init(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    _set_threads(threads)


def _worker_run(spec_json: str) -> list[dict[str, Any]]:
    return run_cell(CellSpec(**json.loads(spec_json)))


class CellJob:
    """What a submitit job runs: one training cell, its rows read back from the cell folder afterwards.

    With several processes (nodes x processes per node) each node starts the training through torchrun. When
    the job is preempted or times out, submitit calls `checkpoint`: the job is requeued with the same arguments
    and `run_cell` resumes the training from the cell's newest checkpoint (`train.checkpoint_every`).
    """

    def __call__(self, spec_json: str, threads: int, nodes: int, procs_per_node: int) -> str:
        _set_threads(threads)
        spec = CellSpec(**json.loads(spec_json))
        if nodes * procs_per_node > 1:
            _torchrun_cell(spec, nodes, procs_per_node)
        else:
            run_cell(spec)
        return spec.run_dir

    def checkpoint(self, *args: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)


def _torchrun_cell(spec: CellSpec, nodes: int, procs_per_node: int) -> None:
    """This node's part of a multi-process cell: torchrun starts `procs_per_node` ranks of `python -m pgolf.sweep`."""
    import submitit

    env = submitit.JobEnvironment()
    spec_path = Path(spec.run_dir).with_name(f".{Path(spec.run_dir).name}.spec.json")
    atomic_write_json(spec_path, dataclasses.asdict(spec))
    port = 20000 + int(hashlib.sha256(spec.cell_id.encode()).hexdigest(), 16) % 20000
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc_per_node={procs_per_node}",
           f"--node_rank={env.node}", f"--master_addr={env.hostnames[0]}", f"--master_port={port}",
           "-m", "pgolf.sweep", str(spec_path)]
    proc = subprocess.run(cmd)
    if proc.returncode:
        raise PgolfError(f"torchrun of cell {spec.cell_id} exited with {proc.returncode} (see its job log)")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_sweep(plan: Plan, jobs: int = 1, launcher: str = "local", retry_failed: bool = False,
              progress: ProgressFn = no_progress, echo: Callable[[str], None] = print) -> SweepOutcome:
    """Run every unfinished cell of `plan`, writing results after each; Ctrl-C/SIGTERM write what finished."""
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if launcher not in ("local", "submitit"):
        raise UsageError(f"--launcher must be local or submitit, got {launcher!r}")
    if launcher == "submitit":
        _require_submitit()
    started = time.perf_counter()
    prepare_folder(plan)
    specs = cell_specs(plan)
    done: dict[str, list[dict[str, Any]]] = {}
    for cell, spec in zip(plan.cells, specs, strict=True):
        rows = read_cell(plan, cell)
        if rows is not None and not (retry_failed and any(r["status"] == "failed" for r in rows)):
            done[spec.cell_id] = rows
    todo = [s for s in specs if s.cell_id not in done]
    if retry_failed:
        for spec in todo:
            (Path(spec.run_dir) / CELL_FILE).unlink(missing_ok=True)
    outcome = SweepOutcome(plan=plan, rows=[])
    echo(f"sweep {plan.folder}: {len(plan.cells)} trainings x {plan.rows_per_cell()} rows; "
         f"{len(done)} finished before, {len(todo)} to run")

    def finished(spec: CellSpec, rows: list[dict[str, Any]]) -> None:
        done[spec.cell_id] = rows
        outcome.ran.append(spec.cell_id)
        write_results(plan, _ordered(specs, done))
        parts = [f"{r['point']} {r['val_bpb_roundtrip']:.4f}" if r["status"] == "ok" else f"{r['point']} failed"
                 for r in rows]
        failed = next((r["error"] for r in rows if r["status"] == "failed"), "")
        echo(f"[{len(done)}/{len(specs)}] {spec.cell_id}: {', '.join(parts)}" + (f" ({failed})" if failed else ""))
        progress("sweep", len(done), len(specs))

    progress("sweep", len(done), len(specs))
    with StopSignals() as signals:
        try:
            if todo and launcher == "submitit":
                _run_submitit(plan, todo, jobs, finished)
            elif todo and jobs > 1:
                _run_pool(todo, jobs, finished)
            else:
                for spec in todo:
                    finished(spec, run_cell(spec, progress=progress))
        except (KeyboardInterrupt, Interrupted) as exc:
            write_results(plan, _ordered(specs, done))
            what = f"{len(done)} of {len(specs)} cells finished and written to {plan.folder / 'results.csv'}"
            if signals.reason == "terminated" or isinstance(exc, Terminated):
                raise Terminated(f"terminated; {what}") from exc
            raise Interrupted(f"interrupted; {what}") from exc
    write_results(plan, _ordered(specs, done))
    outcome.rows = _ordered(specs, done)
    outcome.wall_time_s = time.perf_counter() - started
    return outcome


def _ordered(specs: list[CellSpec], done: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for spec in specs if spec.cell_id in done for row in done[spec.cell_id]]


def _run_pool(todo: list[CellSpec], jobs: int, finished: Callable) -> None:
    """`jobs` spawned workers (torch threads = cores / jobs), results handled as each cell ends."""
    threads = max(1, _cores() // jobs)
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(processes=jobs, initializer=_worker_init, initargs=(threads,))
    try:
        pending = {pool.apply_async(_worker_run, (json.dumps(dataclasses.asdict(s)),)): s for s in todo}
        while pending:
            ready = [r for r in pending if r.ready()]
            for result in ready:
                spec = pending.pop(result)
                finished(spec, result.get())
            if not ready:
                time.sleep(0.2)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _require_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError as exc:
        raise UsageError("--launcher submitit needs submitit: pip install 'pgolf[submitit]'") from exc


def _run_submitit(plan: Plan, todo: list[CellSpec], jobs: int, finished: Callable) -> None:
    """Each training cell a submitit job (launcher config group), at most `jobs` in flight; rows read back from
    each cell's cell.json as its job ends."""
    import submitit

    lc = plan.base_config.launcher
    executor = submitit.AutoExecutor(folder=plan.folder / "submitit", cluster=lc.cluster)
    procs = max(1, lc.gpus_per_node)  # training processes per node, started by torchrun (one task per node)
    params: dict[str, Any] = {"timeout_min": lc.timeout_min, "nodes": lc.nodes, "tasks_per_node": 1,
                              "cpus_per_task": lc.cpus_per_task * procs, "name": f"pgolf-{plan.name}"}
    if lc.gpus_per_node:
        params["gpus_per_node"] = lc.gpus_per_node
    if lc.cluster == "slurm" and lc.partition:
        params["slurm_partition"] = lc.partition
    executor.update_parameters(**params)
    threads = max(1, _cores() // jobs) if lc.cluster == "local" else lc.cpus_per_task
    queue, running = list(todo), {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                spec = queue.pop(0)
                running[executor.submit(CellJob(), json.dumps(dataclasses.asdict(spec)), threads, lc.nodes,
                                        procs)] = spec
            ended = [job for job in running if job.done()]
            for job in ended:
                spec = running.pop(job)
                finished(spec, _submitit_rows(job, spec))
            if not ended:
                time.sleep(0.5)
    finally:
        for job in running:
            job.cancel(check=False)


def _submitit_rows(job: Any, spec: CellSpec) -> list[dict[str, Any]]:
    """The cell's rows from its folder; a job that died before writing them is a failed cell."""
    path = Path(spec.run_dir) / CELL_FILE
    if path.is_file():
        return json.loads(path.read_text())["rows"]
    try:
        job.result()
        error = f"job {job.job_id} ended without writing {path}"
    except Exception as exc:
        error = f"job {job.job_id} failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}"
    rows = _failed_rows(spec, error)
    atomic_write_json(path, {"cell": spec.cell_id, "overrides": spec.overrides, "seconds": 0.0, "rows": rows})
    return rows

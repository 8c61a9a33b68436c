"""launch.py: `--jobs N` runs cells in N spawned workers with torch threads = max(1, cores // N), SIGINT ignored."""

import signal

import pytest
import torch

from pgolf.sweep import launch
from pgolf.sweep.cells import CellSpec


def _spec(i):
    return CellSpec(cell_id=f"c{i}", run_dir=f"/nonexistent/c{i}", seed=i, overrides=[], values={}, points=[],
                    max_bytes=None, margin=0, budget_bytes=16_000_000)


def threads_in_worker(spec_json):
    """Stands in for `_worker_run` in the spawned workers (found there by import, like the real one)."""
    return [{"threads": torch.get_num_threads(), "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN}]


def test_jobs_n_workers_run_with_cores_over_n_torch_threads(monkeypatch):
    monkeypatch.setattr(launch, "_cores", lambda: 6)
    monkeypatch.setattr(launch, "_worker_run", threads_in_worker)
    got = {}
    launch._run_pool([_spec(0), _spec(1)], 2, lambda spec, rows: got.update({spec.cell_id: rows[0]}))
    # 6 // 2; the workers inherit OMP_NUM_THREADS, so torch's own default there would not be 3
    assert got == {"c0": {"threads": 3, "sigint_ignored": True}, "c1": {"threads": 3, "sigint_ignored": True}}


class _Stop(Exception):
    pass


@pytest.mark.parametrize("cores, jobs, threads", [(8, 2, 4), (7, 2, 3), (16, 3, 5), (2, 4, 1), (1, 1, 1)])
def test_the_pool_initialiser_gets_max_1_cores_over_jobs(monkeypatch, cores, jobs, threads):
    seen = {}

    class Context:
        def Pool(self, processes, initializer, initargs):  # noqa: N802 (multiprocessing's name)
            seen.update(processes=processes, initializer=initializer, initargs=initargs)
            raise _Stop

    monkeypatch.setattr(launch, "_cores", lambda: cores)
    monkeypatch.setattr(launch.multiprocessing, "get_context", lambda method: Context())
    with pytest.raises(_Stop):
        launch._run_pool([_spec(0)], jobs, lambda spec, rows: None)
    assert seen == {"processes": jobs, "initializer": launch._worker_init, "initargs": (threads,)}


def test_the_worker_initialiser_sets_torch_threads_and_ignores_ctrl_c(monkeypatch):
    before = torch.get_num_threads()
    previous = signal.getsignal(signal.SIGINT)
    try:
        launch._worker_init(before + 2)
        assert torch.get_num_threads() == before + 2
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        torch.set_num_threads(before)
        signal.signal(signal.SIGINT, previous)

"""Two gloo processes against one: the same training, agreed stops, identical replicas.

Two spawned ranks run every case in turn, in one process group, calling `train_model` directly (as `pgolf
train` under torchrun does). With either sampling mode 2 ranks x 1 micro-batch read exactly the tokens of
1 process x 2 micro-batches. Rank 0 writes the metrics; every rank writes its result (or the TrainingError
it raised) for the tests to check.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pgolf.config import compose
from pgolf.data.loader import TrainBatches
from pgolf.errors import TrainingError
from pgolf.jobs.layout import MetricsLog
from pgolf.jobs.models import build_model
from pgolf.runtime.device import resolve_device
from pgolf.runtime.distributed import DistInfo
from pgolf.train.loop import NullMetrics, train_model

from .conftest import VOCAB, SignalAfter

ITERS = 12
BASE = ["model.num_layers=2", "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1",
        f"model.vocab_size={VOCAB}", "train.seq_len=64", "train.batch_tokens=2048", f"train.iterations={ITERS}",
        "train.warmup_steps=0", "train.lr_warmup_steps=0", "train.warmdown_steps=4", "train.val_every=0",
        "train.log_every=1", "train.sampling=stream", "reg=none", "device=cpu", "train.wallclock_s=0"]


class _FastClock:
    """A clock that runs `rate` times faster than perf_counter (a rank whose clock drifts)."""

    def __init__(self, rate: float) -> None:
        self.rate, self.start = rate, time.perf_counter()

    def __call__(self) -> float:
        return self.start + (time.perf_counter() - self.start) * self.rate


class _PerturbAtStep:
    """Batches that, when asked for step `step`'s first micro-batch, nudge one weight of `model` in place: a
    replica that drifts from the others (DDP averages gradients, never weights, so the difference stays)."""

    def __init__(self, batches: TrainBatches, model: torch.nn.Module, step: int) -> None:
        self.batches, self.model, self.step, self.calls = batches, model, step, 0
        self.local_tokens = batches.local_tokens

    def next_batch(self):
        self.calls += 1
        if self.calls == self.step:
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] += 1e-3
        return self.batches.next_batch()

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)


def _train(cfg, files, val_data, rank: int, world: int, out: Path, clock=time.perf_counter, signals=None,
           perturb_at: int = 0) -> None:
    torch.manual_seed(cfg.seed + rank)  # as start_training seeds; DDP then broadcasts rank 0's weights
    model = build_model(cfg)
    batches = TrainBatches(files, cfg.train.batch_tokens, cfg.train.seq_len, cfg.train.grad_accum, rank=rank,
                           world_size=world, sampling=cfg.train.sampling, seed=cfg.seed)
    if perturb_at:
        batches = _PerturbAtStep(batches, model, perturb_at)
    info = DistInfo(rank=rank, world_size=world)
    metrics = MetricsLog(out / "metrics.jsonl") if rank == 0 else NullMetrics()
    try:
        result = train_model(cfg, model, batches, *val_data, resolve_device("cpu"), info, metrics, lambda _m: None,
                             clock=clock, signals=signals)
    except TrainingError as exc:
        torch.save({"error": str(exc)}, out / f"rank{rank}.pt")
        return
    finally:
        metrics.close()
    torch.save({"state": result.state_dict, "steps": result.steps, "stop_reason": result.stop_reason,
                "checksum": result.checksum, "train_time_s": result.train_time_s}, out / f"rank{rank}.pt")


FROZEN = ["train.matrix_lr=0", "train.embed_lr=0", "train.scalar_lr=0", "train.val_every=3", "train.val_tokens=1024"]
CASES = {  # case -> (every rank's overrides, rank 1's extra overrides)
    "stream": (BASE, []),
    "random": ([*BASE, "train.sampling=random"], []),
    "skew": ([*BASE, "train.iterations=1000", "train.wallclock_s=500"], []),  # rank 1's clock runs 1000x fast
    "signal": (BASE, []),  # SIGTERM reaches rank 1 alone, at its 4th step
    "drift": (BASE, []),  # rank 1 nudges a weight of its own at the last step
    # Frozen weights: val_bpb is the same at every validation (steps 3, 6, 9), so rank 0 (patience 1) stops at
    # step 6; rank 1 (patience 5) would not stop by itself before step 12 and must follow rank 0's decision.
    "early_stop": ([*BASE, *FROZEN, "reg.early_stop_patience=1"], ["reg.early_stop_patience=5"]),
}


def _rank_main(rank: int, world: int, init_file: str, files: list[str], val_data, out: str) -> None:
    """One rank: every case in turn, in one process group."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for case, (overrides, rank1_extra) in CASES.items():
            clock = _FastClock(1000.0) if case == "skew" and rank == 1 else time.perf_counter
            signals = SignalAfter(4) if case == "signal" and rank == 1 else None
            perturb_at = ITERS if case == "drift" and rank == 1 else 0
            folder = Path(out) / case
            folder.mkdir(exist_ok=True)
            cfg = compose([*overrides, *(rank1_extra if rank == 1 else [])])
            _train(cfg, [Path(f) for f in files], val_data, rank, world, folder, clock, signals, perturb_at)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, corpus, val_data) -> dict[str, list[dict]]:
    """Every case on 2 spawned ranks: case -> each rank's result. Fails (not hangs) if the ranks do not finish:
    a rank that stopped alone would leave the other waiting in a collective."""
    out, world, timeout_s = tmp_path_factory.mktemp("ranks"), 2, 180
    ctx = mp.start_processes(_rank_main, args=(world, str(out / "init"), [str(f) for f in corpus.train_files],
                                               val_data, str(out)), nprocs=world, join=False, start_method="spawn")
    deadline = time.time() + timeout_s
    while not ctx.join(timeout=1):
        if time.time() > deadline:
            for process in ctx.processes:
                process.kill()
            pytest.fail(f"ranks did not finish in {timeout_s} s (a rank left the others waiting in a collective)")
    return {case: [torch.load(out / case / f"rank{r}.pt", weights_only=True) | {"dir": out / case}
                   for r in range(world)] for case in CASES}


def _losses(folder: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("sampling", ["stream", "random"])
def test_two_ranks_train_like_one_process_with_two_micro_batches(tmp_path, corpus, val_data, ranks, sampling):
    overrides, _ = CASES[sampling]
    ranks = ranks[sampling]
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    _train(compose([*overrides, "train.grad_accum=2"]), corpus.train_files, val_data, 0, 1, single_dir)
    single = torch.load(single_dir / "rank0.pt", weights_only=True)
    two, one = _losses(ranks[0]["dir"]), _losses(single_dir)
    assert len(two) == len(one) == ITERS
    loss_diff = max(abs(a - b) for a, b in zip(two, one))
    weight_diff = max(float((ranks[0]["state"][k] - v).abs().max()) for k, v in single["state"].items())
    print(f"{sampling}, 1 vs 2 processes: max per-step loss difference {loss_diff:.3g}, "
          f"max weight difference {weight_diff:.3g}")
    # Exactly equal, not merely close: both read the same windows (the stream's spans, or one draw of the step's
    # random windows split into the same blocks), each rank's half-batch mean loss and gradient are computed
    # exactly as one process computes a micro-batch's, and the two are combined as (a + b) / 2 by DDP (gloo sum,
    # then / 2) and as a / 2 + b / 2 by gradient accumulation, which are the same float for two terms (halving is
    # exact).
    assert loss_diff == 0 and weight_diff == 0
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # every replica ends with the same weights, bit for bit
    assert all(torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]) for k in single["state"])


def test_a_rank_whose_clock_runs_past_the_cap_stops_every_rank_at_the_same_step(ranks):
    ranks = ranks["skew"]
    assert [r["stop_reason"] for r in ranks] == ["wallclock", "wallclock"]
    assert ranks[0]["steps"] == ranks[1]["steps"] < 1000  # rank 1's clock stopped both, long before 1000 steps
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # and the schedule read the same elapsed time on both


def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step(ranks):
    ranks = ranks["signal"]
    assert [r["stop_reason"] for r in ranks] == ["terminated", "terminated"]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4
    assert ranks[0]["checksum"] == ranks[1]["checksum"]


def test_a_replica_that_drifted_ends_training_with_an_error_on_every_rank(ranks):
    ranks = ranks["drift"]
    for result in ranks:
        assert "error" in result, "training ended normally although rank 1 held other weights"
        match = re.fullmatch(r"ranks ended with different weights \(checksums by rank: (\w{16}), (\w{16})\)",
                             result["error"])
        assert match and match.group(1) != match.group(2), result["error"]
    assert ranks[0]["error"] == ranks[1]["error"]  # both ranks saw both checksums


def test_rank_0s_early_stop_stops_every_rank_at_the_same_step(ranks):
    ranks = ranks["early_stop"]
    assert [r["stop_reason"] for r in ranks] == ["early_stop", "early_stop"]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 6  # the second validation, no better than the first
    assert ranks[0]["checksum"] == ranks[1]["checksum"]


def test_ranks_holding_different_weights_is_an_error(tmp_path):
    from pgolf.runtime.distributed import check_replicas_agree, weights_checksum

    state = {"w": torch.ones(3)}
    assert check_replicas_agree(state, DistInfo()) == weights_checksum(state)
    assert weights_checksum({"w": torch.tensor([1.0, 1.0, 1.0 + 1e-7])}) != weights_checksum(state)

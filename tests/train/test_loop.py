"""The regularizer stack wired into `train_model`: each knob changes what training returns or logs.

Every test trains a 2-layer, 64-wide GPT for a few dozen 1,024-token steps on a
small synthetic corpus prepared once per module (vocab 300). Runs are cached
by their overrides, so tests that compare against the plain run share it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import pytest
import torch

from pgolf.config import compose
from pgolf.data.loader import TrainBatches
from pgolf.errors import TrainingError
from pgolf.evaluate import evaluate_bpb
from pgolf.jobs.layout import MetricsLog
from pgolf.jobs.models import build_model
from pgolf.runtime.device import resolve_device
from pgolf.runtime.distributed import DistInfo
from pgolf.train import averaging
from pgolf.train.loop import TrainResult, train_model
from pgolf.train.optim import OptimizerSet
from pgolf.train.qat import fake_quantize_rows
from pgolf.train.regularizers import param_group

VOCAB = 300
ITERS = 30
TINY = ["model.num_layers=2", "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1",
        f"model.vocab_size={VOCAB}", "train.seq_len=64", "train.batch_tokens=1024", f"train.iterations={ITERS}",
        "train.warmup_steps=0", "train.lr_warmup_steps=0", "train.warmdown_steps=10", "train.val_every=10",
        "train.val_tokens=2048", "train.log_every=5", "reg=none", "device=cpu"]


@dataclass
class Trained:
    result: TrainResult
    model: torch.nn.Module
    records: list[dict]
    log: list[str]


@pytest.fixture(scope="module")
def train(corpus, val_data, tmp_path_factory):
    """train(*overrides) -> Trained; identical overrides train once per module."""
    cache: dict[tuple[str, ...], Trained] = {}

    def run(*overrides: str) -> Trained:
        if overrides not in cache:
            cfg = compose([*TINY, *overrides])
            torch.manual_seed(cfg.seed)
            model = build_model(cfg)
            batches = TrainBatches(corpus.train_files, cfg.train.batch_tokens, cfg.train.seq_len, cfg.train.grad_accum,
                                   sampling=cfg.train.sampling, seed=cfg.seed)
            path = tmp_path_factory.mktemp("run") / "metrics.jsonl"
            metrics = MetricsLog(path)
            lines: list[str] = []
            try:
                result = train_model(cfg, model, batches, *val_data, resolve_device("cpu"), DistInfo(), metrics,
                                     log=lines.append)
            finally:
                metrics.close()
            records = [json.loads(line) for line in path.read_text().splitlines()]
            cache[overrides] = Trained(result, model, records, lines)
        return cache[overrides]

    return run


def baseline_keys() -> set[str]:
    return set(build_model(compose(TINY)).state_dict())


def matrices(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: w for name, w in state.items() if param_group(name, w) == "matrix"}


def val_loss(state: dict[str, torch.Tensor], val_data, quant_bits: int = 0) -> float:
    """Validation loss of `state`, with its block matrices row-quantized to `quant_bits` first (0 = float)."""
    model = build_model(compose(TINY))
    if quant_bits:
        state = {k: fake_quantize_rows(w, quant_bits) if k in matrices(state) else w for k, w in state.items()}
    model.load_state_dict(state)
    tokens, luts = val_data
    return evaluate_bpb(model, tokens, luts, 64).loss


def test_plain_run_returns_baseline_keys_and_logs_train_and_val(train):
    run = train()
    assert run.result.stop_reason == "completed" and run.result.steps == ITERS
    assert set(run.result.state_dict) == baseline_keys()
    assert all(torch.equal(w, run.model.state_dict()[k]) for k, w in run.result.state_dict.items())
    assert [r["step"] for r in run.records if "train_loss" in r] == list(range(5, ITERS + 1, 5))
    assert [r["step"] for r in run.records if "val_bpb" in r] == [10, 20]


def test_ema_weights_are_returned_not_the_live_ones(train, monkeypatch):
    made, make = [], averaging.make_weight_average

    def capture(cfg):
        made.append(make(cfg))
        return made[-1]

    monkeypatch.setattr(averaging, "make_weight_average", capture)  # loop imports it when EMA is on
    run = train("reg.ema_decay=0.9")
    (ema,) = made
    assert ema.n_averaged == ITERS
    live = run.model.state_dict()
    assert set(run.result.state_dict) == set(live)
    for name, w in matrices(run.result.state_dict).items():
        assert torch.equal(w, ema.averaged[name]), name
        assert not torch.allclose(w, live[name]), name


@pytest.mark.parametrize("extra", [(), ("reg.ema_decay=0.9",)], ids=["live", "ema"])
def test_gradual_pruning_returns_matrices_at_the_target_sparsity(train, extra):
    run = train("reg.prune_sparsity=0.5", "reg.prune_start=0.3", *extra)
    mats = matrices(run.result.state_dict)
    assert mats
    for name, w in mats.items():
        assert (w == 0).float().mean() >= 0.5, name
    assert run.result.diagnostics["matrix"]["zero_frac"] >= 0.5
    assert run.result.diagnostics["embed"]["zero_frac"] == 0  # only the block matrices are pruned
    assert (train().result.state_dict["blocks.0.mlp.fc.weight"] == 0).float().mean() < 0.01  # not by training alone


def test_qat_switches_on_at_qat_start_and_shrinks_the_round_trip_error(train, val_data):
    run = train("reg.qat_bits=4", "reg.qat_start=0.5")
    assert run.result.stop_reason == "completed"
    assert set(run.result.state_dict) == baseline_keys()  # parametrizations removed
    active = {r["step"]: r["qat_active"] for r in run.records if "qat_active" in r}
    assert active == {step: step > ITERS // 2 for step in range(5, ITERS + 1, 5)}

    def round_trip_error(state):
        return val_loss(state, val_data, quant_bits=4) - val_loss(state, val_data)

    assert round_trip_error(run.result.state_dict) < round_trip_error(train().result.state_dict)


def test_penalties_are_logged_beside_the_cross_entropy(train):
    run = train("reg.z_loss=1e-4", "reg.l2=1e-4")
    logged = [r for r in run.records if "train_loss" in r]
    assert logged
    for record in logged:
        assert record["pen_z_loss"] > 0 and record["pen_l2"] > 0 and math.isfinite(record["train_loss"])
    assert not any(key.startswith("pen_") for r in train().records for key in r)


def test_early_stopping_stops_when_val_bpb_cannot_improve(train):
    run = train("reg.early_stop_patience=1", "train.val_every=5", "train.matrix_lr=0", "train.embed_lr=0",
                "train.scalar_lr=0")
    assert run.result.stop_reason == "early_stop"
    assert run.result.steps == 10  # best at the first check (step 5), no better at the second
    assert any("early stopping at step 10" in line for line in run.log)


def test_an_average_that_never_started_is_said_not_silently_skipped(train):
    frozen = ("reg.early_stop_patience=1", "train.val_every=5", "train.matrix_lr=0", "train.embed_lr=0",
              "train.scalar_lr=0")
    run = train(*frozen, "reg.swa_start=0.9")  # stops at step 10, SWA would start at step 27
    assert run.result.stop_reason == "early_stop"
    assert any(line.startswith("SWA never averaged") for line in run.log)
    assert all(torch.equal(w, run.model.state_dict()[k]) for k, w in run.result.state_dict.items())


@pytest.mark.parametrize("extra", [(), ("reg.qat_bits=4", "reg.qat_start=0", "train.val_every=1")],
                         ids=["plain", "qat-validating-every-step"])
def test_nan_loss_stops_names_the_step_and_keeps_finite_weights(train, extra):
    run = train("train.embed_lr=1e37", "train.scalar_lr=1e37", "reg.grad_clip=0", *extra)
    result = run.result
    assert result.stop_reason == "nan" and result.steps < ITERS
    match = re.search(r"loss became (nan|inf|-inf) at step (\d+); kept the weights from step (\d+)", result.error)
    assert match, result.error
    bad, kept = int(match.group(2)), int(match.group(3))
    # The loss of step `bad` is that of the weights after step bad - 1: kept are the last check step's before those.
    assert kept == result.steps <= bad - 2 or kept == result.steps == 0
    checked_every = 1 if extra else 5  # val_every=1, else log_every=5: found at the next check step
    assert bad - kept <= checked_every + 1
    assert result.error in run.log
    assert set(result.state_dict) == baseline_keys()
    assert all(torch.isfinite(w).all() for w in result.state_dict.values())


def test_a_failing_optimizer_step_is_a_training_error_naming_it_not_a_nan_stop(train, monkeypatch):
    calls = []

    def step(self):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail on a second line")
        for opt in self.all:
            opt.step()

    monkeypatch.setattr(OptimizerSet, "step", step)
    with pytest.raises(TrainingError) as info:
        train("train.iterations=5")
    message = str(info.value)
    assert message == ("optimizer step failed at step 3: RuntimeError: CUDA out of memory. "
                       "Tried to allocate 2.00 GiB")
    assert "overflow" not in message and "nan" not in message.lower()
    assert isinstance(info.value.__cause__, RuntimeError)


def test_random_sampling_trains_on_other_windows_reproducibly(train):
    stream, random_windows = train("train.sampling=stream"), train("train.sampling=random")
    again = train("train.sampling=random", f"seed={compose(TINY).seed}")  # a separate run, the same config
    losses = [[r["train_loss"] for r in run.records if "train_loss" in r] for run in (stream, random_windows, again)]
    assert losses[0] != losses[1] and losses[1] == losses[2]
    weights = random_windows.result.state_dict
    assert all(torch.equal(weights[k], again.result.state_dict[k]) for k in weights)


def test_cpu_defaults_sample_random_windows_and_gpu_presets_keep_the_stream():
    assert compose([]).train.sampling == "random"
    assert compose(["train=h100_10min"]).train.sampling == "stream"


def test_weight_decay_shrinks_block_matrices(train):
    plain, decayed = train(), train("reg.weight_decay=0.5")
    assert decayed.result.diagnostics["matrix"]["rms"] < 0.9 * plain.result.diagnostics["matrix"]["rms"]
    assert any(line.startswith("decay matrix: wd 0.5") for line in decayed.log)


def test_no_decay_parameters_are_untouched_by_decay(train):
    """Every scalar is in the default `no_decay`: a huge scalar decay leaves the whole run bit-identical."""
    plain, excluded = train(), train("reg.scalar_weight_decay=10")
    for name, w in plain.result.state_dict.items():
        assert torch.equal(w, excluded.result.state_dict[name]), name
    assert any(line.startswith("no decay:") and "q_gain" in line for line in excluded.log)
    decayed = train("reg.scalar_weight_decay=10", "reg.no_decay=[]")  # same decay, nothing excluded
    attn_scale = "blocks.0.attn_scale"
    assert (decayed.result.state_dict[attn_scale].norm() < 0.1 * plain.result.state_dict[attn_scale].norm())


def test_diagnostics_per_group_in_the_result_and_at_each_validation(train):
    run = train()
    fields = {"rms", "zero_frac", "near_zero_frac", "entropy_bits"}
    assert set(run.result.diagnostics) == {"matrix", "embed", "scalar"}
    for stats in run.result.diagnostics.values():
        assert fields <= set(stats)
        assert 0 <= stats["zero_frac"] <= stats["near_zero_frac"] <= 1 and stats["rms"] > 0
    validations = [r for r in run.records if "val_bpb" in r]
    assert validations and all(fields <= set(r["diagnostics"]["matrix"]) for r in validations)

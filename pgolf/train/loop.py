"""The training loop: reference optimizer split, schedules and the regularizer stack.

One step = `grad_accum` micro-batches per rank, then clipping, the optimizer
steps, decoupled decay (scheduled), the L1 proximal step, pruning masks and
weight averaging. Validation every `train.val_every` steps on a capped slice of
the validation set. Non-standard pieces:
- The host never waits for the device except at check steps (log,
  validation, checkpoint and the last step): the loss and its finiteness stay
  on the device in between. Each step the ranks agree (one host all-reduce,
  distributed.agree_max) on the elapsed training time, which drives the
  wallclock stop and every schedule (warmdown, QAT, EMA/SWA, pruning), and on
  a stop request from a signal: all ranks stop at the same step.
- Training time excludes validation and checkpoint writing, as the reference
  excludes validation.
- `train.warmup_steps` steps run first and are then undone (model, optimizer
  and data position restored, as the reference does): they only warm kernels
  and torch.compile.
- A NaN/inf loss is found at the next check step: training stops with the
  weights of the last check step whose loss was finite (kept on the device,
  under plain parameter names so they stay baseline-compatible while QAT is
  on), and the error names the first bad step.
- Any other failure of the optimizer step (a RuntimeError such as CUDA out of
  memory) is not a NaN stop: it is logged and raised as a TrainingError that
  names the exception and the step; out of memory in the forward/backward is
  one too, saying which knob to turn.
- With a `signals` object (signals.StopSignals), Ctrl-C and SIGTERM stop after
  the current step, agreed across ranks; with a `checkpoints` store
  (checkpoints.CheckpointStore) every `train.checkpoint_every` steps and such a
  stop write a checkpoint, and `resume=True` continues from the newest one.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from pgolf.data.loader import TrainBatches
from pgolf.data.tokenizer import ByteLUTs
from pgolf.errors import TrainingError
from pgolf.evaluate import evaluate_bpb
from pgolf.model.gpt import GPT
from pgolf.progress import ProgressFn, no_progress
from pgolf.runtime.device import DeviceSetup, autocast, maybe_compile
from pgolf.runtime.distributed import (
    DistInfo,
    agree_max,
    all_reduce_mean,
    broadcast_flag,
    check_replicas_agree,
    wrap_ddp,
)
from pgolf.schema import Config
from pgolf.train import regularizers as R
from pgolf.train.diagnostics import weight_diagnostics
from pgolf.train.optim import build_optimizers, lr_multiplier, muon_momentum_at, training_fraction
from pgolf.train.qat import enable_qat, plain_state_dict

STOP_REASONS = {1.0: "interrupted", 2.0: "terminated"}
"""Signal stop requests as agreed over ranks (the larger wins)."""
_REQUESTS = {"": 0.0, **{reason: flag for flag, reason in STOP_REASONS.items()}}


class Metrics(Protocol):
    """Where the loop writes its metrics records (a run's metrics.jsonl, or nothing)."""

    def write(self, **record: Any) -> None: ...


class NullMetrics:
    """A metrics log that keeps nothing (non-main ranks, the shipped script)."""

    def write(self, **record: Any) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    """Final float weights (averaged when EMA/SWA is on), baseline-compatible keys."""
    steps: int
    train_time_s: float
    tokens_per_s: float
    stop_reason: str
    """completed, wallclock, early_stop, interrupted (Ctrl-C), terminated (SIGTERM) or nan (a non-finite loss)."""
    last_val: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str = ""
    checksum: str = ""
    """sha256 prefix of the final weights, the same on every rank (checked)."""


def train_model(cfg: Config, model: GPT, batches: TrainBatches, val_tokens: torch.Tensor, luts: ByteLUTs,
                setup: DeviceSetup, dist_info: DistInfo, metrics: Metrics,
                log: Callable[[str], None] = print, progress: ProgressFn = no_progress, signals: Any = None,
                checkpoints: Any = None, resume: bool = False,
                clock: Callable[[], float] = time.perf_counter) -> TrainResult:
    """Train `model` in place; return the weights to save and how training ended.

    `clock` is the time source each rank reads (a test skews one rank's).
    """
    t, r = cfg.train, cfg.reg
    device = setup.device
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    R.check_no_decay_names(named, r)
    groups = R.param_groups(named, r)
    for line in R.describe_decay(groups, r):
        log(line)
    opts = build_optimizers(groups, t, tied=cfg.model.tie_embeddings, fused=device.type == "cuda")
    base_lr = {"matrix": t.matrix_lr, "embed": t.embed_lr, "scalar": t.scalar_lr}
    untied_head = not cfg.model.tie_embeddings
    decays: dict[tuple[float, float], list[torch.Tensor]] = {}  # (base LR, wd) -> params
    for role, params in groups.items():
        for n, p in params:
            lr = t.head_lr if untied_head and n.startswith("lm_head") else base_lr[role]
            wd = R.decay_for(n, role, r)
            if wd > 0:
                decays.setdefault((lr, wd), []).append(p)
    matrices = groups.get("matrix", [])
    qat = enable_qat(model, r.qat_bits, [n for n, _ in matrices]) if r.qat_bits else None
    pruner = _gradual_pruner(matrices, r)
    averager = _weight_average(r)
    penalties = _penalty_terms(r)
    stopper = R.EarlyStopping(r.early_stop_patience) if r.early_stop_patience else None
    gap = R.GapMonitor(r.gap_warn)
    train_model_fn = wrap_ddp(maybe_compile(model, setup), dist_info, device)
    tokens_per_step = t.batch_tokens
    parts = {"model": model, "opts": opts, "batches": batches, "averager": averager, "pruner": pruner,
             "stopper": stopper, "gap": gap}

    def one_step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward/backward over `grad_accum` micro-batches; the mean CE and penalties (on the device)."""
        ce_total = torch.zeros((), device=device)
        pens_total: dict[str, torch.Tensor] = {}
        for micro in range(t.grad_accum):
            x, y = batches.next_batch()
            sync = micro == t.grad_accum - 1 or not dist_info.enabled
            with train_model_fn.no_sync() if not sync else contextlib.nullcontext():
                with autocast(setup):
                    logits = train_model_fn(x)  # (B, T, V)
                ce = R.cross_entropy(logits, y, r.label_smoothing)
                pens = penalties(named, logits, r, cfg.export.bits) if penalties else {}
                loss = ce + sum(pens.values(), torch.zeros((), device=device))
                (loss / t.grad_accum).backward()
            ce_total += ce.detach() / t.grad_accum
            for k, v in pens.items():
                pens_total[k] = pens_total.get(k, 0) + v.detach() / t.grad_accum
        return ce_total, pens_total

    # Warmup steps warm kernels / compile, then everything is restored, the data position too.
    if t.warmup_steps > 0:
        saved = copy.deepcopy(model.state_dict()), copy.deepcopy(opts.state_dict()), batches.state_dict()
        for i in range(t.warmup_steps):
            if cfg.model.recur_passes > 1:
                model.set_looping(bool(i % 2))  # compile both graphs now, not at the switch
            one_step()
            opts.step()
            opts.zero_grad()
        model.load_state_dict(saved[0])
        opts.load_state_dict(saved[1])
        batches.load_state_dict(saved[2])
        opts.zero_grad()

    step, done_s, last_val = 0, 0.0, {}
    if resume:
        restored = checkpoints.load(parts)
        step, done_s, last_val = restored["step"], restored["train_time_s"], restored["last_val"]
        log(f"resumed at step {step} after {done_s:.1f} s of training")
    start_step = saved_step = step
    snapshots = [(step, _snapshot(model))]  # (step, weights) of the last two check steps, oldest first
    stop_reason, error = "completed", ""
    bad_step = torch.zeros((), dtype=torch.int64, device=device)  # first step with a non-finite loss (0: none)
    bad_loss = torch.zeros((), device=device)
    ce_value, elapsed, paused, stop_flag, torn = math.nan, done_s, 0.0, 0.0, False
    window = (step, elapsed)
    t0 = clock()
    try:
        with signals.deferred() if signals is not None else contextlib.nullcontext():
            while True:
                if step >= t.iterations:
                    break
                if stop_flag:
                    stop_reason = STOP_REASONS[stop_flag]
                    log(f"{stop_reason} at step {step}; saving what was trained")
                    break
                if t.wallclock_s > 0 and elapsed >= t.wallclock_s:
                    stop_reason = "wallclock"
                    break
                frac = training_fraction(step, elapsed, t)
                mult = lr_multiplier(step, elapsed, t)
                opts.set_lr_multiplier(mult)
                opts.set_muon_momentum(muon_momentum_at(step, t))
                if qat is not None:
                    qat.set_active(frac >= r.qat_start)
                if cfg.model.recur_passes > 1:  # a Python flag: torch.compile guards on it (two graphs)
                    model.set_looping(frac >= cfg.model.recur_from)
                try:
                    ce, pens = one_step()
                except torch.OutOfMemoryError as exc:
                    error = (f"out of memory in the forward/backward of step {step + 1} ({batches.local_tokens:,} "
                             "tokens per micro-batch and rank): raise train.grad_accum or lower train.batch_tokens")
                    log(error)
                    raise TrainingError(error) from exc
                ce = all_reduce_mean(ce, dist_info)
                total = ce + sum(pens.values(), torch.zeros((), device=device))
                newly_bad = ~torch.isfinite(total) & (bad_step == 0)
                bad_step = torch.where(newly_bad, step + 1, bad_step)
                bad_loss = torch.where(newly_bad, total, bad_loss)
                grad_norm = R.clip_gradients(model.parameters(), r.grad_clip)
                try:
                    opts.step()
                except RuntimeError as exc:  # CUDA out of memory, a scalar too large for the dtype ...: not a NaN
                    first_line = (str(exc).strip().splitlines() or [""])[0]
                    error = f"optimizer step failed at step {step + 1}: {type(exc).__name__}: {first_line}"
                    log(error)
                    raise TrainingError(error) from exc
                opts.zero_grad()
                wd_mult = R.decay_multiplier(frac, r)
                for (lr, wd), params in decays.items():
                    R.apply_decoupled_decay(params, lr * mult, wd * wd_mult)
                if r.l1 > 0:
                    R.apply_l1_prox([p for _, p in matrices], t.matrix_lr * mult * r.l1)
                step += 1
                request = 0.0 if signals is None else _REQUESTS[signals.reason]
                elapsed, stop_flag = agree_max([done_s + clock() - t0 - paused, request], dist_info)
                frac_done = training_fraction(step, elapsed, t)
                if pruner is not None:
                    pruner.step(frac_done)
                if averager is not None:
                    averager.update(model, step, frac_done)
                last = (step >= t.iterations or stop_flag > 0 or (t.wallclock_s > 0 and elapsed >= t.wallclock_s))
                validate = t.val_every > 0 and step % t.val_every == 0 and step < t.iterations
                save = checkpoints is not None and t.checkpoint_every > 0 and step % t.checkpoint_every == 0
                if last or validate or save or step % t.log_every == 0:
                    mine = int(bad_step)  # the one device sync of a step, at check steps only
                    first = -agree_max([-mine if mine else -math.inf], dist_info)[0]  # the earliest on any rank
                    if first < math.inf:  # weights whose own next loss was finite: a snapshot before step `first`
                        stop_reason = "nan"
                        snapshots = [s for s in snapshots if s[0] + 1 < first] or snapshots[:1]
                        error = (f"loss became {float(bad_loss) if mine else math.nan} at step {int(first)}; kept "
                                 f"the weights from step {snapshots[-1][0]}")
                        log(error)
                        break
                    ce_value = ce.item()
                    snapshots = [snapshots[-1], (step, _snapshot(model))]
                if step % t.log_every == 0 or last:
                    tok_s = (step - window[0]) * tokens_per_step / max(elapsed - window[1], 1e-9)
                    window = (step, elapsed)
                    record = {"step": step, "train_loss": ce_value, "lr_mult": mult, "grad_norm": float(grad_norm),
                              "wd_mult": wd_mult, "tokens_per_s": tok_s, "time_s": elapsed}
                    record.update({f"pen_{k}": float(v) for k, v in pens.items()})
                    if qat is not None:
                        record["qat_active"] = qat.active
                    if dist_info.is_main:
                        metrics.write(**record)
                progress("train", step, t.iterations, loss=ce_value, bpb=last_val.get("val_bpb", float("nan")))
                pause_start, early = clock(), False
                if validate:
                    last_val = _validate(model, val_tokens, luts, cfg, setup, step, ce_value, metrics, gap,
                                         log, dist_info)
                    early = broadcast_flag(stopper is not None and stopper.update(last_val["val_bpb"]), dist_info,
                                           device)
                if save and not early:
                    checkpoints.save(parts, step, elapsed, last_val)
                    saved_step = step
                paused += clock() - pause_start
                if early:
                    stop_reason = "early_stop"
                    log(f"early stopping at step {step}: val_bpb has not improved for {r.early_stop_patience} "
                        f"validations (best {stopper.best:.4f})")
                    break
    except KeyboardInterrupt:  # a second Ctrl-C, or no `signals`: mid-step, so no checkpoint of it
        stop_reason, torn = "interrupted", True
        log(f"interrupted at step {step}; saving the weights")
    if cfg.model.recur_passes > 1:
        model.set_looping(True)  # evaluated looped, as a model rebuilt from its artifact
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_time_s = max(elapsed, done_s + clock() - t0 - paused)
    if (checkpoints is not None and not torn and stop_reason != "nan" and step > saved_step
            and (t.checkpoint_every > 0 or stop_flag or checkpoints.in_use)):
        checkpoints.save(parts, step, train_time_s, last_val)  # the newest checkpoint is where training ended

    if qat is not None:
        qat.remove()
    if stop_reason == "nan":
        step, final = snapshots[-1]
    else:
        if pruner is not None:
            pruner.step(1.0)  # an early stop still ends at the target sparsity
        use_average = averager is not None and averager.n_averaged > 0
        if averager is not None and not use_average:
            log(f"{averager.kind} never averaged (training ended at step {step}); keeping the live weights")
        final = averager.averaged_state_dict(model) if use_average else model.state_dict()
        if pruner is not None and use_average:
            final = {k: v * pruner.masks[k] if k in pruner.masks else v for k, v in final.items()}
    final = {k: v.detach().to("cpu", copy=True).float() for k, v in final.items()}
    checksum = check_replicas_agree(final, dist_info)
    if dist_info.enabled:
        log(f"weights agree on all {dist_info.world_size} ranks (sha256 {checksum})")
    diag = weight_diagnostics(list(final.items()), cfg.export.bits)
    return TrainResult(state_dict=final, steps=step, train_time_s=train_time_s,
                       tokens_per_s=(step - start_step) * tokens_per_step / max(train_time_s - done_s, 1e-9),
                       stop_reason=stop_reason, last_val=last_val, diagnostics=diag, error=error, checksum=checksum)


def _gradual_pruner(matrices, r):
    """GradualPruner when reg.prune_sparsity is set (imported only then: a packed script carries what it uses)."""
    if r.prune_sparsity <= 0:
        return None
    from pgolf.train.pruning import GradualPruner

    return GradualPruner(matrices, r.prune_sparsity, r.prune_start)


def _penalty_terms(r):
    """penalties.penalty_terms when reg sets a penalty coefficient (imported only then, as `_gradual_pruner`)."""
    if max(r.l1, r.l2, r.z_loss, r.qerr_penalty, r.sv_penalty) <= 0:
        return None
    from pgolf.train.penalties import penalty_terms

    return penalty_terms


def _weight_average(r):
    """EMA or SWA when reg asks for one (imported only then, as `_gradual_pruner`)."""
    if r.ema_decay <= 0 and r.swa_start <= 0:
        return None
    from pgolf.train.averaging import make_weight_average

    return make_weight_average(r)


def _snapshot(model: GPT) -> dict[str, torch.Tensor]:
    """A copy of the weights under plain names, on their device (no host sync)."""
    return {k: v.detach().clone() for k, v in plain_state_dict(model).items()}


def _validate(model, val_tokens, luts, cfg, setup, step, train_loss, metrics, gap, log, dist_info):
    """Periodic validation on the capped slice; logs BPB, the train/val gap and weight diagnostics."""
    t = cfg.train
    tokens = val_tokens if t.val_tokens <= 0 else val_tokens[: t.val_tokens + 1]
    result = evaluate_bpb(model, tokens, luts, t.seq_len, device=setup.device, autocast_dtype=setup.autocast_dtype)
    train_bpb = train_loss / math.log(2) * result.tokens / max(result.bytes, 1)
    record = {"step": step, "val_loss": result.loss, "val_bpb": result.bpb, "train_bpb_est": train_bpb}
    warning = gap.update(train_bpb, result.bpb)
    if warning:
        log(f"step {step}: {warning}")
    diag = weight_diagnostics(list(model.named_parameters()), cfg.export.bits)
    record["diagnostics"] = diag
    if dist_info.is_main:
        metrics.write(**record)
    log(f"step {step}: val_loss {result.loss:.4f} val_bpb {result.bpb:.4f}")
    return {"val_loss": result.loss, "val_bpb": result.bpb}

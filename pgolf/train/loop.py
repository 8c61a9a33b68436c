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
- With a `rungs` object (a search's trial, search.trial.RungReporter), a step it
  says is due is validated and checkpointed, then reported; when rank 0's report
  says so the run stops there ("pruned"), its checkpoint kept for a resume.
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
    """completed, wallclock, early_stop, interrupted (Ctrl-C), terminated (SIGTERM), nan (a non-finite loss) or
    pruned (a search's rung stopped it)."""
    last_val: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str = ""
    checksum: str = ""
    """sha256 prefix of the final weights, the same on every rank (checked)."""


class StopRequests(Protocol):
    """Ctrl-C and SIGTERM as a request to stop (runtime.signals.StopSignals): the loop reads `reason` every step."""

    reason: str

    def deferred(self) -> contextlib.AbstractContextManager: ...


class Checkpoints(Protocol):
    """Where the loop saves and finds its training checkpoints (train.checkpoints.CheckpointStore)."""

    in_use: bool

    def save(self, parts: dict[str, Any], step: int, train_time_s: float, last_val: dict[str, float]) -> Any: ...

    def load(self, parts: dict[str, Any]) -> dict[str, Any]: ...


class Rungs(Protocol):
    """A search trial's rungs: which steps are rungs, and whether the run stops at one (the pruner's answer)."""

    def due(self, step: int, elapsed_s: float) -> bool: ...

    def report(self, step: int, elapsed_s: float, last_val: dict[str, float]) -> bool: ...


def train_model(cfg: Config, model: GPT, batches: TrainBatches, val_tokens: torch.Tensor, luts: ByteLUTs,
                setup: DeviceSetup, dist_info: DistInfo, metrics: Metrics,
                log: Callable[[str], None] = print, progress: ProgressFn = no_progress,
                signals: StopRequests | None = None, checkpoints: Checkpoints | None = None, resume: bool = False,
                clock: Callable[[], float] = time.perf_counter, rungs: Rungs | None = None) -> TrainResult:
    """Train `model` in place; return the weights to save and how training ended.

    `clock` is the time source each rank reads (a test skews one rank's).
    """
    loop = _Loop(cfg, model, batches, setup, dist_info, metrics, log, progress, signals, checkpoints, clock, rungs)
    loop.warmup()
    if resume:
        loop.restore()
    loop.run(_Validation(val_tokens, luts))
    return loop.result()


@dataclass
class _Validation:
    tokens: torch.Tensor
    luts: ByteLUTs


@dataclass
class _State:
    """Where a run is: steps, the agreed elapsed training time, and how it ends."""

    step: int = 0
    done_s: float = 0.0
    """Training time before this process started (a resume)."""
    last_val: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    paused: float = 0.0
    """Validation and checkpoint time since this process started (not training time)."""
    stop_flag: float = 0.0
    stop_reason: str = "completed"
    error: str = ""
    torn: bool = False
    """Interrupted mid-step (a second Ctrl-C): no checkpoint of it."""
    ce_value: float = math.nan
    train_time_s: float = 0.0


class _Loop:
    """One training run's optimizers, schedules, regularizers and state; `train_model` drives it."""

    def __init__(self, cfg, model, batches, setup, dist_info, metrics, log, progress, signals, checkpoints, clock,
                 rungs=None):
        self.cfg, self.model, self.batches, self.setup, self.dist_info = cfg, model, batches, setup, dist_info
        self.metrics, self.log, self.progress, self.clock = metrics, log, progress, clock
        self.signals, self.checkpoints, self.rungs = signals, checkpoints, rungs
        t, r = cfg.train, cfg.reg
        self.device = setup.device
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        R.check_no_decay_names(self.named, r)
        groups = R.param_groups(self.named, r)
        for line in R.describe_decay(groups, r):
            log(line)
        self.opts = build_optimizers(groups, t, tied=cfg.model.tie_embeddings, fused=self.device.type == "cuda")
        self.decays = _decay_sets(groups, cfg)
        self.matrices = groups.get("matrix", [])
        self.qat = enable_qat(model, r.qat_bits, [n for n, _ in self.matrices]) if r.qat_bits else None
        self.pruner = _gradual_pruner(self.matrices, r)
        self.averager = _weight_average(r)
        self.penalties = _penalty_terms(r)
        self.stopper = R.EarlyStopping(r.early_stop_patience) if r.early_stop_patience else None
        self.gap = R.GapMonitor(r.gap_warn)
        self.train_fn = wrap_ddp(maybe_compile(model, setup), dist_info, self.device)
        self.parts = {"model": model, "opts": self.opts, "batches": batches, "averager": self.averager,
                      "pruner": self.pruner, "stopper": self.stopper, "gap": self.gap}
        self.s = _State()

    def forward_backward(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward/backward over `grad_accum` micro-batches; the mean CE and penalties (on the device)."""
        t, r, device = self.cfg.train, self.cfg.reg, self.device
        ce_total = torch.zeros((), device=device)
        pens_total: dict[str, torch.Tensor] = {}
        for micro in range(t.grad_accum):
            x, y = self.batches.next_batch()
            sync = micro == t.grad_accum - 1 or not self.dist_info.enabled
            with self.train_fn.no_sync() if not sync else contextlib.nullcontext():
                with autocast(self.setup):
                    logits = self.train_fn(x)  # (B, T, V)
                ce = R.cross_entropy(logits, y, r.label_smoothing)
                pens = self.penalties(self.named, logits, r, self.cfg.export.bits) if self.penalties else {}
                loss = ce + sum(pens.values(), torch.zeros((), device=device))
                (loss / t.grad_accum).backward()
            ce_total += ce.detach() / t.grad_accum
            for k, v in pens.items():
                pens_total[k] = pens_total.get(k, 0) + v.detach() / t.grad_accum
        return ce_total, pens_total

    def warmup(self) -> None:
        """`train.warmup_steps` steps warm kernels / compile, then everything is restored, the data position too."""
        t, model, opts = self.cfg.train, self.model, self.opts
        if t.warmup_steps <= 0:
            return
        saved = copy.deepcopy(model.state_dict()), copy.deepcopy(opts.state_dict()), self.batches.state_dict()
        for i in range(t.warmup_steps):
            if self.cfg.model.recur_passes > 1:
                model.set_looping(bool(i % 2))  # compile both graphs now, not at the switch
            self.forward_backward()
            opts.step()
            opts.zero_grad()
        model.load_state_dict(saved[0])
        opts.load_state_dict(saved[1])
        self.batches.load_state_dict(saved[2])
        opts.zero_grad()

    def restore(self) -> None:
        """Continue from the newest checkpoint: weights, optimizers, data position, step and elapsed time."""
        restored = self.checkpoints.load(self.parts)
        s = self.s
        s.step, s.done_s, s.last_val = restored["step"], restored["train_time_s"], restored["last_val"]
        self.log(f"resumed at step {s.step} after {s.done_s:.1f} s of training")

    def should_stop(self) -> bool:
        s, t = self.s, self.cfg.train
        if s.step >= t.iterations:
            return True
        if s.stop_flag:
            s.stop_reason = STOP_REASONS[s.stop_flag]
            self.log(f"{s.stop_reason} at step {s.step}; saving what was trained")
            return True
        if t.wallclock_s > 0 and s.elapsed >= t.wallclock_s:
            s.stop_reason = "wallclock"
            return True
        return False

    def step(self, bad: _Bad) -> tuple[torch.Tensor, dict[str, torch.Tensor], float, float, torch.Tensor]:
        """One optimizer step at the schedules' current values; (CE, penalties, LR and decay multipliers, grad
        norm). A non-finite loss is recorded in `bad` on the device (no host sync)."""
        cfg, s, t, r = self.cfg, self.s, self.cfg.train, self.cfg.reg
        frac = training_fraction(s.step, s.elapsed, t)
        mult = lr_multiplier(s.step, s.elapsed, t)
        self.opts.set_lr_multiplier(mult)
        self.opts.set_muon_momentum(muon_momentum_at(s.step, t))
        if self.qat is not None:
            self.qat.set_active(frac >= r.qat_start)
        if cfg.model.recur_passes > 1:  # a Python flag: torch.compile guards on it (two graphs)
            self.model.set_looping(frac >= cfg.model.recur_from)
        try:
            ce, pens = self.forward_backward()
        except torch.OutOfMemoryError as exc:
            s.error = (f"out of memory in the forward/backward of step {s.step + 1} ({self.batches.local_tokens:,} "
                       "tokens per micro-batch and rank): raise train.grad_accum or lower train.batch_tokens")
            self.log(s.error)
            raise TrainingError(s.error) from exc
        ce = all_reduce_mean(ce, self.dist_info)
        bad.record(ce + sum(pens.values(), torch.zeros((), device=self.device)), s.step + 1)
        grad_norm = R.clip_gradients(self.model.parameters(), r.grad_clip)
        try:
            self.opts.step()
        except RuntimeError as exc:  # CUDA out of memory, a scalar too large for the dtype ...: not a NaN
            first_line = (str(exc).strip().splitlines() or [""])[0]
            s.error = f"optimizer step failed at step {s.step + 1}: {type(exc).__name__}: {first_line}"
            self.log(s.error)
            raise TrainingError(s.error) from exc
        self.opts.zero_grad()
        wd_mult = R.decay_multiplier(frac, r)
        for (lr, wd), params in self.decays.items():
            R.apply_decoupled_decay(params, lr * mult, wd * wd_mult)
        if r.l1 > 0:
            R.apply_l1_prox([p for _, p in self.matrices], t.matrix_lr * mult * r.l1)
        return ce, pens, mult, wd_mult, grad_norm

    def agree(self, t0: float) -> None:
        """After a step: the ranks agree on the elapsed time and on a signal's stop request; schedules advance."""
        s = self.s
        s.step += 1
        request = 0.0 if self.signals is None else _REQUESTS[self.signals.reason]
        s.elapsed, s.stop_flag = agree_max([s.done_s + self.clock() - t0 - s.paused, request], self.dist_info)
        frac_done = training_fraction(s.step, s.elapsed, self.cfg.train)
        if self.pruner is not None:
            self.pruner.step(frac_done)
        if self.averager is not None:
            self.averager.update(self.model, s.step, frac_done)

    def run(self, val: _Validation) -> None:
        """Steps until the iterations, the wallclock, a signal, an early stop or a NaN end the run."""
        s, t = self.s, self.cfg.train
        self.start_step = self.saved_step = s.step
        s.elapsed = s.done_s
        bad = _Bad(self.model, s.step, self.device)
        window = (s.step, s.elapsed)
        t0 = self.clock()
        try:
            with self.signals.deferred() if self.signals is not None else contextlib.nullcontext():
                while not self.should_stop():
                    ce, pens, mult, wd_mult, grad_norm = self.step(bad)
                    self.agree(t0)
                    last = (s.step >= t.iterations or s.stop_flag > 0
                            or (t.wallclock_s > 0 and s.elapsed >= t.wallclock_s))
                    rung = not last and self.rungs is not None and self.rungs.due(s.step, s.elapsed)
                    validate = rung or (t.val_every > 0 and s.step % t.val_every == 0 and s.step < t.iterations)
                    save = self.checkpoints is not None and (rung or (t.checkpoint_every > 0
                                                                      and s.step % t.checkpoint_every == 0))
                    if (last or validate or save or s.step % t.log_every == 0) and not self.check(bad, ce):
                        break
                    if s.step % t.log_every == 0 or last:
                        window = self.write_metrics(window, pens, mult, wd_mult, grad_norm)
                    self.progress("train", s.step, t.iterations, loss=s.ce_value,
                                  bpb=s.last_val.get("val_bpb", float("nan")))
                    if self.pause(val, validate, save, rung):
                        break
        except KeyboardInterrupt:  # a second Ctrl-C, or no `signals`: mid-step, so no checkpoint of it
            s.stop_reason, s.torn = "interrupted", True
            self.log(f"interrupted at step {s.step}; saving the weights")
        self.end(t0, bad)

    def check(self, bad: _Bad, ce: torch.Tensor) -> bool:
        """A check step: the one host sync. False when a rank saw a non-finite loss (the run stops with the weights
        of the last check step whose next loss was finite)."""
        s = self.s
        first = bad.first_on_any_rank(self.dist_info)
        if first < math.inf:
            s.stop_reason = "nan"
            s.error = bad.keep_before(first)
            self.log(s.error)
            return False
        s.ce_value = ce.item()
        bad.snapshot(self.model, s.step)
        return True

    def write_metrics(self, window, pens, mult, wd_mult, grad_norm) -> tuple[int, float]:
        s = self.s
        tok_s = (s.step - window[0]) * self.cfg.train.batch_tokens / max(s.elapsed - window[1], 1e-9)
        record = {"step": s.step, "train_loss": s.ce_value, "lr_mult": mult, "grad_norm": float(grad_norm),
                  "wd_mult": wd_mult, "tokens_per_s": tok_s, "time_s": s.elapsed}
        record.update({f"pen_{k}": float(v) for k, v in pens.items()})
        if self.qat is not None:
            record["qat_active"] = self.qat.active
        if self.dist_info.is_main:
            self.metrics.write(**record)
        return s.step, s.elapsed

    def pause(self, val: _Validation, validate: bool, save: bool, rung: bool = False) -> bool:
        """Validation (and rank 0's early-stop decision, broadcast), checkpoints and a rung's report, outside training
        time; True when training stops early or is pruned."""
        s, r = self.s, self.cfg.reg
        pause_start, early = self.clock(), False
        if validate:
            s.last_val = _validate(self.model, val.tokens, val.luts, self.cfg, self.setup, s.step, s.ce_value,
                                   self.metrics, self.gap, self.log, self.dist_info)
            early = broadcast_flag(self.stopper is not None and self.stopper.update(s.last_val["val_bpb"]),
                                   self.dist_info, self.device)
        if save and not early:
            self.checkpoints.save(self.parts, s.step, s.elapsed, s.last_val)
            self.saved_step = s.step
        pruned = rung and not early and broadcast_flag(
            self.dist_info.is_main and self.rungs.report(s.step, s.elapsed, s.last_val), self.dist_info, self.device)
        s.paused += self.clock() - pause_start
        if pruned:
            s.stop_reason = "pruned"
            self.log(f"pruned at step {s.step} (val_bpb {s.last_val['val_bpb']:.4f}); its checkpoint is kept")
            return True
        if early:
            s.stop_reason = "early_stop"
            best = f" (best {self.stopper.best:.4f})" if self.stopper is not None else ""  # rank 0 decided
            self.log(f"early stopping at step {s.step}: val_bpb has not improved for {r.early_stop_patience} "
                     f"validations{best}")
        return early

    def end(self, t0: float, bad: _Bad) -> None:
        """Training time, the final checkpoint (the newest one is where training ended), the weights to keep."""
        s, t = self.s, self.cfg.train
        if self.cfg.model.recur_passes > 1:
            self.model.set_looping(True)  # evaluated looped, as a model rebuilt from its artifact
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        s.train_time_s = max(s.elapsed, s.done_s + self.clock() - t0 - s.paused)
        cp = self.checkpoints
        if (cp is not None and not s.torn and s.stop_reason != "nan" and s.step > self.saved_step
                and (t.checkpoint_every > 0 or s.stop_flag or cp.in_use)):
            cp.save(self.parts, s.step, s.train_time_s, s.last_val)
        if self.qat is not None:
            self.qat.remove()
        if s.stop_reason == "nan":
            s.step, self.final = bad.snapshots[-1]
        else:
            self.final = self.final_weights()

    def final_weights(self) -> dict[str, torch.Tensor]:
        """The averaged weights when EMA/SWA averaged, else the live ones; pruning ends at its target sparsity."""
        if self.pruner is not None:
            self.pruner.step(1.0)  # an early stop still ends at the target sparsity
        averager = self.averager
        use_average = averager is not None and averager.n_averaged > 0
        if averager is not None and not use_average:
            self.log(f"{averager.kind} never averaged (training ended at step {self.s.step}); keeping the live "
                     "weights")
        final = averager.averaged_state_dict(self.model) if use_average else self.model.state_dict()
        if self.pruner is not None and use_average:
            final = {k: v * self.pruner.masks[k] if k in self.pruner.masks else v for k, v in final.items()}
        return final

    def result(self) -> TrainResult:
        s = self.s
        final = {k: v.detach().to("cpu", copy=True).float() for k, v in self.final.items()}
        checksum = check_replicas_agree(final, self.dist_info)
        if self.dist_info.enabled:
            self.log(f"weights agree on all {self.dist_info.world_size} ranks (sha256 {checksum})")
        diag = weight_diagnostics(list(final.items()), self.cfg.export.bits)
        tokens_per_s = (s.step - self.start_step) * self.cfg.train.batch_tokens / max(s.train_time_s - s.done_s, 1e-9)
        return TrainResult(state_dict=final, steps=s.step, train_time_s=s.train_time_s, tokens_per_s=tokens_per_s,
                           stop_reason=s.stop_reason, last_val=s.last_val, diagnostics=diag, error=s.error,
                           checksum=checksum)


class _Bad:
    """Non-finite losses, found on the device and read at check steps only, and the weights to fall back to:
    a device-side copy (plain parameter names) of the last two check steps, oldest first."""

    def __init__(self, model: GPT, step: int, device: torch.device):
        self.step = torch.zeros((), dtype=torch.int64, device=device)  # first step with a non-finite loss (0: none)
        self.loss = torch.zeros((), device=device)
        self.snapshots = [(step, _snapshot(model))]

    def record(self, total: torch.Tensor, step: int) -> None:
        newly_bad = ~torch.isfinite(total) & (self.step == 0)
        self.step = torch.where(newly_bad, step, self.step)
        self.loss = torch.where(newly_bad, total, self.loss)

    def first_on_any_rank(self, dist_info: DistInfo) -> float:
        self.mine = int(self.step)  # the one device sync of a step, at check steps only
        return -agree_max([-self.mine if self.mine else -math.inf], dist_info)[0]  # the earliest on any rank

    def keep_before(self, first: float) -> str:
        """Keep the weights whose own next loss was finite (a snapshot before step `first`); the error message."""
        self.snapshots = [s for s in self.snapshots if s[0] + 1 < first] or self.snapshots[:1]
        return (f"loss became {float(self.loss) if self.mine else math.nan} at step {int(first)}; kept the weights "
                f"from step {self.snapshots[-1][0]}")

    def snapshot(self, model: GPT, step: int) -> None:
        self.snapshots = [self.snapshots[-1], (step, _snapshot(model))]


def _decay_sets(groups, cfg: Config) -> dict[tuple[float, float], list[torch.Tensor]]:
    """(base LR, weight decay) -> the parameters decayed at that rate (decoupled, scaled by the LR schedule)."""
    t, r = cfg.train, cfg.reg
    base_lr = {"matrix": t.matrix_lr, "embed": t.embed_lr, "scalar": t.scalar_lr}
    untied_head = not cfg.model.tie_embeddings
    decays: dict[tuple[float, float], list[torch.Tensor]] = {}
    for role, params in groups.items():
        for n, p in params:
            lr = t.head_lr if untied_head and n.startswith("lm_head") else base_lr[role]
            wd = R.decay_for(n, role, r)
            if wd > 0:
                decays.setdefault((lr, wd), []).append(p)
    return decays


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

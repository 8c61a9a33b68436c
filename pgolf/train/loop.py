"""The training loop: reference optimizer split, schedules and the regularizer stack.

One step = `grad_accum` micro-batches per rank, then clipping, the optimizer
steps, decoupled decay (scheduled), the L1 proximal step, pruning masks and
weight averaging. Validation every `train.val_every` steps on a capped slice of
the validation set. Non-standard pieces:
- `train.warmup_steps` steps run first and are then undone (model and
  optimizer state restored): they only warm kernels and torch.compile.
- A NaN/inf loss stops training with the last finite weights kept (the live
  ones when still finite, else the snapshot from the last validation whose
  weights and loss were finite). Snapshots use plain parameter names, so
  they stay baseline-compatible while QAT parametrizations are on.
- Any other failure of the optimizer step (a RuntimeError such as CUDA out of
  memory) is not a NaN stop: it is logged and raised as a TrainingError that
  names the exception and the step.
- Ctrl-C stops after the current step; what was trained is returned and saved.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from pgolf.data.loader import TrainBatches
from pgolf.data.tokenizer import ByteLUTs
from pgolf.errors import TrainingError
from pgolf.evaluate import evaluate_bpb
from pgolf.model.gpt import GPT
from pgolf.progress import ProgressFn, no_progress
from pgolf.runs import MetricsLog
from pgolf.schema import Config
from pgolf.train import regularizers as R
from pgolf.train.device import DeviceSetup, autocast, maybe_compile
from pgolf.train.diagnostics import weight_diagnostics
from pgolf.train.distributed import DistInfo, all_reduce_mean, broadcast_flag, wrap_ddp
from pgolf.train.optim import build_optimizers, lr_multiplier, muon_momentum_at, training_fraction
from pgolf.train.qat import enable_qat, plain_state_dict


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    """Final float weights (averaged when EMA/SWA is on), baseline-compatible keys."""
    steps: int
    train_time_s: float
    tokens_per_s: float
    stop_reason: str
    """completed, wallclock, early_stop, interrupted or nan (a non-finite loss)."""
    last_val: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str = ""


def build_model(cfg: Config) -> GPT:
    """The GPT sized by `model`, with the in-model regularizers of `reg`."""
    m, r = cfg.model, cfg.reg
    return GPT(vocab_size=m.vocab_size, num_layers=m.num_layers, model_dim=m.model_dim, num_heads=m.num_heads,
               num_kv_heads=m.num_kv_heads, mlp_mult=m.mlp_mult, tie_embeddings=m.tie_embeddings,
               tied_embed_init_std=m.tied_embed_init_std, rope_base=m.rope_base, qk_gain_init=m.qk_gain_init,
               logit_softcap=r.softcap, ln_scale=r.ln_scale, dropout=r.dropout, drop_path=r.drop_path)


def train_model(cfg: Config, model: GPT, batches: TrainBatches, val_tokens: torch.Tensor, luts: ByteLUTs,
                setup: DeviceSetup, dist_info: DistInfo, metrics: MetricsLog,
                log: Callable[[str], None] = print, progress: ProgressFn = no_progress) -> TrainResult:
    """Train `model` in place; return the weights to save and how training ended."""
    t, r = cfg.train, cfg.reg
    device = setup.device
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    R.check_no_decay_names(named, r)
    groups = R.param_groups(named, r)
    for line in R.describe_decay(groups, r):
        log(line)
    opts = build_optimizers(groups, t, tied=cfg.model.tie_embeddings)
    base_lr = {"matrix": t.matrix_lr, "embed": t.embed_lr, "scalar": t.scalar_lr}
    untied_head = not cfg.model.tie_embeddings
    decays = [(p, t.head_lr if untied_head and n.startswith("lm_head") else base_lr[role], R.decay_for(n, role, r))
              for role, params in groups.items() for n, p in params]  # (param, base LR, wd)
    decays = [(p, lr, wd) for p, lr, wd in decays if wd > 0]
    matrices = groups.get("matrix", [])
    qat = enable_qat(model, r.qat_bits, [n for n, _ in matrices]) if r.qat_bits else None
    pruner = _gradual_pruner(matrices, r)
    averager = _weight_average(r)
    penalties = _penalty_terms(r)
    stopper = R.EarlyStopping(r.early_stop_patience) if r.early_stop_patience else None
    gap = R.GapMonitor(r.gap_warn)
    train_model_fn = wrap_ddp(maybe_compile(model, setup), dist_info, device)
    tokens_per_step = t.batch_tokens

    def one_step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward/backward over `grad_accum` micro-batches; the mean CE and penalties."""
        ce_total = torch.zeros((), device=device)
        pens_total: dict[str, torch.Tensor] = {}
        for micro in range(t.grad_accum):
            x, y = batches.next_batch()
            sync = micro == t.grad_accum - 1 or not dist_info.enabled
            ctx = train_model_fn.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
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

    # Warmup steps warm kernels / compile, then everything is restored.
    if t.warmup_steps > 0:
        saved_model = copy.deepcopy(model.state_dict())
        saved_opt = copy.deepcopy(opts.state_dict())
        for _ in range(t.warmup_steps):
            one_step()
            opts.step()
            opts.zero_grad()
        model.load_state_dict(saved_model)
        opts.load_state_dict(saved_opt)
        opts.zero_grad()

    snapshot = _finite_snapshot(model)
    snapshot_step = 0
    last_val: dict[str, float] = {}
    stop_reason = "completed"
    error = ""
    step = 0
    train_time_s = 0.0
    t0 = time.perf_counter()
    window_t0, window_tokens = t0, 0
    tok_s = 0.0
    try:
        while step < t.iterations:
            elapsed = time.perf_counter() - t0
            if t.wallclock_s > 0 and elapsed >= t.wallclock_s:
                stop_reason = "wallclock"
                break
            frac = training_fraction(step, elapsed, t)
            mult = lr_multiplier(step, elapsed, t)
            opts.set_lr_multiplier(mult)
            opts.set_muon_momentum(muon_momentum_at(step, t))
            if qat is not None:
                qat.set_active(frac >= r.qat_start)
            ce, pens = one_step()
            ce = all_reduce_mean(ce, dist_info)
            ce_value = ce.item()
            if not math.isfinite(ce_value) or not all(math.isfinite(float(v)) for v in pens.values()):
                stop_reason = "nan"
                live = _finite_snapshot(model)
                if live is not None:
                    snapshot, snapshot_step = live, step
                error = (f"loss became {ce_value} at step {step + 1}; kept the weights from step {snapshot_step}")
                log(error)
                break
            grad_norm = R.clip_gradients(model.parameters(), r.grad_clip)
            try:
                opts.step()
            except RuntimeError as exc:  # CUDA out of memory, a scalar too large for the dtype ...: not a NaN
                lines = str(exc).strip().splitlines()
                error = f"optimizer step failed at step {step + 1}: {type(exc).__name__}: {lines[0] if lines else ''}"
                log(error)
                raise TrainingError(error) from exc
            opts.zero_grad()
            wd_mult = R.decay_multiplier(frac, r)
            for param, lr, wd in decays:
                R.apply_decoupled_decay([param], lr * mult, wd * wd_mult)
            if r.l1 > 0:
                R.apply_l1_prox([p for _, p in matrices], t.matrix_lr * mult * r.l1)
            step += 1
            frac_done = training_fraction(step, time.perf_counter() - t0, t)
            if pruner is not None:
                pruner.step(frac_done)
            if averager is not None:
                averager.update(model, step, frac_done)
            window_tokens += tokens_per_step
            now = time.perf_counter()
            train_time_s = now - t0
            if step % t.log_every == 0 or step == t.iterations:
                tok_s = window_tokens / max(now - window_t0, 1e-9)
                window_t0, window_tokens = now, 0
                record = {"step": step, "train_loss": ce_value, "lr_mult": mult, "grad_norm": float(grad_norm),
                          "wd_mult": wd_mult, "tokens_per_s": tok_s, "time_s": train_time_s}
                record.update({f"pen_{k}": float(v) for k, v in pens.items()})
                if qat is not None:
                    record["qat_active"] = qat.active
                if dist_info.is_main:
                    metrics.write(**record)
            progress("train", step, t.iterations, loss=ce_value, bpb=last_val.get("val_bpb", float("nan")),
                     tok_s=tok_s)
            if t.val_every > 0 and step % t.val_every == 0 and step < t.iterations:
                last_val = _validate(model, val_tokens, luts, cfg, setup, step, ce_value, metrics, gap,
                                     log, dist_info)
                live = _finite_snapshot(model) if math.isfinite(last_val["val_loss"]) else None
                if live is not None:
                    snapshot, snapshot_step = live, step
                stop = stopper is not None and stopper.update(last_val["val_bpb"])
                if broadcast_flag(stop, dist_info, device):
                    stop_reason = "early_stop"
                    log(f"early stopping at step {step}: val_bpb has not improved for {r.early_stop_patience} "
                        f"validations (best {stopper.best:.4f})")
                    break
    except KeyboardInterrupt:
        stop_reason = "interrupted"
        log(f"interrupted at step {step}; saving what was trained")
    train_time_s = time.perf_counter() - t0

    if qat is not None:
        qat.remove()
    if stop_reason == "nan":
        final = snapshot
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
    named_final = [(k, v) for k, v in final.items()]
    diag = weight_diagnostics(named_final, cfg.export.bits)
    return TrainResult(state_dict=final, steps=step, train_time_s=train_time_s,
                       tokens_per_s=step * tokens_per_step / max(train_time_s, 1e-9), stop_reason=stop_reason,
                       last_val=last_val, diagnostics=diag, error=error)


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


def _finite_snapshot(model: GPT) -> dict[str, torch.Tensor] | None:
    """A CPU copy of the weights under plain names, or None when any of them is NaN or infinite."""
    state = plain_state_dict(model)
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        return None
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


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


"""val_bpb, the canonical way (REFERENCE.md), with optional sliding windows.

val_bpb = (summed cross-entropy in nats / ln 2) / (summed target bytes), where
a target's bytes come from the tokenizer's byte LUTs: base bytes, plus one for
a leading "▁" unless the previous token is a boundary. Sums are float64 so the
number does not depend on batch size.

Sliding windows: windows of `seq_len` advance by `stride`; each window scores
only targets that no earlier window scored, so every validation target is
scored exactly once (the first window scores all of its targets, later ones
their last `stride`, and a final window is added flush with the end so the
tail is neither dropped nor scored twice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pgolf.data.tokenizer import ByteLUTs, target_bytes
from pgolf.progress import ProgressFn, no_progress


@dataclass(frozen=True)
class EvalResult:
    loss: float
    """Mean cross-entropy per target token, in nats."""
    bpb: float
    """Bits per byte of the scored text."""
    tokens: int
    """Targets scored."""
    bytes: int
    """UTF-8 bytes of the scored targets (LUT count)."""
    token_losses: torch.Tensor | None = None
    """With `per_token=True`: every scored target's loss in nats (float32), in validation order."""


def window_plan(n_targets: int, seq_len: int, stride: int = 0) -> list[tuple[int, int, int]]:
    """(window_start, first_scored, end) per window; targets first_scored..end-1 are scored.

    Positions index targets: target j is token j+1 predicted from tokens <= j.
    stride 0 (or >= seq_len) means non-overlapping windows.
    """
    if n_targets <= 0:
        return []
    stride = seq_len if stride <= 0 or stride >= seq_len else stride
    plan = []
    scored = 0
    start = 0
    while scored < n_targets:
        end = min(start + seq_len, n_targets)
        if end == n_targets and end - start < seq_len:
            start = max(0, n_targets - seq_len)  # flush with the end: full context for the tail
        plan.append((start, scored, end))
        scored = end
        start += stride
    return plan


@torch.no_grad()
def evaluate_bpb(
    model: torch.nn.Module,
    val_tokens: torch.Tensor,
    luts: ByteLUTs,
    seq_len: int,
    stride: int = 0,
    batch_seqs: int = 16,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: ProgressFn = no_progress,
    per_token: bool = False,
) -> EvalResult:
    """Score `val_tokens` (1-D, BOS-separated documents) with the canonical byte count; `per_token` also keeps every
    target's loss (each target is scored by exactly one window, so they line up with the targets)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    tokens = val_tokens.to(torch.int64)
    plan = window_plan(tokens.numel() - 1, seq_len, stride)
    luts = luts.to(device)
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    byte_sum = torch.zeros((), dtype=torch.float64, device=device)
    scored = 0
    token_losses = torch.zeros(len(plan) and plan[-1][2], dtype=torch.float32) if per_token else None
    for i in range(0, len(plan), batch_seqs):
        chunk = plan[i:i + batch_seqs]
        width = max(end - start for start, _, end in chunk)
        x = torch.zeros((len(chunk), width), dtype=torch.int64)
        y = torch.zeros_like(x)
        mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (start, first, end) in enumerate(chunk):
            n = end - start
            x[row, :n] = tokens[start:end]
            y[row, :n] = tokens[start + 1:end + 1]
            mask[row, first - start:n] = True
        x, y, mask = x.to(device), y.to(device), mask.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x)  # (B, T, V)
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view_as(y)
        nbytes = target_bytes(x, y, luts)
        nll_sum += nll[mask].double().sum()
        byte_sum += nbytes[mask].double().sum()
        scored += int(mask.sum())
        if token_losses is not None:
            for row, (start, first, end) in enumerate(chunk):
                token_losses[first:end] = nll[row, first - start:end - start].float().cpu()
        progress("eval", min(i + batch_seqs, len(plan)), len(plan))
    model.train(was_training)
    total_bytes = int(byte_sum.item())
    if total_bytes == 0:
        return EvalResult(loss=float("nan"), bpb=float("nan"), tokens=scored, bytes=0, token_losses=token_losses)
    loss = nll_sum.item() / max(scored, 1)
    return EvalResult(loss=loss, bpb=nll_sum.item() / math.log(2) / total_bytes, tokens=scored, bytes=total_bytes,
                      token_losses=token_losses)


def unigram_bpb(train_tokens: torch.Tensor, val_tokens: torch.Tensor, luts: ByteLUTs, vocab_size: int) -> float:
    """Bits per byte of a unigram model fitted on the training tokens (add-one smoothed).

    The bar any trained model must clear: it knows token frequencies and nothing else.
    """
    counts = torch.bincount(train_tokens.to(torch.int64), minlength=vocab_size).double() + 1.0
    logp = torch.log2(counts / counts.sum())
    targets = val_tokens[1:].to(torch.int64)
    bits = -logp[targets].sum().item()
    nbytes = target_bytes(val_tokens[:-1].to(torch.int64), targets, luts).double().sum().item()
    return bits / nbytes

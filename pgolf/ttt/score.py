"""val_bpb with score-first test-time training: every target is scored before anything trains on it.

The method is the best record's phased TTT (conf/ttt/records.yaml), on any pgolf GPT:
- Per-document LoRA (ttt/adapters.py). Documents are adapted `batch_docs` at a time (ttt/documents.py gives the
  order). For each chunk of `chunk` targets: score them (with up to `context` tokens of the document before them),
  then take `grad_steps` AdamW steps on their mean loss, then score the next chunk. A document's adapters restart
  (B at zero, fresh optimizer state) when its batch starts; its last chunk is scored and never trained on.
- Global phases. Once the first `prefix_docs * p / phases` documents (in scoring order) are scored, every weight
  of the model trains by SGD on those documents' tokens (cumulative: phase 2 trains on phase 1's documents
  again), a cosine learning rate over chunks of `global_chunk_tokens`; the rest is scored by the trained model.

Legality (the challenge's rule: a validation token may be trained on only after it is scored) follows from the
order, and tests/ttt/test_legality.py checks it from outside: changing the tokens of one chunk changes no score
made before that chunk was scored. Every target is scored exactly once, so the token and byte totals are the
static eval's. The model passed in is not changed (the phases train a copy). The model runs in eval mode
(dropout off) while it trains, and one process scores (as the static eval does).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.data.tokenizer import ByteLUTs, target_bytes
from pgolf.evaluate import EvalResult
from pgolf.model.gpt import GPT
from pgolf.progress import ProgressFn, no_progress
from pgolf.schema import TTTConfig
from pgolf.ttt.adapters import Adapters
from pgolf.ttt.documents import Document, batches, documents, num_chunks, phase_ends, window


class _Sums:
    """Summed nats and bytes (float64) and every target's loss, in validation order."""

    def __init__(self, n_targets: int, device: torch.device) -> None:
        self.nll = torch.zeros((), dtype=torch.float64, device=device)
        self.bytes = torch.zeros((), dtype=torch.float64, device=device)
        self.tokens = 0
        self.losses = torch.full((n_targets,), float("nan"), dtype=torch.float32)

    def result(self, per_token: bool) -> EvalResult:
        total_bytes = int(self.bytes.item())
        losses = self.losses if per_token else None
        if self.tokens == 0 or total_bytes == 0:
            return EvalResult(float("nan"), float("nan"), self.tokens, total_bytes, losses)
        return EvalResult(self.nll.item() / self.tokens, self.nll.item() / math.log(2) / total_bytes, self.tokens,
                          total_bytes, losses)


class _Phased:
    """One TTT evaluation: holds the adapted copy of the model and the running sums."""

    def __init__(self, model: GPT, tokens: Tensor, luts: ByteLUTs, ttt: TTTConfig, device: torch.device,
                 autocast_dtype: torch.dtype | None, seed: int, progress: ProgressFn) -> None:
        self.model = copy.deepcopy(model).to(device).eval()
        self.model.requires_grad_(False)
        self.tokens = tokens.to(torch.int64)
        self.luts = luts.to(device)
        self.ttt, self.device, self.autocast_dtype, self.progress = ttt, device, autocast_dtype, progress
        self.generator = torch.Generator().manual_seed(seed)
        self.sums = _Sums(self.tokens.numel() - 1, device)
        self.adapters: Adapters | None = None

    def run(self) -> _Sums:
        order = batches(documents(self.tokens), self.ttt.batch_docs)
        ends = phase_ends(min(self.ttt.prefix_docs, sum(len(b) for b in order)), self.ttt.phases)
        scored: list[Document] = []
        for i, batch in enumerate(order):
            self._score_batch(batch)
            scored += batch
            while ends and len(scored) >= ends[0]:
                self._global_phase(scored[:ends.pop(0)])
            self.progress("ttt", i + 1, len(order))
        if self.adapters is not None:
            self.adapters.detach()
        return self.sums

    def _forward(self, x: Tensor) -> Tensor:
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self.model(x).float()

    def _adapters_for(self, rows: int) -> Adapters | None:
        """This batch's adapters, restarted; the same ones while the batch size stays (A carries over)."""
        t = self.ttt
        if t.rank == 0:
            return None
        if self.adapters is not None and self.adapters.rows == rows:
            self.adapters.restart(keep_a=t.warm_start, generator=self.generator)
            return self.adapters
        if self.adapters is not None:
            self.adapters.detach()
        self.adapters = Adapters(self.model, rows, t.rank, t.alpha, t.targets, self.generator)
        return self.adapters

    def _score_batch(self, batch: list[Document]) -> None:
        t = self.ttt
        adapters = self._adapters_for(len(batch))
        opt = None
        if adapters is not None:
            opt = torch.optim.AdamW(adapters.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), eps=1e-10,
                                    weight_decay=t.weight_decay)
        counts = [num_chunks(doc, t.chunk) for doc in batch]
        for ci in range(max(counts)):
            wins = [window(doc, ci, t.chunk, t.context) if ci < n else None for doc, n in zip(batch, counts)]
            learn = opt is not None and any(ci < n - 1 for n in counts)
            x, y, scored = self._inputs(batch, wins)
            with torch.set_grad_enabled(learn):
                nll = self._nll(x, y)
                self._add(batch, wins, x, y, nll, scored)
                if learn:
                    trains = torch.tensor([float(ci < n - 1) for n in counts], device=self.device)
                    for step in range(t.grad_steps):
                        if step:
                            nll = self._nll(x, y)
                        per_doc = (nll * scored).sum(1) / scored.sum(1).clamp(min=1)
                        opt.zero_grad(set_to_none=True)
                        (per_doc * trains).sum().backward()
                        opt.step()

    def _nll(self, x: Tensor, y: Tensor) -> Tensor:
        logits = self._forward(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)

    def _inputs(self, batch: list[Document], wins: list) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs and targets (rows, width), zero-padded after each window, and the 0/1 mask of scored targets."""
        width = max(w.length for w in wins if w is not None)
        x = torch.zeros((len(batch), width), dtype=torch.int64)
        y = torch.zeros_like(x)
        scored = torch.zeros((len(batch), width), dtype=torch.float32)
        for row, (doc, w) in enumerate(zip(batch, wins)):
            if w is None:
                continue
            a = doc.start + w.start
            x[row, :w.length] = self.tokens[a:a + w.length]
            y[row, :w.length] = self.tokens[a + 1:a + w.length + 1]
            scored[row, w.first_scored:w.length] = 1.0
        return x.to(self.device), y.to(self.device), scored.to(self.device)

    @torch.no_grad()
    def _add(self, batch: list[Document], wins: list, x: Tensor, y: Tensor, nll: Tensor, scored: Tensor) -> None:
        mask = scored.bool()
        self.sums.nll += nll[mask].double().sum()
        self.sums.bytes += target_bytes(x, y, self.luts)[mask].double().sum()
        self.sums.tokens += int(mask.sum())
        cpu = nll.detach().float().cpu()
        for row, (doc, w) in enumerate(zip(batch, wins)):
            if w is None:
                continue
            first = doc.start + w.start + w.first_scored  # loss index j is target token j + 1
            self.sums.losses[first:doc.start + w.end] = cpu[row, w.first_scored:w.length]

    def _global_phase(self, docs: list[Document]) -> None:
        """SGD on every weight over the tokens of `docs` (already scored), then fresh adapters; a phase over no
        document (more phases than prefix documents) does nothing."""
        t = self.ttt
        if not docs:
            return
        if self.adapters is not None:
            self.adapters.detach()
            self.adapters = None
        flat = torch.cat([self.tokens[d.start:d.start + d.length] for d in docs])
        total, L = flat.numel() - 1, t.context
        chunks = -(-total // t.global_chunk_tokens)
        params = list(self.model.parameters())
        self.model.requires_grad_(True)
        opt = torch.optim.SGD(params, lr=t.global_lr, momentum=t.global_momentum)
        for ci in range(chunks - 1):  # the record leaves the last chunk out
            lr = t.global_lr * 0.5 * (1.0 + math.cos(math.pi * ci / max(chunks - 1, 1)))
            for group in opt.param_groups:
                group["lr"] = lr
            begin = ci * t.global_chunk_tokens
            seqs = (min(begin + t.global_chunk_tokens, total) - begin) // L
            for _ in range(t.global_epochs):
                for s in range(0, seqs, t.global_batch_seqs):
                    e = min(s + t.global_batch_seqs, seqs)
                    part = flat[begin + s * L:begin + e * L + 1].to(self.device)
                    x, y = part[:-1].view(-1, L), part[1:].view(-1, L)
                    loss = F.cross_entropy(self._forward(x).flatten(0, 1), y.flatten())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if t.global_grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, t.global_grad_clip)
                    opt.step()
        self.model.requires_grad_(False)


def evaluate_ttt(model: GPT, val_tokens: Tensor, luts: ByteLUTs, ttt: TTTConfig, device: torch.device | str = "cpu",
                 autocast_dtype: torch.dtype | None = None, seed: int = 0, progress: ProgressFn = no_progress,
                 per_token: bool = False) -> EvalResult:
    """The score of `model` on `val_tokens` (1-D, BOS-separated documents) with test-time training `ttt`
    (module docstring); `per_token` keeps every target's loss in validation order, as `evaluate_bpb` does."""
    run = _Phased(model, val_tokens, luts, ttt, torch.device(device), autocast_dtype, seed, progress)
    return run.run().result(per_token)

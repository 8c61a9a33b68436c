"""Per-document LoRA adapters, attached to any pgolf GPT from outside through forward hooks.

Each adapter holds one low-rank pair per document of a batch: row b of the input is adapted by A[b], B[b]
only, so documents never share a gradient. Where they sit (`ttt.targets`): the q, k and v projections (added to
their outputs), beside a block's whole attention (`o`: from the attention's normed input to its output, before
the block's scale) and MLP, and beside the head (`GPT.head_adapter`, added to the logits before the softcap).
A block that runs several times per forward pass (recurrence) gets one adapter per pass, as in the record.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pgolf.model.gpt import GPT


class BatchedLoRA(nn.Module):
    """x (rows, T, d_in) -> (rows, T, d_out): x A[b]^T B[b]^T * alpha / rank; B starts at zero (no change)."""

    def __init__(self, rows: int, d_in: int, d_out: int, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.bound = 1.0 / math.sqrt(d_in)
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.empty(rows, rank, d_in).uniform_(-self.bound, self.bound, generator=generator))
        self.B = nn.Parameter(torch.zeros(rows, d_out, rank))

    def forward(self, x: Tensor) -> Tensor:
        A, B = self.A.to(x.dtype), self.B.to(x.dtype)
        return (x @ A.transpose(1, 2)) @ B.transpose(1, 2) * self.scale

    def restart(self, keep_a: bool, generator: torch.Generator) -> None:
        """A new document: B back to zero; A kept (warm start) or drawn again."""
        with torch.no_grad():
            self.B.zero_()
            if not keep_a:
                self.A.copy_(torch.empty(self.A.shape).uniform_(-self.bound, self.bound, generator=generator))


def _sites(model: GPT, targets: list[str]) -> list[tuple[nn.Module, int, int]]:
    """(module, d_in, d_out) per hooked module, in model order."""
    sites = []
    for block in model.blocks:
        attn, dim = block.attn, block.attn.c_q.in_features
        for name, linear in (("q", attn.c_q), ("k", attn.c_k), ("v", attn.c_v)):
            if name in targets:
                sites.append((linear, linear.in_features, linear.out_features))
        if "o" in targets:
            sites.append((attn, dim, dim))
        if "mlp" in targets:
            sites.append((block.mlp, dim, dim))
    return sites


def _calls_per_forward(model: GPT, modules: list[nn.Module]) -> dict[nn.Module, int]:
    """How often each module runs in one forward pass (a looped block runs once per pass)."""
    calls = {m: 0 for m in modules}

    def count(module, args, output):
        calls[module] += 1

    handles = [m.register_forward_hook(count) for m in modules]
    try:
        with torch.no_grad():
            model(torch.ones((1, 2), dtype=torch.int64, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return calls


class Adapters(nn.Module):
    """One batch's adapters on `model` (hooks live until `detach`); `parameters()` are what the documents train."""

    def __init__(self, model: GPT, rows: int, rank: int, alpha: float, targets: list[str],
                 generator: torch.Generator) -> None:
        super().__init__()
        self.rows = rows
        device = next(model.parameters()).device
        sites = _sites(model, targets)
        calls = _calls_per_forward(model, [m for m, _, _ in sites])
        self.loras = nn.ModuleList()
        slots: dict[nn.Module, list[BatchedLoRA]] = {}
        for module, d_in, d_out in sites:
            slots[module] = [BatchedLoRA(rows, d_in, d_out, rank, alpha, generator) for _ in range(calls[module])]
            self.loras.extend(slots[module])
        self.head = None
        if "head" in targets:
            self.head = BatchedLoRA(rows, model.tok_emb.embedding_dim, model.tok_emb.num_embeddings, rank, alpha,
                                    generator)
        self.to(device)
        self._attach(model, slots)

    def _attach(self, model: GPT, slots: dict[nn.Module, list[BatchedLoRA]]) -> None:
        passes = {m: 0 for m in slots}

        def new_pass(module, args):
            for m in passes:
                passes[m] = 0

        def adapt(module, args, output):
            lora = slots[module][passes[module]]
            passes[module] += 1
            return output + lora(args[0])

        self._model = [model]  # a list: the model is not a submodule of its adapters
        self._handles = [model.register_forward_pre_hook(new_pass)]
        self._handles += [m.register_forward_hook(adapt) for m in slots]
        model.head_adapter = self.head.forward if self.head is not None else None

    def restart(self, keep_a: bool, generator: torch.Generator) -> None:
        for lora in self.all():
            lora.restart(keep_a, generator)

    def all(self) -> list[BatchedLoRA]:
        return [*self.loras, *([self.head] if self.head is not None else [])]

    def detach(self) -> None:
        """Remove the hooks: the model computes its own function again."""
        for h in self._handles:
            h.remove()
        self._model[0].head_adapter = None

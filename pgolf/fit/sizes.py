"""The search's exact sizes and errors: each quantized tensor once per (bits, clip, k, codec), its coded
bytes, its Fisher-weighted error and its selective-pruning order (steps 1-2 of the search, see `pgolf.fit`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf import config as C
from pgolf.errors import ConfigError
from pgolf.export.artifact import (
    export_state_dict,
    tensor_streams,
)
from pgolf.export.coding import codecs
from pgolf.export.gptq import gptq_levels
from pgolf.export.quantize import (
    QuantizedTensor,
    as_rows,
    dequantize,
    quantize_rows,
    tensor_group,
)


@dataclass(frozen=True)
class Setting:
    clip: str
    clip_k: float
    codec: str


@dataclass
class QuantizedEntry:
    """One tensor at one (bits, clip, k): levels, scale, costs and the selective-pruning order."""

    qt: QuantizedTensor
    scale_bytes: int
    q_bytes: int
    err: float
    """Fisher-weighted squared error at prune 0."""
    order: Tensor
    """Flat indices of nonzero levels, cheapest to zero first (as export's prune_selective orders them)."""
    err_cumsum: np.ndarray
    """Added weighted error after zeroing the first j+1 entries of `order`."""


@dataclass
class LQEREntry:
    """One tensor's LQER factors at one (bits, clip, k, codec, rank), unpruned levels (export/lqer.py)."""

    qt: QuantizedTensor
    """The levels with the factors attached."""
    extra_bytes: int
    """Coded bytes of the four factor streams."""
    header_bytes: int
    """Their lines in the artifact's header (an upper bound: offsets counted at their widest)."""
    err: float
    """Fisher-weighted squared error with the correction."""


def fisher_weights(model: torch.nn.Module, tokens: Tensor, seq_len: int, names: list[str]) -> dict[str, Tensor]:
    """Diagonal empirical Fisher of `names`: sum over sequences of the squared gradient of the mean loss."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ConfigError(f"fit-budget: tensors {missing[:3]} are not model parameters; cannot weigh their error")
    model.eval()
    fisher = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
    n_seqs = max(1, (tokens.numel() - 1) // seq_len)
    for i in range(n_seqs):
        chunk = tokens[i * seq_len : (i + 1) * seq_len + 1].to(torch.int64)
        x, y = chunk[:-1][None], chunk[1:][None]  # (1, T)
        model.zero_grad(set_to_none=True)
        logits = model(x)  # (1, T, V)
        F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        for n in names:
            fisher[n] += params[n].grad.detach().float() ** 2
    model.zero_grad(set_to_none=True)
    return fisher


class SizeTable:
    """Quantized tensors, their coded sizes and weighted errors, computed once per (name, bits, clip, k, codec)."""

    def __init__(self, state: dict[str, Tensor], quant_names: list[str], fisher: dict[str, Tensor],
                 cfg: C.ExportConfig, hessians: dict[str, Tensor] | None = None):
        self.state, self.quant_names, self.fisher, self.cfg = state, quant_names, fisher, cfg
        self.hessians = hessians
        """GPTQ's layer Hessians when export.gptq (the levels of those tensors are GPTQ's, as export makes them)."""
        self.cache: dict[tuple, QuantizedEntry] = {}
        self.pruned_cache: dict[tuple, tuple[int, float]] = {}
        self.lqer_cache: dict[tuple, LQEREntry | None] = {}

    def lqer(self, name: str, bits: int, s: Setting, rank: int) -> LQEREntry | None:
        """The tensor at `bits` (prune 0) with rank-`rank` LQER factors; None when export could not store them
        (the group does not divide its row, or the rank is above its smaller dimension)."""
        key = (name, bits, s, rank)
        if key not in self.lqer_cache:
            self.lqer_cache[key] = self._lqer(name, bits, s, rank)
        return self.lqer_cache[key]

    def _lqer(self, name: str, bits: int, s: Setting, rank: int) -> LQEREntry | None:
        from pgolf.export.lqer import factorize

        e, entry = self.cfg, self.get(name, bits, s.clip, s.clip_k, s.codec)
        rows = as_rows(self.state[name].detach().cpu())
        if (e.lqer_group and rows.shape[1] % e.lqer_group) or rank > min(rows.shape):
            return None
        qt = dataclasses.replace(entry.qt, lqer=factorize(rows - as_rows(dequantize(entry.qt)), rank, e.lqer_bits,
                                                          e.lqer_group))
        streams = {k: v for k, v in tensor_streams(qt).items() if k.startswith("lqer")}
        coded = sum(len(codecs.encode(s.codec, *stream_args(v, e.codec_level))) for v in streams.values())
        header = {k: {"codec": s.codec, "length": 10**6, "offset": 10**8, "raw_bytes": len(v[0])}
                  for k, v in streams.items()}  # the record lines export adds (offsets at their widest)
        header["lqer"] = {"bits": e.lqer_bits, "group": e.lqer_group, "rank": rank}
        header_bytes = len(json.dumps(header, sort_keys=True, separators=(",", ":")))
        deq = as_rows(dequantize(qt))
        err = float((self.fisher[name].reshape(rows.shape).double() * (rows - deq).double() ** 2).sum())
        return LQEREntry(qt=qt, extra_bytes=coded, header_bytes=header_bytes, err=err)

    def get(self, name: str, bits: int, clip: str, clip_k: float, codec: str) -> QuantizedEntry:
        key = (name, bits, clip, clip_k, codec)
        if key not in self.cache:
            self.cache[key] = self._compute(name, bits, clip, clip_k, codec)
        return self.cache[key]

    def cost(self, name: str, bits: int, s: Setting, prune: float) -> tuple[int, float]:
        """(exact coded bytes, weighted error) of one tensor at `bits` after selective pruning at `prune`."""
        entry = self.get(name, bits, s.clip, s.clip_k, s.codec)
        if prune == 0:
            return entry.q_bytes + entry.scale_bytes, entry.err
        key = (name, bits, s, prune)
        if key not in self.pruned_cache:
            qt, added = pruned_levels(entry, prune)
            q_bytes = entry.q_bytes if qt is entry.qt else len(codecs.encode(
                s.codec, *stream_args(tensor_streams(qt)["q"], self.cfg.codec_level)))
            self.pruned_cache[key] = (q_bytes + entry.scale_bytes, entry.err + added)
        return self.pruned_cache[key]

    def _compute(self, name: str, bits: int, clip: str, clip_k: float, codec: str) -> QuantizedEntry:
        w = self.state[name].detach().cpu()
        e = self.cfg
        clip_k = e.group_clip_k.for_group(tensor_group(name), clip_k)  # a group's own k stays fixed in the search
        qt = quantize_rows(w, bits, clip, e.clip_percentile, clip_k, e.scale_min)
        if e.gptq and name in self.hessians:
            qt = gptq_levels(w, self.hessians[name], qt, e.gptq_damp, name)
        streams = tensor_streams(qt)
        q_bytes = len(codecs.encode(codec, *stream_args(streams["q"], e.codec_level)))
        scale_bytes = len(codecs.encode(codec, *stream_args(streams["scale"], e.codec_level)))
        rows = as_rows(w)  # (R, C)
        deq = dequantize(qt).reshape(rows.shape)
        fisher = self.fisher[name].reshape(rows.shape)
        err = float((fisher.double() * (rows - deq).double() ** 2).sum())
        # the same cost and stable ordering as export.prune.prune_selective, computed once
        cost = (rows**2 - (rows - qt.q.reshape(rows.shape).float() * qt.scale.float()[:, None]) ** 2).reshape(-1)
        nonzero = torch.nonzero(qt.q.reshape(-1)).squeeze(1)
        order = nonzero[torch.sort(cost[nonzero], stable=True).indices]
        added = (fisher.reshape(-1)[order].double() * cost[order].double()).numpy()
        return QuantizedEntry(qt=qt, scale_bytes=scale_bytes, q_bytes=q_bytes, err=err, order=order,
                          err_cumsum=np.cumsum(added))


def stream_args(stream: tuple[bytes, int, int], level: int) -> tuple:
    raw, itemsize, row_len = stream
    return raw, level, itemsize, row_len


def pruned_levels(entry: QuantizedEntry, prune: float) -> tuple[QuantizedTensor, float]:
    """(levels after selective pruning at `prune`, added weighted error), exactly as export prunes them."""
    numel = entry.qt.q.numel()
    k = min(round(prune * numel), entry.order.numel())
    if k == 0:
        return entry.qt, 0.0
    flat = entry.qt.q.clone().reshape(-1)
    flat[entry.order[:k]] = 0
    return QuantizedTensor(q=flat.reshape(entry.qt.q.shape), scale=entry.qt.scale, bits=entry.qt.bits), \
        float(entry.err_cumsum[k - 1])


def header_overhead(state: dict[str, Tensor], model_config: dict, base: C.ExportConfig, codec: str) -> int:
    """Frame + header bytes of a real (cheap: clip=max) export with the same tensors and codec."""
    cheap = dataclasses.replace(base, clip="max", codec=codec, prune=0.0, shuffle=False, gptq=False)
    return export_state_dict(state, model_config, cheap).overhead_bytes

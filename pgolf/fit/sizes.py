"""The search's exact sizes and errors: each quantized tensor once per (bits, clip, k, codec), its coded
bytes, its Fisher-weighted error and its selective-pruning order (steps 1-2 of the search, see `pgolf.fit`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf import config as C
from pgolf.errors import ConfigError
from pgolf.export.artifact import (
    FLOAT_DTYPES,
    export_state_dict,
    tensor_streams,
)
from pgolf.export.coding import codecs
from pgolf.export.gptq import gptq_levels_many
from pgolf.export.quantize import (
    QuantizedTensor,
    as_rows,
    dequantize,
    quantize_rows,
)


@dataclass(frozen=True)
class Setting:
    """An outer axis point of the search (one knapsack each): clip kind, codec, GPTQ or rounding."""

    clip: str
    codec: str
    gptq: bool = False


@dataclass(frozen=True)
class Quant:
    """Everything one quantized tensor's levels, bytes and error depend on."""

    bits: int
    clip: str
    k: float
    """sdclip's k (0 for the other clips)."""
    gptq: bool
    codec: str

    def at(self, bits: int) -> Quant:
        return dataclasses.replace(self, bits=bits)


@dataclass
class QuantizedEntry:
    """One tensor at one Quant: levels, scale, costs and (when first pruned) the selective-pruning order."""

    qt: QuantizedTensor
    scale_bytes: int
    q_bytes: int
    err: float
    """Proxy loss at prune 0 (`SizeTable.weighted_error`)."""
    rows: Tensor
    """The float weights as rows (R, C)."""
    fisher: Tensor
    """Their diagonal Fisher, same shape."""

    @functools.cached_property
    def order(self) -> Tensor:
        """Flat indices of nonzero levels, cheapest to zero first (as export's prune_selective orders them); sorted
        only for the entries a fill prunes."""
        rows, qt = self.rows, self.qt
        self._cost = (rows**2 - (rows - qt.q.reshape(rows.shape).float() * qt.scale.float()[:, None]) ** 2).reshape(-1)
        nonzero = torch.nonzero(qt.q.reshape(-1)).squeeze(1)
        return nonzero[torch.sort(self._cost[nonzero], stable=True).indices]

    @functools.cached_property
    def err_cumsum(self) -> np.ndarray:
        """Added weighted error after zeroing the first j+1 entries of `order`."""
        order = self.order
        return np.cumsum((self.fisher.reshape(-1)[order].double() * self._cost[order].double()).numpy())


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
    """Quantized tensors, their coded sizes and weighted errors, computed once per (name, Quant); the levels once
    per (name, bits, clip, k, gptq), whatever the codec."""

    def __init__(self, state: dict[str, Tensor], quant_names: list[str], fisher: dict[str, Tensor],
                 cfg: C.ExportConfig, hessians: dict[str, Tensor] | None = None):
        self.state, self.quant_names, self.fisher, self.cfg = state, quant_names, fisher, cfg
        self.hessians = hessians or {}
        """GPTQ's layer Hessians (measured when a setting uses GPTQ): with `Quant.gptq` the levels of those tensors
        are GPTQ's, as export makes them."""
        self.levels_cache: dict[tuple, QuantizedTensor] = {}
        self.cache: dict[tuple, QuantizedEntry] = {}
        self.pruned_cache: dict[tuple, tuple[int, float]] = {}
        self.lqer_cache: dict[tuple, LQEREntry | None] = {}
        self.float_cache: dict[tuple, tuple[int, float]] = {}

    def _plain(self, name: str, q: Quant) -> Quant:
        """`q` as the cache knows it: GPTQ only counts for tensors it applies to (linear layers), so the embedding's
        GPTQ and rounding entries are one entry, coded once."""
        return q if not q.gptq or name in self.hessians else dataclasses.replace(q, gptq=False)

    def _grid(self, name: str, q: Quant) -> tuple:
        """The levels' cache key: GPTQ only counts for tensors it applies to (linear layers)."""
        return name, q.bits, q.clip, q.k, q.gptq and name in self.hessians

    def prepare(self, name: str, quants: list[Quant]) -> None:
        """Quantize `name` on every grid of `quants` not cached yet, the GPTQ ones in one batched pass."""
        todo = {self._grid(name, q): q for q in quants}
        todo = {key: q for key, q in todo.items() if key not in self.levels_cache}
        w = self.state[name].detach().cpu()
        rounded = {key: quantize_rows(w, q.bits, q.clip, self.cfg.clip_percentile, q.k, self.cfg.scale_min)
                   for key, q in todo.items()}
        gptq_keys = [key for key in rounded if key[-1]]
        if gptq_keys:
            done = gptq_levels_many(w, self.hessians[name], [rounded[key] for key in gptq_keys], self.cfg.gptq_damp,
                                    name)
            rounded.update(zip(gptq_keys, done))
        self.levels_cache.update(rounded)

    def levels(self, name: str, q: Quant) -> QuantizedTensor:
        key = self._grid(name, q)
        if key not in self.levels_cache:
            self.prepare(name, [q])
        return self.levels_cache[key]

    def lqer(self, name: str, q: Quant, rank: int) -> LQEREntry | None:
        """The tensor at `q` (prune 0) with rank-`rank` LQER factors; None when export could not store them
        (the group does not divide its row, or the rank is above its smaller dimension)."""
        q = self._plain(name, q)
        key = (name, q, rank)
        if key not in self.lqer_cache:
            self.lqer_cache[key] = self._lqer(name, q, rank)
        return self.lqer_cache[key]

    def _lqer(self, name: str, q: Quant, rank: int) -> LQEREntry | None:
        from pgolf.export.lqer import factorize

        e, entry = self.cfg, self.get(name, q)
        rows = as_rows(self.state[name].detach().cpu())
        if (e.lqer_group and rows.shape[1] % e.lqer_group) or rank > min(rows.shape):
            return None
        qt = dataclasses.replace(entry.qt, lqer=factorize(rows - as_rows(dequantize(entry.qt)), rank, e.lqer_bits,
                                                          e.lqer_group))
        streams = {k: v for k, v in tensor_streams(qt).items() if k.startswith("lqer")}
        coded = sum(len(codecs.encode(q.codec, *stream_args(v, e.codec_level))) for v in streams.values())
        header = {k: {"codec": q.codec, "length": 10**6, "offset": 10**8, "raw_bytes": len(v[0])}
                  for k, v in streams.items()}  # the record lines export adds (offsets at their widest)
        header["lqer"] = {"bits": e.lqer_bits, "group": e.lqer_group, "rank": rank}
        header_bytes = len(json.dumps(header, sort_keys=True, separators=(",", ":")))
        err = self.weighted_error(name, rows - as_rows(dequantize(qt)))
        return LQEREntry(qt=qt, extra_bytes=coded, header_bytes=header_bytes, err=err)

    def get(self, name: str, q: Quant) -> QuantizedEntry:
        q = self._plain(name, q)
        key = (name, q)
        if key not in self.cache:
            self.cache[key] = self._compute(name, q)
        return self.cache[key]

    def cost(self, name: str, q: Quant, prune: float) -> tuple[int, float]:
        """(exact coded bytes, weighted error) of one tensor at `q` after selective pruning at `prune`."""
        q = self._plain(name, q)
        entry = self.get(name, q)
        if prune == 0:
            return entry.q_bytes + entry.scale_bytes, entry.err
        key = (name, q, prune)
        if key not in self.pruned_cache:
            qt, added = pruned_levels(entry, prune)
            q_bytes = entry.q_bytes if qt is entry.qt else len(codecs.encode(
                q.codec, *stream_args(tensor_streams(qt)["q"], self.cfg.codec_level)))
            self.pruned_cache[key] = (q_bytes + entry.scale_bytes, entry.err + added)
        return self.pruned_cache[key]

    def float_cost(self, names: list[str], dtype: str, codec: str) -> tuple[int, float]:
        """(exact coded bytes, weighted rounding error) of tensors kept float as `dtype` (the error counts the
        tensors the Fisher pass weighed: the control tensors)."""
        key = (tuple(names), dtype, codec)
        if key not in self.float_cache:
            size, err = 0, 0.0
            for name in names:
                t = self.state[name].detach().cpu()
                stored = t.to(FLOAT_DTYPES[dtype])
                for stream in tensor_streams(stored).values():
                    size += len(codecs.encode(codec, *stream_args(stream, self.cfg.codec_level)))
                if name in self.fisher:
                    err += float((self.fisher[name].double() * (t.double() - stored.double()) ** 2).sum())
            self.float_cache[key] = (size, err)
        return self.float_cache[key]

    def weighted_error(self, name: str, delta: Tensor) -> float:
        """The proxy loss of a tensor's round-trip error `delta` (rows x cols). Without a Hessian: the diagonal-Fisher
        sum F * delta^2. With one (a linear layer, when GPTQ is in the space): the error of the layer's outputs,
        sum_i s_i delta_i H delta_i^T, each output row weighted by its sensitivity s_i = sum_j F_ij / tr H (the
        Fisher factored into output and input parts), which is the diagonal sum when H is diagonal. GPTQ trades
        weight error for output error, so only this form ranks GPTQ's levels and rounding's alike."""
        fisher = self.fisher[name].reshape(delta.shape).double()
        delta = delta.double()
        hessian = self.hessians.get(name)
        if hessian is None:
            return float((fisher * delta**2).sum())
        h = hessian.double()
        sensitivity = fisher.sum(dim=1) / h.diagonal().sum().clamp_min(1e-30)  # (R,)
        return float((((delta @ h) * delta).sum(dim=1) * sensitivity).sum())

    def _compute(self, name: str, q: Quant) -> QuantizedEntry:
        w = self.state[name].detach().cpu()
        qt = self.levels(name, q)
        streams = tensor_streams(qt)
        q_bytes = len(codecs.encode(q.codec, *stream_args(streams["q"], self.cfg.codec_level)))
        scale_bytes = len(codecs.encode(q.codec, *stream_args(streams["scale"], self.cfg.codec_level)))
        rows = as_rows(w)  # (R, C)
        err = self.weighted_error(name, rows - dequantize(qt).reshape(rows.shape))
        return QuantizedEntry(qt=qt, scale_bytes=scale_bytes, q_bytes=q_bytes, err=err, rows=rows,
                              fisher=self.fisher[name].reshape(rows.shape))


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

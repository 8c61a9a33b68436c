"""`pgolf fit-budget`: the export choices that give the best round-trip val_bpb within a byte budget.

The search, in order (every size below is exact: the real coded bytes of every stream):
1. Sensitivity. One pass over `fisher_tokens` validation tokens gives each
   weight's diagonal empirical Fisher F (squared per-sequence gradients). A
   candidate's proxy loss is sum(F * (w - dequantized w)^2) over all quantized
   weights: the second-order estimate of what its round trip costs.
2. Sizes. Each quantized tensor is quantized once per (bits, clip, clip_k) in
   the space (cached) and its streams coded with the search codec; kept-float
   tensors are coded once. The container frame/header is measured from one
   cheap real export (clip=max) plus a slack; it barely moves between candidates.
   With export.gptq the levels of every linear layer are GPTQ's on that grid
   (Hessians measured once, before the search), as the export makes them.
3. Bits per group. Sizes and proxies add up over tensor groups, so every
   combination of group bits (embedding from `embed_bits`, the other groups
   from `bits`) is scored at once with numpy; the combinations that are best
   in proxy for their size form the proxy frontier.
4. Filling. The best combination that fits leaves bytes unused, so the next
   frontier points above the budget are brought under it with `selective`
   pruning (smallest-error quantized levels zeroed, export.prune_kind=selective),
   the fraction found by bisection on the exact coded size. Sizes are not
   assumed monotone in the fraction: bisection keeps the invariant "hi fits,
   measured", so whatever fraction it returns was measured to fit.
   Only `selective` pruning is searched: it acts on the cached quantized levels
   (its ordering is computed once per tensor), whereas float-side kinds would
   re-quantize every tensor at every step (seconds per step with clip=mse).
5. Raising single tensors (the upward fill). A group-level step is too
   coarse to spend the last bytes (one bit on a whole group is ~1/8 of its
   bytes), and pruned fills often measure worse than the unpruned mix below
   them, which left up to 1-2% of the budget unused. So every candidate also
   gets a copy with single tensors raised one bit-width (the next width of
   fit.bits / fit.embed_bits), chosen greedily by proxy gain per byte from
   the exact per-tensor sizes (at the candidate's pruning fraction), until no
   raise fits. The leftover is then below one tensor's one-bit step. Written
   as export.tensor_bits; labelled like `[i3=7 k0=7]` (group letter + block).
6. Evaluations. BPB is measured (on the first `val_tokens` validation tokens)
   only for fitting candidates: the `evals` best by proxy plus two uniform
   anchors (the highest uniform bit-width that fits, and the next one up
   pruned to fit), so the result is never worse on that slice than the plain
   "same bits everywhere" choice. The best measured candidate is chosen. When
   it has a raised copy not yet measured, that copy is measured too and kept
   if its BPB is not worse (so bytes are spent only when they do not hurt).
7. Final. The choice is exported by the normal path (export_state_dict ->
   write_artifact), read back from disk, its file size plus code bytes checked
   against max_bytes - margin (with a corrected header estimate and a re-fill
   when the estimate was short), and scored on the full validation set
   (capped by data.val_tokens); that is the reported score.

The search space is the `fit` config group (pgolf/config.py FitConfig,
conf/fit/default.yaml): `pgolf fit-budget runs/x --max-bytes 420KB fit.bits=[5,6,7]`.
Codec and clip are outer axes: the search runs once per (codec, clip, clip_k)
and pools the candidates. codec=auto in the base config searches with `ctx`
(the context coder: exact sizes, never larger than `rans`, and usually the
smallest);
any other codec is searched as given. Byte-shuffle is not modelled: export
only keeps a shuffled stream when it is smaller, so predicted sizes are upper
bounds. export.prune and export.prune_kind in the base config are ignored: pruning
is a search variable; so are export.tensor_bits entries other than 16 (a 16
keeps that tensor float, as in export). Nothing is written when the budget is
infeasible. Besides the artifact, the CSV and the JSON summary, the chosen
configuration is saved in full as YAML (fit/fit-<bytes>.yaml): exporting the
source with its `export` section writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf import bundle
from pgolf import config as C
from pgolf import tables as T
from pgolf.errors import BudgetError, ConfigError
from pgolf.experiment import load_any, write_artifact_record
from pgolf.export import codecs
from pgolf.export.artifact import (
    FLOAT_DTYPES,
    check_export_config,
    check_tensor_bits,
    export_state_dict,
    load_artifact,
    tensor_streams,
    write_artifact,
)
from pgolf.export.gptq import gptq_levels
from pgolf.export.quantize import (
    GROUPS,
    QuantizedTensor,
    as_rows,
    dequantize,
    is_control,
    quantize_rows,
    tensor_group,
)
from pgolf.job import ARTIFACT_SUFFIX, ValData, calibration_hessians, load_val_data, rebuild_model, score, scored_on
from pgolf.progress import ProgressFn, no_progress
from pgolf.runs import atomic_write_json, atomic_write_text
from pgolf.train.device import DeviceSetup, resolve_device

_MAX_COMBOS = 5_000_000
_BISECT_STEPS = 14
_ANCHORS = ("uniform", "uniform-fill")
"""Origins measured whatever their proxy: the plain same-bits-everywhere choices the result must not lose to."""


@dataclass(frozen=True)
class _Setting:
    clip: str
    clip_k: float
    codec: str


@dataclass
class Candidate:
    """One point of the search: group bits, clip, codec and pruning, with its exact size."""

    group_bits: dict[str, int]
    clip: str
    clip_k: float
    codec: str
    prune: float
    stream_bytes: int
    """Exact coded bytes of all streams."""
    proxy: float
    """Fisher-weighted squared round-trip error (lower is better)."""
    model_bytes: int = 0
    """Predicted artifact file bytes (streams + header estimate); the written file is measured apart from it."""
    val_bpb: float | None = None
    origin: str = ""
    """How the search reached it: knapsack, fill, uniform or uniform-fill, with +bits when tensors were raised."""
    tensor_bits: dict[str, int] = field(default_factory=dict)
    """Single tensors whose bits differ from their group's (the upward fill)."""

    def bits_of(self, name: str) -> int:
        return self.tensor_bits.get(name, self.group_bits[tensor_group(name)])

    def setting(self) -> _Setting:
        return _Setting(self.clip, self.clip_k, self.codec)

    def label(self) -> str:
        bits = " ".join(f"{_SHORT[g]}{b}" for g, b in self.group_bits.items())
        if self.tensor_bits:
            bits += " [" + " ".join(sorted(f"{short_tensor_name(n)}={b}" for n, b in self.tensor_bits.items())) + "]"
        clip = f"sdclip{self.clip_k:g}" if self.clip == "sdclip" else self.clip
        return f"{bits} {clip} {self.codec}" + (f" prune{self.prune:.4f}" if self.prune > 0 else "")



_SHORT = {"embed": "e", "attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_out": "o", "mlp_in": "i", "mlp_out": "m",
          "other": "x"}
_BLOCK_RE = re.compile(r"blocks\.(\d+)\.")


def short_tensor_name(name: str) -> str:
    """Label of one tensor: group letter + block index (`blocks.3.mlp.fc.weight` -> i3), else the name less
    `.weight` (tok_emb)."""
    match = _BLOCK_RE.match(name)
    group = tensor_group(name)
    return f"{_SHORT[group]}{match.group(1)}" if match and group != "other" else name.removesuffix(".weight")


@dataclass
class _Quantized:
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
class FitResult:
    summary: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)


# --------------------------------------------------------------------------- small pure pieces

def budget_label(max_bytes: int) -> str:
    """File-name label of a budget: fit-<bytes>."""
    return f"fit-{max_bytes}"


def output_paths(source: Path, max_bytes: int) -> dict[str, Path]:
    """Artifact, CSV, JSON and config paths: <run>/artifacts/ and <run>/fit/ for a run dir, beside a file otherwise."""
    source = Path(source)
    label = budget_label(max_bytes)
    if source.is_dir():
        return {"artifact": source / "artifacts" / f"{label}{ARTIFACT_SUFFIX}",
                "csv": source / "fit" / f"{label}.csv", "json": source / "fit" / f"{label}.json",
                "config": source / "fit" / f"{label}.yaml"}
    stem = f"{source.stem}.{label}"
    return {"artifact": source.with_name(stem + ARTIFACT_SUFFIX), "csv": source.with_name(stem + ".csv"),
            "json": source.with_name(stem + ".json"), "config": source.with_name(stem + ".yaml")}


def check_space(space: C.FitConfig) -> None:
    """ConfigError for a search space with no candidates or values export cannot use (installed codecs too)."""
    C.check_fit_config(space)
    for codec in space.codecs:
        codecs.check_codec(codec)


def budget_limit(max_bytes: int, margin: int) -> int:
    """max_bytes - margin, after checking both."""
    if max_bytes <= 0:
        raise ConfigError(f"--max-bytes must be > 0, got {max_bytes}")
    if margin < 0:
        raise ConfigError(f"--margin must be >= 0, got {margin}")
    if margin >= max_bytes:
        raise ConfigError(f"--margin ({margin:,} bytes) must be smaller than --max-bytes ({max_bytes:,} bytes)")
    return max_bytes - margin


# --------------------------------------------------------------------------- sensitivity

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


# --------------------------------------------------------------------------- the cache of quantized tensors

class _SizeTable:
    """Quantized tensors, their coded sizes and weighted errors, computed once per (name, bits, clip, k, codec)."""

    def __init__(self, state: dict[str, Tensor], quant_names: list[str], fisher: dict[str, Tensor],
                 cfg: C.ExportConfig, hessians: dict[str, Tensor] | None = None):
        self.state, self.quant_names, self.fisher, self.cfg = state, quant_names, fisher, cfg
        self.hessians = hessians
        """GPTQ's layer Hessians when export.gptq (the levels of those tensors are GPTQ's, as export makes them)."""
        self.cache: dict[tuple, _Quantized] = {}
        self.pruned_cache: dict[tuple, tuple[int, float]] = {}

    def get(self, name: str, bits: int, clip: str, clip_k: float, codec: str) -> _Quantized:
        key = (name, bits, clip, clip_k, codec)
        if key not in self.cache:
            self.cache[key] = self._compute(name, bits, clip, clip_k, codec)
        return self.cache[key]

    def cost(self, name: str, bits: int, s: _Setting, prune: float) -> tuple[int, float]:
        """(exact coded bytes, weighted error) of one tensor at `bits` after selective pruning at `prune`."""
        entry = self.get(name, bits, s.clip, s.clip_k, s.codec)
        if prune == 0:
            return entry.q_bytes + entry.scale_bytes, entry.err
        key = (name, bits, s, prune)
        if key not in self.pruned_cache:
            qt, added = pruned_levels(entry, prune)
            q_bytes = entry.q_bytes if qt is entry.qt else len(codecs.encode(
                s.codec, *_stream_args(tensor_streams(qt)["q"], self.cfg.codec_level)))
            self.pruned_cache[key] = (q_bytes + entry.scale_bytes, entry.err + added)
        return self.pruned_cache[key]

    def _compute(self, name: str, bits: int, clip: str, clip_k: float, codec: str) -> _Quantized:
        w = self.state[name].detach().cpu()
        e = self.cfg
        qt = quantize_rows(w, bits, clip, e.clip_percentile, clip_k, e.scale_min)
        if e.gptq and name in self.hessians:
            qt = gptq_levels(w, self.hessians[name], qt, e.gptq_damp, name)
        streams = tensor_streams(qt)
        q_bytes = len(codecs.encode(codec, *_stream_args(streams["q"], e.codec_level)))
        scale_bytes = len(codecs.encode(codec, *_stream_args(streams["scale"], e.codec_level)))
        rows = as_rows(w)  # (R, C)
        deq = dequantize(qt).reshape(rows.shape)
        fisher = self.fisher[name].reshape(rows.shape)
        err = float((fisher.double() * (rows - deq).double() ** 2).sum())
        # the same cost and stable ordering as export.prune.prune_selective, computed once
        cost = (rows**2 - (rows - qt.q.reshape(rows.shape).float() * qt.scale.float()[:, None]) ** 2).reshape(-1)
        nonzero = torch.nonzero(qt.q.reshape(-1)).squeeze(1)
        order = nonzero[torch.sort(cost[nonzero], stable=True).indices]
        added = (fisher.reshape(-1)[order].double() * cost[order].double()).numpy()
        return _Quantized(qt=qt, scale_bytes=scale_bytes, q_bytes=q_bytes, err=err, order=order,
                          err_cumsum=np.cumsum(added))


def _stream_args(stream: tuple[bytes, int, int], level: int) -> tuple:
    raw, itemsize, row_len = stream
    return raw, level, itemsize, row_len


def pruned_levels(entry: _Quantized, prune: float) -> tuple[QuantizedTensor, float]:
    """(levels after selective pruning at `prune`, added weighted error), exactly as export prunes them."""
    numel = entry.qt.q.numel()
    k = min(round(prune * numel), entry.order.numel())
    if k == 0:
        return entry.qt, 0.0
    flat = entry.qt.q.clone().reshape(-1)
    flat[entry.order[:k]] = 0
    return QuantizedTensor(q=flat.reshape(entry.qt.q.shape), scale=entry.qt.scale, bits=entry.qt.bits), \
        float(entry.err_cumsum[k - 1])


# --------------------------------------------------------------------------- the search

class _Search:
    """State of one fit: the model, the cached sizes, the candidates found and the evaluations spent."""

    def __init__(self, state: dict[str, Tensor], model_config: dict, cfg: C.Config, space: C.FitConfig,
                 search_val: ValData, setup: DeviceSetup, progress: ProgressFn):
        self.state, self.model_config, self.cfg, self.space = state, model_config, cfg, space
        self.search_val, self.setup, self.progress = search_val, setup, progress
        e = cfg.export
        self.quant_names = [n for n, t in state.items() if not is_control(n) and t.numel() > e.float_max_numel
                            and e.group_bits.for_group(tensor_group(n), e.bits) != 16
                            and e.tensor_bits.get(n) != 16]
        self.groups = [g for g in GROUPS if any(tensor_group(n) == g for n in self.quant_names)]
        self.evaluations = 0
        self._float_bytes: dict[str, int] = {}

    def key(self, cand: Candidate) -> tuple:
        """What the export writes: every quantized tensor's bits, clip, codec and pruning (not how it was found)."""
        return (tuple(cand.bits_of(n) for n in self.quant_names), cand.setting(), round(cand.prune, 9))

    # -- sizes
    def float_bytes(self, codec: str) -> int:
        """Coded bytes of the kept-float tensors (constant across candidates)."""
        if codec in self._float_bytes:
            return self._float_bytes[codec]
        total = 0
        for name, t in self.state.items():
            if name in self.quant_names:
                continue
            dtype = FLOAT_DTYPES["float32"] if is_control(name) else FLOAT_DTYPES[self.cfg.export.float_dtype]
            for stream in tensor_streams(t.detach().cpu().to(dtype)).values():
                total += len(codecs.encode(codec, *_stream_args(stream, self.cfg.export.codec_level)))
        self._float_bytes[codec] = total
        return total

    def group_options(self, table: _SizeTable, s: _Setting) -> dict[str, list[tuple[int, int, float]]]:
        """group -> [(bits, stream bytes, weighted error)] at prune 0."""
        options = {}
        todo = sum(len(self.bits_for(g)) * sum(tensor_group(n) == g for n in self.quant_names) for g in self.groups)
        done = 0
        for g in self.groups:
            names = [n for n in self.quant_names if tensor_group(n) == g]
            options[g] = []
            for bits in self.bits_for(g):
                entries = []
                for n in names:
                    entries.append(table.get(n, bits, s.clip, s.clip_k, s.codec))
                    done += 1
                    self.progress("fit: quantize", done, todo, clip=s.clip, codec=s.codec)
                options[g].append((bits, sum(x.q_bytes + x.scale_bytes for x in entries), sum(x.err for x in entries)))
        return options

    def bits_for(self, group: str) -> tuple[int, ...]:
        return tuple(sorted(set(self.space.embed_bits if group == "embed" else self.space.bits)))

    def pruned_size(self, table: _SizeTable, cand: Candidate, prune: float) -> tuple[int, float]:
        """(exact stream bytes, proxy) of `cand`'s bits at selective-pruning fraction `prune`."""
        total, proxy = self.float_bytes(cand.codec), 0.0
        s = cand.setting()
        for n in self.quant_names:
            size, err = table.cost(n, cand.bits_of(n), s, prune)
            total += size
            proxy += err
        return total, proxy

    def resized(self, table: _SizeTable, cand: Candidate, tensor_bits: dict[str, int], prune: float) -> Candidate:
        """`cand` with other single-tensor bits and pruning, its exact size and proxy recomputed."""
        out = dataclasses.replace(cand, tensor_bits=dict(tensor_bits), prune=prune)
        out.stream_bytes, out.proxy = self.pruned_size(table, out, prune)
        return out

    def top_up(self, table: _SizeTable, cand: Candidate, stream_limit: int) -> Candidate | None:
        """`cand` with single tensors raised one bit-width at a time, best proxy gain per byte first, until no
        raise fits `stream_limit`; None when not even one fits."""
        s, bits = cand.setting(), {n: cand.bits_of(n) for n in self.quant_names}

        def raise_of(n: str) -> tuple | None:
            up = [b for b in self.bits_for(tensor_group(n)) if b > bits[n]]
            if not up:
                return None
            size_now, err_now = table.cost(n, bits[n], s, cand.prune)
            size_up, err_up = table.cost(n, up[0], s, cand.prune)
            gain, extra = err_now - err_up, size_up - size_now
            if gain <= 0:
                return None
            return (-(gain / extra) if extra > 0 else -math.inf, n, up[0], extra)

        heap = [r for r in map(raise_of, self.quant_names) if r is not None]
        heapq.heapify(heap)
        size, raised = cand.stream_bytes, False
        while heap:
            _, n, up, extra = heapq.heappop(heap)
            if size + extra > stream_limit:
                continue  # the room only shrinks: this raise never fits later
            bits[n], size, raised = up, size + extra, True
            nxt = raise_of(n)
            if nxt is not None:
                heapq.heappush(heap, nxt)
            self.progress("fit: raise tensors", size, stream_limit)
        if not raised:
            return None
        tensor_bits = {n: b for n, b in bits.items() if b != cand.group_bits[tensor_group(n)]}
        out = self.resized(table, cand, tensor_bits, cand.prune)
        out.origin = cand.origin + "+bits"
        return out

    def fill(self, table: _SizeTable, cand: Candidate, stream_limit: int) -> Candidate | None:
        """`cand` (over the limit at prune 0) pruned to fit by bisection on exact sizes; None if max_prune won't do."""
        hi = self.space.max_prune
        hi_size, hi_proxy = self.pruned_size(table, cand, hi)
        if hi <= 0 or hi_size > stream_limit:
            return None
        lo = 0.0
        for _ in range(_BISECT_STEPS):
            if hi_size >= self.space.fill * stream_limit:
                break
            mid = (lo + hi) / 2
            size, proxy = self.pruned_size(table, cand, mid)
            if size <= stream_limit:
                hi, hi_size, hi_proxy = mid, size, proxy
            else:
                lo = mid
            self.progress("fit: fill", hi_size, stream_limit, prune=hi)
        return dataclasses.replace(cand, prune=hi, stream_bytes=hi_size, proxy=hi_proxy, origin=cand.origin + "-fill")

    def candidates(self, table: _SizeTable, s: _Setting, stream_limit: int) -> list[Candidate]:
        """Knapsack best, proxy-frontier points above the limit pruned to fit, and the uniform anchors."""
        options = self.group_options(table, s)
        fixed = self.float_bytes(s.codec)
        n_combos = math.prod(len(options[g]) for g in self.groups)
        if n_combos > _MAX_COMBOS:
            raise ConfigError(f"fit search space has {n_combos:,} bit combinations (limit {_MAX_COMBOS:,}); "
                              "use fewer bit-widths")
        idx = np.array(list(itertools.product(*[range(len(options[g])) for g in self.groups])), dtype=np.int64)
        sizes = np.full(len(idx), fixed, dtype=np.int64)
        proxies = np.zeros(len(idx))
        for j, g in enumerate(self.groups):
            sizes += np.array([o[1] for o in options[g]], dtype=np.int64)[idx[:, j]]
            proxies += np.array([o[2] for o in options[g]])[idx[:, j]]

        def make(row: int, origin: str) -> Candidate:
            bits = {g: options[g][idx[row, j]][0] for j, g in enumerate(self.groups)}
            return Candidate(group_bits=bits, clip=s.clip, clip_k=s.clip_k, codec=s.codec, prune=0.0,
                             stream_bytes=int(sizes[row]), proxy=float(proxies[row]), origin=origin)

        out = []
        by_size = np.lexsort((proxies, sizes))
        frontier = by_size[proxies[by_size] < np.minimum.accumulate(np.r_[np.inf, proxies[by_size]])[:-1]]
        fitting = frontier[sizes[frontier] <= stream_limit]
        if len(fitting):
            out.append(make(int(fitting[-1]), "knapsack"))
        for row in frontier[sizes[frontier] > stream_limit][: self.space.fill_candidates]:
            filled = self.fill(table, make(int(row), "knapsack"), stream_limit)
            if filled is not None:
                out.append(filled)
        out += self.uniform_anchors(options, idx, sizes, make, table, stream_limit)
        return out + [t for t in (self.top_up(table, c, stream_limit) for c in out) if t is not None]

    def uniform_anchors(self, options, idx, sizes, make, table, stream_limit) -> list[Candidate]:
        """The highest uniform bit-width that fits, and the next one up pruned to fit."""
        shared = sorted(set(self.space.bits) & set(self.space.embed_bits), reverse=True)
        rows = {}
        for bits in shared:
            want = np.array([[o[0] for o in options[g]].index(bits) for g in self.groups])
            rows[bits] = int(np.flatnonzero((idx == want).all(axis=1))[0])
        out, above = [], None
        for bits in shared:
            if sizes[rows[bits]] <= stream_limit:
                out.append(make(rows[bits], "uniform"))
                break
            above = bits
        if above is not None:
            filled = self.fill(table, make(rows[above], "uniform"), stream_limit)
            if filled is not None:
                out.append(filled)
        return out

    def smallest(self, table: _SizeTable, s: _Setting) -> int:
        """Exact stream bytes of the cheapest point: lowest bits everywhere, at prune 0 or max_prune."""
        cand = Candidate(group_bits={g: min(self.bits_for(g)) for g in self.groups}, clip=s.clip, clip_k=s.clip_k,
                         codec=s.codec, prune=0.0, stream_bytes=0, proxy=0.0)
        return min(self.pruned_size(table, cand, 0.0)[0], self.pruned_size(table, cand, self.space.max_prune)[0])

    # -- evaluation
    def dequantized_state(self, table: _SizeTable, cand: Candidate) -> dict[str, Tensor]:
        out = {}
        for name, t in self.state.items():
            if name in self.quant_names:
                entry = table.get(name, cand.bits_of(name), cand.clip, cand.clip_k, cand.codec)
                out[name] = dequantize(pruned_levels(entry, cand.prune)[0])
            else:
                dtype = "float32" if is_control(name) else self.cfg.export.float_dtype
                out[name] = t.detach().cpu().to(FLOAT_DTYPES[dtype]).float()
        return out

    def evaluate(self, state: dict[str, Tensor]) -> float:
        self.evaluations += 1
        model = rebuild_model(self.model_config, state, where="fit candidate")
        return score(model, self.search_val, self.cfg.train.seq_len, self.cfg.export.eval_stride, self.setup).bpb

    def measure(self, table: _SizeTable, cand: Candidate) -> float:
        """Search-slice BPB of `cand` (stored on it)."""
        cand.val_bpb = self.evaluate(self.dequantized_state(table, cand))
        return cand.val_bpb

    def choose(self, table: _SizeTable, pool: list[Candidate], stream_limit: int, header_bytes: int
               ) -> tuple[Candidate, list[Candidate]]:
        """(best measured candidate, all measured): the `evals` best by proxy and the anchors, then the winner's
        raised copy when it was not measured yet, kept only if its BPB is not worse."""
        ranked = sorted(pool, key=lambda c: c.proxy)
        measured = ranked[: self.space.evals] + [c for c in ranked[self.space.evals :] if c.origin in _ANCHORS]
        for i, cand in enumerate(measured):
            self.measure(table, cand)
            self.progress("fit: evaluate", i + 1, len(measured), bpb=cand.val_bpb)
        chosen = min(measured, key=lambda c: (c.val_bpb, c.model_bytes))
        raised = self.top_up(table, chosen, stream_limit)
        if raised is not None and self.key(raised) not in {self.key(c) for c in measured}:
            raised.model_bytes = raised.stream_bytes + header_bytes
            self.measure(table, raised)
            measured.append(raised)
            if raised.val_bpb <= chosen.val_bpb:
                chosen = raised
        return chosen, measured


def export_config_of(cand: Candidate, base: C.ExportConfig) -> C.ExportConfig:
    """The ExportConfig that writes `cand` (every group's bits explicit, raised tensors and kept-float ones named)."""
    bits = {g: cand.group_bits.get(g, base.group_bits.for_group(g, base.bits)) for g in GROUPS}
    kept_float = {n: 16 for n, b in base.tensor_bits.items() if b == 16}
    return dataclasses.replace(
        base, bits=max(cand.group_bits.values()), group_bits=C.GroupBits(**bits),
        tensor_bits={**kept_float, **cand.tensor_bits}, clip=cand.clip,
        clip_k=cand.clip_k if cand.clip == "sdclip" else base.clip_k, codec=cand.codec, prune=cand.prune,
        prune_kind="selective")


def _settings(cfg: C.ExportConfig, space: C.FitConfig) -> list[_Setting]:
    clips = space.clips or (cfg.clip,)
    codec_list = space.codecs or (("ctx",) if cfg.codec == "auto" else (cfg.codec,))
    out = []
    for codec in codec_list:
        for clip in clips:
            ks = space.sdclip_ks if clip == "sdclip" and space.clips else (cfg.clip_k,)
            out += [_Setting(clip=clip, clip_k=float(k), codec=codec) for k in ks]
    return out


def _load_float(source: Path) -> tuple[dict, dict[str, Tensor], str]:
    """A run directory's float checkpoint (never one of its artifacts), or whatever `source` is."""
    source = Path(source)
    if source.is_dir() and (source / "model.safetensors").is_file():
        return load_any(source / "model.safetensors")
    return load_any(source)


def _header_overhead(state: dict[str, Tensor], model_config: dict, base: C.ExportConfig, codec: str) -> int:
    """Frame + header bytes of a real (cheap: clip=max) export with the same tensors and codec."""
    cheap = dataclasses.replace(base, clip="max", codec=codec, prune=0.0, shuffle=False, gptq=False)
    return export_state_dict(state, model_config, cheap).overhead_bytes


# --------------------------------------------------------------------------- the verb

def fit_budget(source: Path, cfg: C.Config, max_bytes: int, margin: int = 0,
               progress: ProgressFn = no_progress) -> FitResult:
    """`pgolf fit-budget`: search cfg.fit, export the best fitting candidate, verify it on disk, score it, write
    tables and the chosen config."""
    started = time.time()
    space = cfg.fit
    limit_total = budget_limit(max_bytes, margin)
    check_space(space)
    check_export_config(cfg.export)
    model_config, state, kind = _load_float(source)
    check_tensor_bits(cfg.export, list(state))
    cfg.model.vocab_size = model_config["vocab_size"]
    setup = resolve_device(cfg.device)
    val = load_val_data(cfg, cfg.train.seq_len, cfg.data.val_tokens)
    n_search = val.tokens.numel() if space.val_tokens == 0 else min(val.tokens.numel(), space.val_tokens + 1)
    search_val = dataclasses.replace(val, tokens=val.tokens[:n_search])
    search = _Search(state, model_config, cfg, space, search_val, setup, progress)
    if not search.quant_names:
        raise ConfigError(f"fit-budget: {source} has no tensor to quantize (all stay float); nothing to search")
    code_bytes = code_reserve(cfg, search.quant_names)

    settings = _settings(cfg.export, space)
    overhead = _header_overhead(state, model_config, cfg.export, settings[0].codec)
    slack = max(64, overhead // 50)
    limit_model = limit_total - code_bytes

    model = rebuild_model(model_config, state, where=source)
    fisher = fisher_weights(model, val.tokens[: space.fisher_tokens + 1], space.fisher_seq_len, search.quant_names)
    table = _SizeTable(state, search.quant_names, fisher, cfg.export,
                       calibration_hessians(model, cfg, setup))

    pool: dict[tuple, Candidate] = {}
    smallest = None
    stream_limit = limit_model - overhead - slack
    for s in settings:
        for cand in search.candidates(table, s, stream_limit):
            cand.model_bytes = cand.stream_bytes + overhead + slack
            key = search.key(cand)
            if key not in pool or cand.origin in _ANCHORS:  # an anchor is always measured; keep it as one
                pool[key] = cand
        size = search.smallest(table, s) + overhead + code_bytes
        smallest = size if smallest is None else min(smallest, size)
    if not pool:
        raise BudgetError(f"budget {max_bytes:,} - margin {margin:,} = {limit_total:,} bytes cannot be met: the "
                          f"smallest configuration reachable is {smallest:,} bytes total ({code_bytes:,} of them code)")

    float_search_bpb = search.evaluate(state)
    chosen, to_eval = search.choose(table, list(pool.values()), stream_limit, overhead + slack)
    chosen, export_cfg, blob_result = _export_verified(search, table, chosen, cfg, limit_model)
    chosen_cfg = dataclasses.replace(cfg, export=export_cfg)
    code_bytes = bundle.count_code_bytes(chosen_cfg)  # the script pack ships for the chosen config
    evaluated = to_eval if chosen in to_eval else [*to_eval, chosen]
    paths = output_paths(source, max_bytes)
    write_artifact(paths["artifact"], blob_result)
    file_bytes = paths["artifact"].stat().st_size
    if file_bytes + code_bytes > limit_total:
        paths["artifact"].unlink()
        raise BudgetError(f"{paths['artifact']}: {file_bytes:,} + {code_bytes:,} code bytes is over "
                          f"{limit_total:,}; removed")
    saved_config, restored = load_artifact(paths["artifact"])
    rt = score(rebuild_model(saved_config, restored, where=paths["artifact"]), val, cfg.train.seq_len,
               cfg.export.eval_stride, setup, progress)
    float_final = score(model, val, cfg.train.seq_len, cfg.export.eval_stride, setup, progress)
    search.evaluations += 2
    write_artifact_record(paths["artifact"], chosen_cfg, {
        "val_loss_roundtrip": rt.loss, "val_bpb_roundtrip": rt.bpb, "val_tokens_roundtrip": rt.tokens,
        **scored_on(setup), "bytes": {"model": file_bytes, "code": code_bytes, "total": file_bytes + code_bytes}})
    chosen.model_bytes = chosen.stream_bytes + overhead + slack  # a shrunk choice kept its parent's prediction

    rows = candidate_frame(evaluated, chosen, file_bytes, code_bytes, limit_total, float_search_bpb)
    summary = {
        "source": kind, "params": sum(t.numel() for t in state.values()),
        "max_bytes": max_bytes, "margin": margin, "limit_bytes": limit_total,
        "artifact": str(paths["artifact"]), "label": chosen.label(),
        "export": dataclasses.asdict(export_cfg),
        "bytes": {"model": file_bytes, "code": code_bytes, "total": file_bytes + code_bytes},
        "headroom_bytes": limit_total - file_bytes - code_bytes,
        "budget_used": (file_bytes + code_bytes) / limit_total,
        "val_bpb": float_final.bpb, "val_loss": float_final.loss,
        "val_bpb_roundtrip": rt.bpb, "val_loss_roundtrip": rt.loss,
        "val_tokens": rt.tokens, "val_bytes": rt.bytes,
        "search_val_tokens": search_val.tokens.numel() - 1, "search_val_bpb_float": float_search_bpb,
        "bpb_evaluations": search.evaluations, "size_candidates": len(pool),
        "header_overhead_bytes": blob_result.overhead_bytes,
        "wall_time_s": time.time() - started,
        "candidates": T.records(rows),
        "csv": str(paths["csv"]), "json": str(paths["json"]), "config": str(paths["config"]),
    }
    T.write_csv(rows, paths["csv"])
    atomic_write_text(paths["config"], C.to_yaml(chosen_cfg))
    atomic_write_json(paths["json"], summary)
    return FitResult(summary=summary, candidates=evaluated)


def code_reserve(cfg: C.Config, quant_names: list[str]) -> int:
    """Code bytes the search reserves: the packed script of the largest export config the search can choose (every
    quantized tensor named in tensor_bits, selective pruning when allowed), so the chosen config's own script,
    measured after the choice, fits too."""
    widest = dataclasses.replace(cfg.export, tensor_bits={name: 7 for name in quant_names})
    if cfg.fit.max_prune > 0:
        widest = dataclasses.replace(widest, prune=cfg.fit.max_prune, prune_kind="selective")
    return max(bundle.count_code_bytes(cfg), bundle.count_code_bytes(dataclasses.replace(cfg, export=widest)))


def _export_verified(search: _Search, table: _SizeTable, chosen: Candidate, cfg: C.Config, limit_model: int):
    """Real export of `chosen`; when the header estimate was short, shrink it to the measured overhead (3 tries)."""
    for _ in range(3):
        export_cfg = export_config_of(chosen, cfg.export)
        result = export_state_dict(search.state, search.model_config, export_cfg, hessians=table.hessians)
        if result.model_bytes <= limit_model:
            return chosen, export_cfg, result
        shrunk = _shrink(search, table, chosen, limit_model - result.overhead_bytes - 16)
        if shrunk is None:
            break
        search.measure(table, shrunk)
        chosen = shrunk
    raise BudgetError(f"fit-budget: the chosen export ({chosen.label()}) does not fit {limit_model:,} model bytes "
                      "after re-filling; lower --max-bytes headroom or widen the search space")


def _shrink(search: _Search, table: _SizeTable, cand: Candidate, stream_limit: int) -> Candidate | None:
    """`cand` under a lower stream limit: its tensor raises redone, else its group bits re-pruned and raised."""
    base = search.resized(table, cand, {}, cand.prune)
    if base.stream_bytes > stream_limit:
        base = search.fill(table, search.resized(table, cand, {}, 0.0), stream_limit)
        if base is None:
            return None
    return search.top_up(table, base, stream_limit) or base


# --------------------------------------------------------------------------- tables

ROW_FIELDS = ("config", "origin", "predicted_model_bytes", "measured_model_bytes", "code_bytes", "total_bytes",
              "headroom_bytes", "bytes_basis", "val_bpb", "delta_bpb", "proxy", "frontier", "chosen")


def candidate_frame(evaluated: list[Candidate], chosen: Candidate, measured_bytes: int, code_bytes: int,
                    limit_total: int, float_bpb: float) -> pd.DataFrame:
    """One row per evaluated candidate (search-slice BPB) in ROW_FIELDS order, sorted by total bytes, the Pareto
    frontier (of total bytes against BPB) and the choice marked.

    Only the chosen candidate is ever written: `measured_model_bytes` is its artifact's file size
    (`measured_bytes`) and NA for the rest; `predicted_model_bytes` is every candidate's search prediction
    (streams + header estimate + slack), the chosen one's too. `total_bytes` and `headroom_bytes` use the measured
    size where there is one, else the prediction; `bytes_basis` says which ("measured" or "predicted").
    """
    def row(c: Candidate) -> dict[str, Any]:
        measured = measured_bytes if c is chosen else None
        model_bytes = c.model_bytes if measured is None else measured
        return {"config": c.label(), "origin": c.origin, "predicted_model_bytes": c.model_bytes,
                "measured_model_bytes": measured, "code_bytes": code_bytes, "total_bytes": model_bytes + code_bytes,
                "headroom_bytes": limit_total - model_bytes - code_bytes,
                "bytes_basis": "predicted" if measured is None else "measured",
                "val_bpb": c.val_bpb, "delta_bpb": c.val_bpb - float_bpb, "proxy": c.proxy, "frontier": False,
                "chosen": c is chosen}

    rows = pd.DataFrame([row(c) for c in evaluated], columns=list(ROW_FIELDS))
    rows["measured_model_bytes"] = rows["measured_model_bytes"].astype("Int64")
    rows = rows.sort_values("total_bytes", kind="stable", ignore_index=True)
    rows["frontier"] = T.pareto_front(rows["total_bytes"], rows["val_bpb"])
    return rows

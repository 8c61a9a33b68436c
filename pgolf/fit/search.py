"""Candidates and the search over them: group bits by knapsack, fills by pruning, single tensors raised,
anchors, and which candidates are measured (steps 3-6, see `pgolf.fit`).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import re
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from pgolf import config as C
from pgolf.errors import ConfigError
from pgolf.export.artifact import (
    FLOAT_DTYPES,
    tensor_streams,
)
from pgolf.export.coding import codecs
from pgolf.export.quantize import (
    GROUPS,
    dequantize,
    is_control,
    tensor_group,
)
from pgolf.fit.sizes import Setting, SizeTable, pruned_levels, stream_args
from pgolf.jobs.scorer import Scorer
from pgolf.progress import ProgressFn

_MAX_COMBOS = 5_000_000


_BISECT_STEPS = 14


ANCHORS = ("uniform", "uniform-fill")
"""Origins measured whatever their proxy: the plain same-bits-everywhere choices the result must not lose to."""


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
    lqer_rank: int = 0
    lqer_tensors: tuple[str, ...] = ()
    """Tensors with LQER factors of rank `lqer_rank` (the upward fill; unpruned candidates only)."""

    def bits_of(self, name: str) -> int:
        return self.tensor_bits.get(name, self.group_bits[tensor_group(name)])

    def setting(self) -> Setting:
        return Setting(self.clip, self.clip_k, self.codec)

    def label(self) -> str:
        bits = " ".join(f"{_SHORT[g]}{b}" for g, b in self.group_bits.items())
        if self.tensor_bits:
            bits += " [" + " ".join(sorted(f"{short_tensor_name(n)}={b}" for n, b in self.tensor_bits.items())) + "]"
        clip = f"sdclip{self.clip_k:g}" if self.clip == "sdclip" else self.clip
        if self.lqer_tensors:
            bits += f" lqer{self.lqer_rank}[" + " ".join(sorted(map(short_tensor_name, self.lqer_tensors))) + "]"
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


class Search:
    """State of one fit: the model, the cached sizes, the candidates found and the evaluations spent."""

    def __init__(self, state: dict[str, Tensor], model_config: dict, cfg: C.Config, space: C.FitConfig,
                 scorer: Scorer, progress: ProgressFn):
        self.state, self.model_config, self.cfg, self.space = state, model_config, cfg, space
        self.scorer, self.progress = scorer, progress  # scorer: the search slice (fit.val_tokens), silent
        e = cfg.export
        self.quant_names = [n for n, t in state.items() if not is_control(n) and t.numel() > e.float_max_numel
                            and e.group_bits.for_group(tensor_group(n), e.bits) != 16
                            and e.tensor_bits.get(n) != 16]
        self.groups = [g for g in GROUPS if any(tensor_group(n) == g for n in self.quant_names)]
        self.evaluations = 0
        self._float_bytes: dict[str, int] = {}

    def key(self, cand: Candidate) -> tuple:
        """What the export writes: every quantized tensor's bits, clip, codec and pruning (not how it was found)."""
        return (tuple(cand.bits_of(n) for n in self.quant_names), cand.setting(), round(cand.prune, 9),
                cand.lqer_rank, tuple(sorted(cand.lqer_tensors)))

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
                total += len(codecs.encode(codec, *stream_args(stream, self.cfg.export.codec_level)))
        self._float_bytes[codec] = total
        return total

    def group_options(self, table: SizeTable, s: Setting) -> dict[str, list[tuple[int, int, float]]]:
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

    def pruned_size(self, table: SizeTable, cand: Candidate, prune: float) -> tuple[int, float]:
        """(exact stream bytes, proxy) of `cand`'s bits at selective-pruning fraction `prune`."""
        total, proxy = self.float_bytes(cand.codec), 0.0
        s = cand.setting()
        for n in self.quant_names:
            size, err = table.cost(n, cand.bits_of(n), s, prune)
            if n in cand.lqer_tensors:  # unpruned only: fill drops the factors before it prunes
                lqer = table.lqer(n, cand.bits_of(n), s, cand.lqer_rank)
                size, err = size + lqer.extra_bytes, lqer.err
            total += size
            proxy += err
        return total, proxy

    def resized(self, table: SizeTable, cand: Candidate, tensor_bits: dict[str, int], prune: float) -> Candidate:
        """`cand` with other single-tensor bits and pruning, its exact size and proxy recomputed."""
        out = dataclasses.replace(cand, tensor_bits=dict(tensor_bits), prune=prune)
        out.stream_bytes, out.proxy = self.pruned_size(table, out, prune)
        return out

    def lqer_header(self, table: SizeTable, cand: Candidate) -> int:
        """Header bytes of `cand`'s LQER factors (not in stream_bytes, which counts coded streams only)."""
        return sum(table.lqer(n, cand.bits_of(n), cand.setting(), cand.lqer_rank).header_bytes
                   for n in cand.lqer_tensors)

    def top_ups(self, table: SizeTable, cand: Candidate, stream_limit: int) -> list[Candidate]:
        """`top_up` with bit raises only, and with LQER factors as a move too at each rank of fit.lqer_ranks."""
        ranks = [r for r in dict.fromkeys(self.space.lqer_ranks) if r > 0 and cand.prune == 0
                 and cand.lqer_rank in (0, r)]
        found = [self.top_up(table, cand, stream_limit, r) for r in [0, *ranks]]
        return [c for c in found if c is not None]

    def top_up(self, table: SizeTable, cand: Candidate, stream_limit: int, rank: int = 0) -> Candidate | None:
        """`cand` with single tensors raised one bit-width at a time (or, with `rank`, given LQER factors of that
        rank), best proxy gain per byte first, until no move fits `stream_limit`; None when not even one fits.
        A tensor with factors is not raised further."""
        s, bits = cand.setting(), {n: cand.bits_of(n) for n in self.quant_names}
        lqer = set(cand.lqer_tensors)
        rank = rank or cand.lqer_rank

        def cost(n: str) -> tuple[int, float]:
            if n in lqer:
                entry = table.lqer(n, bits[n], s, rank)
                return table.cost(n, bits[n], s, cand.prune)[0] + entry.extra_bytes, entry.err
            return table.cost(n, bits[n], s, cand.prune)

        def move_of(n: str, room: float = math.inf) -> tuple | None:
            """The best move of `n` by gain per byte among those of at most `room` bytes."""
            if n in lqer:
                return None
            size_now, err_now = cost(n)
            moves = []
            up = [b for b in self.bits_for(tensor_group(n)) if b > bits[n]]
            if up:
                size_up, err_up = table.cost(n, up[0], s, cand.prune)
                moves.append((err_now - err_up, size_up - size_now, up[0]))
            entry = table.lqer(n, bits[n], s, rank) if rank and cand.prune == 0 else None
            if entry is not None:  # priced with its lines in the header: they take room in the file too
                moves.append((err_now - entry.err, entry.extra_bytes + entry.header_bytes, "lqer"))
            moves = [m for m in moves if m[0] > 0 and m[1] <= room]
            if not moves:
                return None
            gain, extra, what = max(moves, key=lambda m: m[0] / m[1] if m[1] > 0 else math.inf)
            return (-(gain / extra) if extra > 0 else -math.inf, n, what, extra)

        heap = [r for r in map(move_of, self.quant_names) if r is not None]
        heapq.heapify(heap)
        size, moved = cand.stream_bytes + self.lqer_header(table, cand), False
        while heap:
            _, n, what, extra = heapq.heappop(heap)
            if size + extra > stream_limit:  # the room only shrinks: this move never fits later, a smaller one may
                smaller = move_of(n, stream_limit - size)
                if smaller is not None:
                    heapq.heappush(heap, smaller)
                continue
            if what == "lqer":
                lqer.add(n)
            else:
                bits[n] = what
            size, moved = size + extra, True
            nxt = move_of(n)
            if nxt is not None:
                heapq.heappush(heap, nxt)
            self.progress("fit: raise tensors", size, stream_limit)
        if not moved:
            return None
        tensor_bits = {n: b for n, b in bits.items() if b != cand.group_bits[tensor_group(n)]}
        out = dataclasses.replace(cand, lqer_rank=rank if lqer else 0, lqer_tensors=tuple(sorted(lqer)))
        out = self.resized(table, out, tensor_bits, cand.prune)
        out.origin = cand.origin + ("+lqer" if lqer - set(cand.lqer_tensors) else "+bits")
        return out

    def fill(self, table: SizeTable, cand: Candidate, stream_limit: int) -> Candidate | None:
        """`cand` (over the limit at prune 0) pruned to fit by bisection on exact sizes; None if max_prune won't do.
        LQER factors are dropped: the search prices them on unpruned levels only."""
        cand = dataclasses.replace(cand, lqer_rank=0, lqer_tensors=())
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

    def candidates(self, table: SizeTable, s: Setting, stream_limit: int) -> list[Candidate]:
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
        return out + [t for c in out for t in self.top_ups(table, c, stream_limit)]

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

    def smallest(self, table: SizeTable, s: Setting) -> int:
        """Exact stream bytes of the cheapest point: lowest bits everywhere, at prune 0 or max_prune."""
        cand = Candidate(group_bits={g: min(self.bits_for(g)) for g in self.groups}, clip=s.clip, clip_k=s.clip_k,
                         codec=s.codec, prune=0.0, stream_bytes=0, proxy=0.0)
        return min(self.pruned_size(table, cand, 0.0)[0], self.pruned_size(table, cand, self.space.max_prune)[0])

    # -- evaluation
    def dequantized_state(self, table: SizeTable, cand: Candidate) -> dict[str, Tensor]:
        out = {}
        for name, t in self.state.items():
            if name in cand.lqer_tensors:
                out[name] = dequantize(table.lqer(name, cand.bits_of(name), cand.setting(), cand.lqer_rank).qt)
            elif name in self.quant_names:
                entry = table.get(name, cand.bits_of(name), cand.clip, cand.clip_k, cand.codec)
                out[name] = dequantize(pruned_levels(entry, cand.prune)[0])
            else:
                dtype = "float32" if is_control(name) else self.cfg.export.float_dtype
                out[name] = t.detach().cpu().to(FLOAT_DTYPES[dtype]).float()
        return out

    def evaluate(self, state: dict[str, Tensor]) -> float:
        self.evaluations += 1
        return self.scorer.score_weights(self.model_config, state, where="fit candidate").static.bpb

    def measure(self, table: SizeTable, cand: Candidate) -> float:
        """Search-slice BPB of `cand` (stored on it)."""
        cand.val_bpb = self.evaluate(self.dequantized_state(table, cand))
        return cand.val_bpb

    def choose(self, table: SizeTable, pool: list[Candidate], stream_limit: int, header_bytes: int
               ) -> tuple[Candidate, list[Candidate]]:
        """(best measured candidate, all measured): the `evals` best by proxy and the anchors, then the winner's
        raised copy when it was not measured yet, kept only if its BPB is not worse."""
        ranked = sorted(pool, key=lambda c: c.proxy)
        measured = ranked[: self.space.evals] + [c for c in ranked[self.space.evals :] if c.origin in ANCHORS]
        for i, cand in enumerate(measured):
            self.measure(table, cand)
            self.progress("fit: evaluate", i + 1, len(measured), bpb=cand.val_bpb)
        chosen = min(measured, key=lambda c: (c.val_bpb, c.model_bytes))
        raised = self.top_up(table, chosen, stream_limit, chosen.lqer_rank)
        if raised is not None and self.key(raised) not in {self.key(c) for c in measured}:
            raised.model_bytes = raised.stream_bytes + header_bytes + self.lqer_header(table, raised)
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
        prune_kind="selective", lqer_rank=cand.lqer_rank, lqer_tensors=sorted(cand.lqer_tensors))


def search_settings(cfg: C.ExportConfig, space: C.FitConfig) -> list[Setting]:
    clips = space.clips or (cfg.clip,)
    codec_list = space.codecs or (("ctx",) if cfg.codec == "auto" else (cfg.codec,))
    out = []
    for codec in codec_list:
        for clip in clips:
            ks = space.sdclip_ks if clip == "sdclip" and space.clips else (cfg.clip_k,)
            out += [Setting(clip=clip, clip_k=float(k), codec=codec) for k in ks]
    return out

"""Candidates and the search over them: group bits (and sdclip ks, and the control tensors' width) by knapsack,
fills by pruning, single tensors raised, anchors, and which candidates are measured (steps 3-6, see `pgolf.fit`).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import re
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from pgolf import config as C
from pgolf.errors import ConfigError
from pgolf.export.artifact import FLOAT_DTYPES
from pgolf.export.quantize import (
    GROUPS,
    dequantize,
    is_control,
    tensor_group,
)
from pgolf.fit.sizes import Quant, Setting, SizeTable, pruned_levels
from pgolf.jobs.scorer import Scorer
from pgolf.progress import ProgressFn

_MAX_FRONTIER_WORK = 20_000_000
"""Most (frontier point, option) pairs one merge step of the knapsack may form."""


BISECT_STEPS = 14


ANCHORS = ("uniform", "uniform-fill")
"""Origins measured whatever their proxy: the plain same-bits-everywhere choices the result must not lose to."""


AUTO_CODECS = ("ctx", "rans")
"""What codec=auto is searched as: ctx (the smallest streams) and rans (no context-coder module in the script)."""


@dataclass
class Candidate:
    """One point of the search: group bits and sdclip ks, clip, codec, GPTQ, control width and pruning, with its
    exact size."""

    group_bits: dict[str, int]
    setting: Setting
    prune: float
    stream_bytes: int
    """Exact coded bytes of all streams."""
    proxy: float
    """Fisher-weighted squared round-trip error (lower is better)."""
    group_k: dict[str, float] = field(default_factory=dict)
    """sdclip k per group (empty for the other clips)."""
    control_dtype: str = "float32"
    stream_limit: int = 0
    """The stream bytes its setting may use: the budget less that setting's code bytes, header and slack."""
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

    def quant(self, name: str) -> Quant:
        """How the tensor `name` is written in this candidate."""
        s = self.setting
        return Quant(self.bits_of(name), s.clip, self.group_k.get(tensor_group(name), 0.0), s.gptq, s.codec)

    def label(self) -> str:
        bits = " ".join(f"{_SHORT[g]}{b}" for g, b in self.group_bits.items())
        if self.tensor_bits:
            bits += " [" + " ".join(sorted(f"{short_tensor_name(n)}={b}" for n, b in self.tensor_bits.items())) + "]"
        if self.lqer_tensors:
            bits += f" lqer{self.lqer_rank}[" + " ".join(sorted(map(short_tensor_name, self.lqer_tensors))) + "]"
        clip = self.setting.clip
        if clip == "sdclip":
            ks = set(self.group_k.values())
            clip += (f"{ks.pop():g}" if len(ks) == 1
                     else "(" + " ".join(f"{_SHORT[g]}{k:g}" for g, k in self.group_k.items()) + ")")
        extras = (" gptq" if self.setting.gptq else "") + (" ctl16" if self.control_dtype == "float16" else "")
        return f"{bits} {clip} {self.setting.codec}{extras}" + (f" prune{self.prune:.4f}" if self.prune > 0 else "")


_SHORT = {"embed": "e", "attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_out": "o", "mlp_in": "i", "mlp_out": "m",
          "other": "x"}


_BLOCK_RE = re.compile(r"blocks\.(\d+)\.")


def short_tensor_name(name: str) -> str:
    """Label of one tensor: group letter + block index (`blocks.3.mlp.fc.weight` -> i3), else the name less
    `.weight` (tok_emb)."""
    match = _BLOCK_RE.match(name)
    group = tensor_group(name)
    return f"{_SHORT[group]}{match.group(1)}" if match and group != "other" else name.removesuffix(".weight")


def pareto_sums(options: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (bytes, error) Pareto frontier of one option picked from each list, sums of both: (sizes, errors,
    picks), sorted by size, each point strictly better in error than every smaller one; picks[i, j] is the option
    of list j. Dominated partial sums are dropped after each list, which loses no frontier point of the whole."""
    sizes, errors = np.zeros(1, dtype=np.int64), np.zeros(1)
    picks = np.zeros((1, 0), dtype=np.int64)
    for j, opts in enumerate(options):
        if len(sizes) * len(opts) > _MAX_FRONTIER_WORK:
            raise ConfigError(f"fit search space is too large to combine ({len(sizes):,} x {len(opts)} options at "
                              f"list {j + 1}); use fewer bit-widths or sdclip ks")
        size_opts = np.array([o[0] for o in opts], dtype=np.int64)
        err_opts = np.array([o[1] for o in opts])
        sizes = (sizes[:, None] + size_opts[None, :]).reshape(-1)
        errors = (errors[:, None] + err_opts[None, :]).reshape(-1)
        picks = np.concatenate([np.repeat(picks, len(opts), axis=0),
                                np.tile(np.arange(len(opts)), len(picks))[:, None]], axis=1)
        order = np.lexsort((errors, sizes))
        best_before = np.minimum.accumulate(np.r_[np.inf, errors[order]])[:-1]
        keep = order[errors[order] < best_before]
        sizes, errors, picks = sizes[keep], errors[keep], picks[keep]
    return sizes, errors, picks


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
        self.control_names = [n for n in state if is_control(n)]
        self.float_names = [n for n in state if n not in self.quant_names and n not in self.control_names]
        self.groups = [g for g in GROUPS if any(tensor_group(n) == g for n in self.quant_names)]
        self.control_dtypes = tuple(dict.fromkeys(space.control_dtypes or (e.control_dtype,)))
        self.evaluations = 0

    def key(self, cand: Candidate) -> tuple:
        """What the export writes: every quantized tensor's Quant, the control width, pruning and LQER (not how the
        candidate was found)."""
        return (tuple(cand.quant(n) for n in self.quant_names), cand.control_dtype, round(cand.prune, 9),
                cand.lqer_rank, tuple(sorted(cand.lqer_tensors)))

    # -- sizes
    def float_bytes(self, table: SizeTable, codec: str) -> int:
        """Coded bytes of the kept-float tensors other than the control ones (constant across candidates)."""
        return table.float_cost(self.float_names, self.cfg.export.float_dtype, codec)[0]

    def ks_for(self, group: str, s: Setting) -> tuple[float, ...]:
        """sdclip ks tried for a group: fit.sdclip_ks when fit.clips lists sdclip, with the base export's own k of the
        group when its clip is sdclip (alone when the clip is not searched); (0,) for the other clips."""
        if s.clip != "sdclip":
            return (0.0,)
        e = self.cfg.export
        own = (e.group_clip_k.for_group(group, e.clip_k),) if e.clip == "sdclip" else ()
        searched = tuple(self.space.sdclip_ks) if "sdclip" in self.space.clips else ()
        return tuple(sorted(set(own + searched))) or (e.clip_k,)

    def quants(self, group: str, s: Setting) -> list[Quant]:
        return [Quant(bits, s.clip, k, s.gptq, s.codec) for bits in self.bits_for(group) for k in self.ks_for(group, s)]

    def group_options(self, table: SizeTable, s: Setting) -> dict[str, list[tuple[Quant, int, float]]]:
        """group -> [(Quant, stream bytes, weighted error)] at prune 0, one per bits and sdclip k."""
        options = {}
        names_of = {g: [n for n in self.quant_names if tensor_group(n) == g] for g in self.groups}
        todo = sum(len(self.quants(g, s)) * len(names_of[g]) for g in self.groups)
        done = 0
        for g in self.groups:
            quants = self.quants(g, s)
            for n in names_of[g]:
                table.prepare(n, quants)
            options[g] = []
            for q in quants:
                entries = []
                for n in names_of[g]:
                    entries.append(table.get(n, q))
                    done += 1
                    self.progress("fit: quantize", done, todo, clip=s.clip, codec=s.codec)
                options[g].append((q, sum(x.q_bytes + x.scale_bytes for x in entries), sum(x.err for x in entries)))
        return options

    def control_options(self, table: SizeTable, codec: str) -> list[tuple[str, int, float]]:
        """[(control dtype, coded bytes, weighted error)] for the widths in the space."""
        return [(d, *table.float_cost(self.control_names, d, codec)) for d in self.control_dtypes]

    def bits_for(self, group: str) -> tuple[int, ...]:
        return tuple(sorted(set(self.space.embed_bits if group == "embed" else self.space.bits)))

    def pruned_size(self, table: SizeTable, cand: Candidate, prune: float) -> tuple[int, float]:
        """(exact stream bytes, proxy) of `cand`'s choices at selective-pruning fraction `prune`."""
        codec = cand.setting.codec
        control_bytes, proxy = table.float_cost(self.control_names, cand.control_dtype, codec)
        total = self.float_bytes(table, codec) + control_bytes
        for n in self.quant_names:
            q = cand.quant(n)
            size, err = table.cost(n, q, prune)
            if n in cand.lqer_tensors:  # unpruned only: fill drops the factors before it prunes
                lqer = table.lqer(n, q, cand.lqer_rank)
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
        return sum(table.lqer(n, cand.quant(n), cand.lqer_rank).header_bytes for n in cand.lqer_tensors)

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
        bits = {n: cand.bits_of(n) for n in self.quant_names}
        lqer = set(cand.lqer_tensors)
        rank = rank or cand.lqer_rank

        def quant(n: str) -> Quant:
            return cand.quant(n).at(bits[n])

        def cost(n: str) -> tuple[int, float]:
            if n in lqer:
                entry = table.lqer(n, quant(n), rank)
                return table.cost(n, quant(n), cand.prune)[0] + entry.extra_bytes, entry.err
            return table.cost(n, quant(n), cand.prune)

        def move_of(n: str, room: float = math.inf) -> tuple | None:
            """The best move of `n` by gain per byte among those of at most `room` bytes."""
            if n in lqer:
                return None
            size_now, err_now = cost(n)
            moves = []
            up = [b for b in self.bits_for(tensor_group(n)) if b > bits[n]]
            if up:
                size_up, err_up = table.cost(n, quant(n).at(up[0]), cand.prune)
                moves.append((err_now - err_up, size_up - size_now, up[0]))
            entry = table.lqer(n, quant(n), rank) if rank and cand.prune == 0 else None
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
        for _ in range(BISECT_STEPS):
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
        """Knapsack best, proxy-frontier points above the limit pruned to fit, and the uniform anchors: each group's
        bits and sdclip k and the control width, from the Pareto frontier of their summed bytes and errors."""
        options = self.group_options(table, s)
        control = self.control_options(table, s.codec)
        fixed = self.float_bytes(table, s.codec)
        axes = [[(o[1], o[2]) for o in options[g]] for g in self.groups] + [[(o[1], o[2]) for o in control]]
        sizes, proxies, picks = pareto_sums(axes)
        sizes = sizes + fixed

        def make(row: int, origin: str) -> Candidate:
            quants = {g: options[g][picks[row, j]][0] for j, g in enumerate(self.groups)}
            return self.candidate(s, quants, control[picks[row, -1]][0], int(sizes[row]), float(proxies[row]),
                                  origin, stream_limit)

        out = []
        fitting = np.flatnonzero(sizes <= stream_limit)
        if len(fitting):
            out.append(make(int(fitting[-1]), "knapsack"))
        # GPTQ's compensation assumes every level stays; when nothing fits unpruned, the frontier's smallest point
        # above the limit is filled anyway (the uniform fill alone may not reach down to `smallest`)
        fills = 0 if s.gptq else max(self.space.fill_candidates, 0 if len(fitting) else 1)
        for row in np.flatnonzero(sizes > stream_limit)[:fills]:
            filled = self.fill(table, make(int(row), "knapsack"), stream_limit)
            if filled is not None:
                out.append(filled)
        out += self.uniform_anchors(table, s, options, control, fixed, stream_limit)
        return out + [t for c in out for t in self.top_ups(table, c, stream_limit)]

    def candidate(self, s: Setting, quants: dict[str, Quant], control_dtype: str, stream_bytes: int, proxy: float,
                  origin: str, stream_limit: int) -> Candidate:
        return Candidate(group_bits={g: q.bits for g, q in quants.items()}, setting=s,
                         group_k={g: q.k for g, q in quants.items()} if s.clip == "sdclip" else {},
                         control_dtype=control_dtype, prune=0.0, stream_bytes=stream_bytes, proxy=proxy,
                         origin=origin, stream_limit=stream_limit)

    def uniform_anchors(self, table: SizeTable, s: Setting, options: dict, control: list, fixed: int,
                        stream_limit: int) -> list[Candidate]:
        """For each control width the highest uniform bit-width that fits, and at the base export's width (rounding
        only) the next one up pruned to fit (each group at its lowest-error k of that width)."""
        out = []
        base = self.cfg.export.control_dtype
        for ctl in control:
            above = None
            for bits in sorted(set(self.space.bits) & set(self.space.embed_bits), reverse=True):
                cand = self.uniform(s, options, ctl, fixed, bits, stream_limit)
                if cand.stream_bytes <= stream_limit:
                    out.append(cand)
                    break
                above = cand
            if above is not None and ctl[0] == base and not s.gptq:  # pruned anchors lose to raised ones
                filled = self.fill(table, above, stream_limit)
                if filled is not None:
                    out.append(filled)
        return out

    def uniform(self, s: Setting, options: dict, ctl: tuple, fixed: int, bits: int, stream_limit: int) -> Candidate:
        """Every group at `bits` and its lowest-error k, the control tensors as `ctl`."""
        picked = {g: min((o for o in options[g] if o[0].bits == bits), key=lambda o: o[2]) for g in self.groups}
        return self.candidate(s, {g: o[0] for g, o in picked.items()}, ctl[0],
                              fixed + ctl[1] + sum(o[1] for o in picked.values()),
                              ctl[2] + sum(o[2] for o in picked.values()), "uniform", stream_limit)

    def smallest(self, table: SizeTable, s: Setting) -> int:
        """Exact stream bytes of the cheapest point: each group's fewest-bytes option, the narrowest control width,
        at prune 0 or max_prune."""
        options = self.group_options(table, s)
        quants = {g: min(options[g], key=lambda o: o[1])[0] for g in self.groups}
        control = min(self.control_options(table, s.codec), key=lambda o: o[1])[0]
        cand = self.candidate(s, quants, control, 0, 0.0, "", 0)
        return min(self.pruned_size(table, cand, 0.0)[0], self.pruned_size(table, cand, self.space.max_prune)[0])

    # -- evaluation
    def dequantized_state(self, table: SizeTable, cand: Candidate) -> dict[str, Tensor]:
        out = {}
        for name, t in self.state.items():
            if name in cand.lqer_tensors:
                out[name] = dequantize(table.lqer(name, cand.quant(name), cand.lqer_rank).qt)
            elif name in self.quant_names:
                out[name] = dequantize(pruned_levels(table.get(name, cand.quant(name)), cand.prune)[0])
            else:
                dtype = cand.control_dtype if name in self.control_names else self.cfg.export.float_dtype
                out[name] = t.detach().cpu().to(FLOAT_DTYPES[dtype]).float()
        return out

    def evaluate(self, state: dict[str, Tensor]) -> float:
        self.evaluations += 1
        return self.scorer.score_weights(self.model_config, state, where="fit candidate").static.bpb

    def measure(self, table: SizeTable, cand: Candidate) -> float:
        """Search-slice BPB of `cand` (stored on it)."""
        cand.val_bpb = self.evaluate(self.dequantized_state(table, cand))
        return cand.val_bpb

    def to_measure(self, pool: list[Candidate]) -> list[Candidate]:
        """The `evals` best by proxy, and in each level choice (rounding, GPTQ) its best by proxy and its best anchor
        of each kind: the Fisher proxy weighs weight error, which GPTQ trades for output error, so proxies are
        compared within a level choice only."""
        ranked = sorted(pool, key=lambda c: c.proxy)
        picked = ranked[: self.space.evals]
        for gptq in dict.fromkeys(c.setting.gptq for c in ranked):
            family = [c for c in ranked if c.setting.gptq == gptq]
            picked.append(family[0])
            for origin in ANCHORS:
                picked += [c for c in family if c.origin == origin][:1]
        return list({id(c): c for c in picked}.values())

    def choose(self, table: SizeTable, pool: list[Candidate]) -> tuple[Candidate, list[Candidate]]:
        """(best measured candidate, all measured): `to_measure`'s, then the winner's raised copy when it was not
        measured yet, kept only if its BPB is not worse."""
        measured = self.to_measure(pool)
        for i, cand in enumerate(measured):
            self.measure(table, cand)
            self.progress("fit: evaluate", i + 1, len(measured), bpb=cand.val_bpb)
        chosen = min(measured, key=lambda c: (c.val_bpb, c.model_bytes))
        raised = self.top_up(table, chosen, chosen.stream_limit, chosen.lqer_rank)
        if raised is not None and self.key(raised) not in {self.key(c) for c in measured}:
            header = chosen.model_bytes - chosen.stream_bytes - self.lqer_header(table, chosen)  # its parent's
            raised.model_bytes = raised.stream_bytes + header + self.lqer_header(table, raised)
            self.measure(table, raised)
            measured.append(raised)
            if raised.val_bpb <= chosen.val_bpb:
                chosen = raised
        return chosen, measured


def export_config_of(cand: Candidate, base: C.ExportConfig) -> C.ExportConfig:
    """The ExportConfig that writes `cand` (every group's bits explicit, raised tensors and kept-float ones named;
    sdclip as the most common k with the other groups' ks apart, so the packed config stays short)."""
    bits = {g: cand.group_bits.get(g, base.group_bits.for_group(g, base.bits)) for g in GROUPS}
    kept_float = {n: 16 for n, b in base.tensor_bits.items() if b == 16}
    s = cand.setting
    clip_k, group_k = base.clip_k, C.GroupClipK()
    if cand.group_k:
        ks = list(cand.group_k.values())
        clip_k = max(ks, key=ks.count)
        group_k = C.GroupClipK(**{g: k for g, k in cand.group_k.items() if k != clip_k})
    return dataclasses.replace(
        base, bits=max(cand.group_bits.values()), group_bits=C.GroupBits(**bits),
        tensor_bits={**kept_float, **cand.tensor_bits}, clip=s.clip, clip_k=clip_k, group_clip_k=group_k,
        codec=s.codec, gptq=s.gptq, control_dtype=cand.control_dtype, prune=cand.prune, prune_kind="selective",
        lqer_rank=cand.lqer_rank, lqer_tensors=sorted(cand.lqer_tensors))


def search_settings(cfg: C.ExportConfig, space: C.FitConfig) -> list[Setting]:
    """The outer axes: codec x clip x level choice (sdclip ks, bits and the control width are inside a knapsack)."""
    codec_list = space.codecs or (AUTO_CODECS if cfg.codec == "auto" else (cfg.codec,))
    return [Setting(clip=clip, codec=codec, gptq=gptq) for codec in dict.fromkeys(codec_list)
            for clip in dict.fromkeys(space.clips or (cfg.clip,)) for gptq in dict.fromkeys(space.gptq or (cfg.gptq,))]

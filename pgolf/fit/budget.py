"""`pgolf fit-budget`, the verb: search, export the choice through the round trip, check its bytes on disk,
score it, write its tables and its config (step 7, see `pgolf.fit`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pgolf import config as C
from pgolf.atomic import atomic_write_json, atomic_write_text
from pgolf.bundle.code_bytes import count_code_bytes
from pgolf.errors import BudgetError, ConfigError
from pgolf.export.artifact import (
    check_export_config,
    check_tensor_bits,
    export_state_dict,
)
from pgolf.export.coding import codecs
from pgolf.export.quantize import GROUPS
from pgolf.fit.search import ANCHORS, BISECT_STEPS, Candidate, Search, export_config_of, search_settings
from pgolf.fit.sizes import Setting, SizeTable, fisher_weights, header_overhead
from pgolf.jobs.export_job import write_artifact_record
from pgolf.jobs.layout import float_weights, output_paths
from pgolf.jobs.models import rebuild_model
from pgolf.jobs.roundtrip import calibration_hessians, write_and_score
from pgolf.jobs.scorer import Scorer
from pgolf.jobs.sources import load_any
from pgolf.progress import ProgressFn, no_progress
from pgolf.results import tables as T
from pgolf.runtime.device import resolve_device


@dataclass
class FitResult:
    summary: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)


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


def fit_budget(source: Path, cfg: C.Config, max_bytes: int, margin: int = 0,
               progress: ProgressFn = no_progress) -> FitResult:
    """`pgolf fit-budget`: search cfg.fit, export the best fitting candidate, verify it on disk, score it, write
    tables and the chosen config."""
    started = time.time()
    limit_total = budget_limit(max_bytes, margin)
    check_space(cfg.fit)
    check_export_config(cfg.export)
    model_config, state, kind = load_any(float_weights(source))
    check_tensor_bits(cfg.export, list(state))
    scorer = Scorer.for_saved(cfg, model_config, resolve_device(cfg.device), progress)
    search = Search(state, model_config, cfg, cfg.fit, scorer.head(cfg.fit.val_tokens), progress)
    if not search.quant_names:
        raise ConfigError(f"fit-budget: {source} has no tensor to quantize (all stay float); nothing to search")
    model = rebuild_model(model_config, state, where=source)
    found = _search(search, model, scorer, limit_total, max_bytes, margin)
    chosen, export_cfg, exported = _export_verified(search, found.table, found.chosen, cfg,
                                                    limit_total - found.code_reserve[found.chosen.setting])
    chosen_cfg = dataclasses.replace(cfg, export=export_cfg)
    code_bytes = count_code_bytes(chosen_cfg)  # the script pack ships for the chosen config
    paths = output_paths(source, max_bytes)
    if exported.model_bytes + code_bytes > limit_total:
        raise BudgetError(f"{paths['artifact']}: {exported.model_bytes:,} + {code_bytes:,} code bytes is over "
                          f"{limit_total:,}; nothing written")
    scores = write_and_score(exported, paths["artifact"], scorer)
    rt = scores.static
    file_bytes = paths["artifact"].stat().st_size
    float_final = scorer.score(model)
    search.evaluations += 2
    write_artifact_record(paths["artifact"], chosen_cfg, {
        "val_loss_roundtrip": rt.loss, "val_bpb_roundtrip": rt.bpb, "val_tokens_roundtrip": rt.tokens,
        **scores.ttt_fields(), **scorer.scored_on,
        "bytes": {"model": file_bytes, "code": code_bytes, "total": file_bytes + code_bytes}})
    chosen.model_bytes = (chosen.stream_bytes + found.overhead[chosen.setting.codec]  # a shrunk choice kept its
                          + search.lqer_header(found.table, chosen))                # parent's prediction
    evaluated = found.measured if chosen in found.measured else [*found.measured, chosen]
    rows = candidate_frame(evaluated, chosen, file_bytes, code_bytes, found.code_reserve, limit_total,
                           found.float_search_bpb)
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
        "val_tokens": rt.tokens, "val_bytes": rt.bytes, **scores.ttt_fields(),
        "search_val_tokens": search.scorer.val.tokens.numel() - 1, "search_val_bpb_float": found.float_search_bpb,
        "bpb_evaluations": search.evaluations, "size_candidates": found.pool_size,
        "header_overhead_bytes": exported.overhead_bytes,
        "wall_time_s": time.time() - started,
        "candidates": T.records(rows),
        "csv": str(paths["csv"]), "json": str(paths["json"]), "config": str(paths["config"]),
    }
    T.write_csv(rows, paths["csv"])
    atomic_write_text(paths["config"], C.to_yaml(chosen_cfg))
    atomic_write_json(paths["json"], summary)
    return FitResult(summary=summary, candidates=evaluated)


@dataclass
class _Found:
    """What the search found before the final export: the choice, every measured candidate, the size table."""

    chosen: Candidate
    measured: list[Candidate]
    table: SizeTable
    pool_size: int
    overhead: dict[str, int]
    """Predicted container frame + header + slack per codec, added to every candidate's stream bytes."""
    code_reserve: dict[Setting, int]
    """Code bytes reserved per setting (its codec's and GPTQ's modules in the script)."""
    float_search_bpb: float


def _search(search: Search, model: torch.nn.Module, scorer: Scorer, limit_total: int, max_bytes: int,
            margin: int) -> _Found:
    """Steps 1-6: Fisher weights, exact sizes, the candidate pool over every setting, the measured choice."""
    cfg, space = search.cfg, search.space
    settings = search_settings(cfg.export, space)
    one_per_script = {(s.codec, s.gptq): s for s in settings}  # the clip changes no module of the script
    by_code = {key: code_reserve(cfg, s, search.quant_names) for key, s in one_per_script.items()}
    reserve = {s: by_code[s.codec, s.gptq] for s in settings}
    overhead = {}
    for codec in dict.fromkeys(s.codec for s in settings):
        frame = header_overhead(search.state, search.model_config, cfg.export, codec)
        overhead[codec] = frame + max(64, frame // 50)  # + slack
    params = dict(model.named_parameters())
    fisher = fisher_weights(model, scorer.val.tokens[: space.fisher_tokens + 1], space.fisher_seq_len,
                            search.quant_names + [n for n in search.control_names if n in params])
    gptq_cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, gptq=True))
    hessians = calibration_hessians(model, gptq_cfg, scorer.setup) if any(s.gptq for s in settings) else None
    table = SizeTable(search.state, search.quant_names, fisher, cfg.export, hessians)
    pool: dict[tuple, Candidate] = {}
    smallest = None
    for s in settings:
        stream_limit = limit_total - reserve[s] - overhead[s.codec]
        for cand in search.candidates(table, s, stream_limit):
            cand.model_bytes = cand.stream_bytes + overhead[s.codec] + search.lqer_header(table, cand)
            key = search.key(cand)
            if key not in pool or cand.origin in ANCHORS:  # an anchor is always measured; keep it as one
                pool[key] = cand
        size = search.smallest(table, s) + overhead[s.codec] + reserve[s]
        smallest = size if smallest is None else min(smallest, size)
    if not pool:
        raise BudgetError(f"budget {max_bytes:,} - margin {margin:,} = {limit_total:,} bytes cannot be met: the "
                          f"smallest configuration reachable is {smallest:,} bytes total (code included)")
    float_search_bpb = search.evaluate(search.state)
    chosen, measured = search.choose(table, list(pool.values()))
    return _Found(chosen, measured, table, len(pool), overhead, reserve, float_search_bpb)


_CODE_SLACK = 128
"""Bytes added to the widest config's measured script: the lzma-wrapped script's size moves by tens of bytes with
the config values' text (ks, pruning fractions), which the widest config cannot bound exactly."""


def code_reserve(cfg: C.Config, s: Setting, quant_names: list[str]) -> int:
    """Code bytes the search reserves for setting `s`: the packed script of the largest export config the search can
    choose with its codec and level choice (sdclip with every group's k apart, every quantized tensor named in
    tensor_bits, a bisected pruning fraction, the control tensors at float16), plus a slack, so the chosen config's
    own script, measured after the choice, fits too (one script build per codec and level choice)."""
    ks = sorted({*map(float, cfg.fit.sdclip_ks), cfg.export.clip_k,
                 *(cfg.export.group_clip_k.for_group(g, cfg.export.clip_k) for g in GROUPS)},
                key=lambda k: -len(repr(k)))
    widest = dataclasses.replace(cfg.export, codec=s.codec, gptq=s.gptq, clip="sdclip",
                                 tensor_bits={name: 7 for name in quant_names}, control_dtype="float16",
                                 group_clip_k=C.GroupClipK(**{g: ks[i % len(ks)] for i, g in enumerate(GROUPS)}))
    if max(cfg.fit.lqer_ranks) > 0:  # every tensor given LQER factors: the module and every name in the config
        widest = dataclasses.replace(widest, lqer_rank=max(cfg.fit.lqer_ranks), lqer_tensors=list(quant_names))
    if cfg.fit.max_prune > 0:  # the longest fraction the fill's bisection can print
        widest = dataclasses.replace(widest, prune=cfg.fit.max_prune * (1 - 2.0**-BISECT_STEPS) / 3,
                                     prune_kind="selective")
    return count_code_bytes(dataclasses.replace(cfg, export=widest)) + _CODE_SLACK


def _export_verified(search: Search, table: SizeTable, chosen: Candidate, cfg: C.Config, limit_model: int):
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


def _shrink(search: Search, table: SizeTable, cand: Candidate, stream_limit: int) -> Candidate | None:
    """`cand` under a lower stream limit: its tensor raises redone, else its group bits re-pruned and raised."""
    base = search.resized(table, cand, {}, cand.prune)
    if base.stream_bytes > stream_limit:
        base = search.fill(table, search.resized(table, cand, {}, 0.0), stream_limit)
        if base is None:
            return None
    return search.top_up(table, base, stream_limit) or base


ROW_FIELDS = ("config", "origin", "predicted_model_bytes", "measured_model_bytes", "code_bytes", "total_bytes",
              "headroom_bytes", "bytes_basis", "val_bpb", "delta_bpb", "proxy", "frontier", "chosen")


def candidate_frame(evaluated: list[Candidate], chosen: Candidate, measured_bytes: int, code_bytes: int,
                    code_reserve: dict[Setting, int], limit_total: int, float_bpb: float) -> pd.DataFrame:
    """One row per evaluated candidate (search-slice BPB) in ROW_FIELDS order, sorted by total bytes, the Pareto
    frontier (of total bytes against BPB) and the choice marked.

    Only the chosen candidate is ever written: `measured_model_bytes` is its artifact's file size
    (`measured_bytes`) and NA for the rest; `predicted_model_bytes` is every candidate's search prediction
    (streams + header estimate + slack), the chosen one's too. `total_bytes` and `headroom_bytes` use the measured
    size where there is one, else the prediction; `bytes_basis` says which ("measured" or "predicted"). So do the
    code bytes: the chosen config's measured script, else the reserve of the candidate's setting (codec, GPTQ).
    """
    def row(c: Candidate) -> dict[str, Any]:
        measured = measured_bytes if c is chosen else None
        model_bytes = c.model_bytes if measured is None else measured
        code = code_bytes if c is chosen else code_reserve[c.setting]
        return {"config": c.label(), "origin": c.origin, "predicted_model_bytes": c.model_bytes,
                "measured_model_bytes": measured, "code_bytes": code, "total_bytes": model_bytes + code,
                "headroom_bytes": limit_total - model_bytes - code,
                "bytes_basis": "predicted" if measured is None else "measured",
                "val_bpb": c.val_bpb, "delta_bpb": c.val_bpb - float_bpb, "proxy": c.proxy, "frontier": False,
                "chosen": c is chosen}

    rows = pd.DataFrame([row(c) for c in evaluated], columns=list(ROW_FIELDS))
    rows["measured_model_bytes"] = rows["measured_model_bytes"].astype("Int64")
    rows = rows.sort_values("total_bytes", kind="stable", ignore_index=True)
    rows["frontier"] = T.pareto_front(rows["total_bytes"], rows["val_bpb"])
    return rows

"""`pgolf export` and `pgolf eval` as jobs: export and score a saved model, or score it as it is."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from pgolf import config as C
from pgolf.atomic import atomic_write_bytes, atomic_write_json
from pgolf.bundle.code_bytes import count_code_bytes
from pgolf.evaluate import EvalResult
from pgolf.jobs.layout import ARTIFACT_SUFFIX, default_artifact_path, float_weights, record_path
from pgolf.jobs.models import rebuild_model
from pgolf.jobs.roundtrip import export_roundtrip
from pgolf.jobs.scorer import Scorer
from pgolf.jobs.sources import load_any
from pgolf.progress import ProgressFn, no_progress
from pgolf.runtime.device import resolve_device


def export_and_score(state_dict: dict[str, torch.Tensor], float_model: torch.nn.Module, model_config: dict,
                     cfg: C.Config, out_path: Path, scorer: Scorer) -> dict:
    """Export, read back and score (roundtrip.export_roundtrip); returns summary fields, and writes the artifact's
    record (`<artifact>.json`: the config it was made with and its score) beside it for `pgolf pack`."""
    result, scores = export_roundtrip(state_dict, float_model, model_config, cfg, out_path, scorer)
    rt = scores.static
    model_bytes = out_path.stat().st_size
    code = count_code_bytes(cfg)
    fields = {
        "artifact": str(out_path),
        "val_loss_roundtrip": rt.loss,
        "val_bpb_roundtrip": rt.bpb,
        "val_tokens_roundtrip": rt.tokens,
        **scores.ttt_fields(),
        **scorer.scored_on,
        "bytes": {"model": model_bytes, "code": code, "total": model_bytes + code},
        "entropy_bound_bytes": result.entropy_bound_bytes,
        "export_groups": result.groups,
    }
    write_artifact_record(out_path, cfg, fields)
    return fields


def write_artifact_record(artifact: Path, cfg: C.Config, fields: dict) -> None:
    """`<artifact>.json`: the full config an artifact was made with and its round-trip score, so `pgolf pack` can
    ship the script that rebuilds it without guessing."""
    keep = ("val_loss_roundtrip", "val_bpb_roundtrip", "val_tokens_roundtrip", "eval_device", "eval_dtype", "bytes",
            "ttt", "val_loss_ttt", "val_bpb_ttt", "ttt_seconds")
    record = {"artifact": Path(artifact).name, "config": C.to_dict(cfg), **{k: fields[k] for k in keep if k in fields}}
    atomic_write_json(record_path(artifact), record)


def score_fields(result: EvalResult) -> dict:
    """A float score as summary fields."""
    return {"val_loss": result.loss, "val_bpb": result.bpb, "val_tokens": result.tokens, "val_bytes": result.bytes}


def run_eval(path: Path, cfg: C.Config, progress: ProgressFn = no_progress, losses: Path | None = None) -> dict:
    """`pgolf eval`: score an artifact or a checkpoint on the configured validation data (and with test-time
    training, `ttt=NAME`); `losses` (.npy) gets every scored target's loss in nats (float32, validation order) of the
    final score (the TTT one with TTT), so where the nats go can be seen, and checked, from outside."""
    model_config, state, kind = load_any(path)
    scorer = Scorer.for_saved(cfg, model_config, resolve_device(cfg.device), progress)
    model = rebuild_model(model_config, state, where=path)
    scores = scorer.score_all(model, per_token=losses is not None)
    summary = {"source": kind, "params": sum(p.numel() for p in model.parameters()), **score_fields(scores.static),
               **scores.ttt_fields(), "eval_stride": cfg.export.eval_stride, "seq_len": cfg.train.seq_len,
               **scorer.scored_on}
    if Path(path).suffix == ARTIFACT_SUFFIX:
        summary["bytes"] = {"model": Path(path).stat().st_size}
    if losses is not None:
        buffer = io.BytesIO()
        np.save(buffer, scores.final.token_losses.numpy(), allow_pickle=False)
        atomic_write_bytes(losses, buffer.getvalue())
        summary["losses"] = str(losses)
    return summary


def run_export(source: Path, cfg: C.Config, out_path: Path | None = None,
               progress: ProgressFn = no_progress) -> dict:
    """`pgolf export`: quantize/prune/code SOURCE, write the artifact, read it back and score it.

    A run directory means its float weights, never an earlier artifact.
    """
    model_config, state, kind = load_any(float_weights(source))
    scorer = Scorer.for_saved(cfg, model_config, resolve_device(cfg.device), progress)
    float_model = rebuild_model(model_config, state, where=source)
    float_eval = scorer.score(float_model)
    out_path = Path(out_path) if out_path is not None else default_artifact_path(source, cfg)
    exported = export_and_score(state, float_model, model_config, cfg, out_path, scorer)
    return {"source": kind, "params": sum(t.numel() for t in state.values()), **score_fields(float_eval),
            "export": C.to_dict(cfg)["export"], **exported}

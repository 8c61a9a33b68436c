"""`pgolf export` and `pgolf eval` as jobs: export and score a saved model, or score it as it is."""

from __future__ import annotations

from pathlib import Path

import torch

from pgolf import config as C
from pgolf.atomic import atomic_write_json
from pgolf.bundle.code_bytes import count_code_bytes
from pgolf.jobs.layout import (
    ARTIFACT_SUFFIX,
    default_artifact_path,
    record_path,
)
from pgolf.jobs.models import rebuild_model
from pgolf.jobs.roundtrip import export_roundtrip
from pgolf.jobs.scorer import ValData, load_val_data, score, scored_on
from pgolf.jobs.sources import load_any
from pgolf.progress import ProgressFn, no_progress
from pgolf.runtime.device import DeviceSetup, resolve_device


def export_and_score(state_dict: dict[str, torch.Tensor], float_model: torch.nn.Module, model_config: dict,
                     cfg: C.Config, out_path: Path, val: ValData, setup: DeviceSetup,
                     progress: ProgressFn = no_progress) -> dict:
    """Export, read back and score (job.export_roundtrip); returns summary fields, and writes the artifact's record
    (`<artifact>.json`: the config it was made with and its score) beside it for `pgolf pack`."""
    result, rt = export_roundtrip(state_dict, float_model, model_config, cfg, out_path, val, setup, progress)
    model_bytes = out_path.stat().st_size
    code = count_code_bytes(cfg)
    fields = {
        "artifact": str(out_path),
        "val_loss_roundtrip": rt.loss,
        "val_bpb_roundtrip": rt.bpb,
        "val_tokens_roundtrip": rt.tokens,
        **scored_on(setup),
        "bytes": {"model": model_bytes, "code": code, "total": model_bytes + code},
        "entropy_bound_bytes": result.entropy_bound_bytes,
        "export_groups": result.groups,
    }
    write_artifact_record(out_path, cfg, fields)
    return fields


def write_artifact_record(artifact: Path, cfg: C.Config, fields: dict) -> None:
    """`<artifact>.json`: the full config an artifact was made with and its round-trip score, so `pgolf pack` can
    ship the script that rebuilds it without guessing."""
    keep = ("val_loss_roundtrip", "val_bpb_roundtrip", "val_tokens_roundtrip", "eval_device", "eval_dtype", "bytes")
    record = {"artifact": Path(artifact).name, "config": C.to_dict(cfg), **{k: fields[k] for k in keep}}
    atomic_write_json(record_path(artifact), record)


def run_eval(path: Path, cfg: C.Config, progress: ProgressFn = no_progress) -> dict:
    """`pgolf eval`: score an artifact or a checkpoint on the configured validation data."""
    setup = resolve_device(cfg.device)
    model_config, state, kind = load_any(path)
    model = rebuild_model(model_config, state, where=path)
    cfg.model.vocab_size = model_config["vocab_size"]
    val = load_val_data(cfg, cfg.train.seq_len, cfg.data.val_tokens)
    result = score(model, val, cfg.train.seq_len, cfg.export.eval_stride, setup, progress)
    summary = {"source": kind, "params": sum(p.numel() for p in model.parameters()), "val_loss": result.loss,
               "val_bpb": result.bpb, "val_tokens": result.tokens, "val_bytes": result.bytes,
               "eval_stride": cfg.export.eval_stride, "seq_len": cfg.train.seq_len, **scored_on(setup)}
    if Path(path).suffix == ARTIFACT_SUFFIX:
        summary["bytes"] = {"model": Path(path).stat().st_size}
    return summary


def run_export(source: Path, cfg: C.Config, out_path: Path | None = None,
               progress: ProgressFn = no_progress) -> dict:
    """`pgolf export`: quantize/prune/code SOURCE, write the artifact, read it back and score it.

    A run directory means its float weights (model.safetensors), never an earlier artifact.
    """
    setup = resolve_device(cfg.device)
    weights = Path(source) / "model.safetensors" if Path(source).is_dir() else Path(source)  # never re-quantize
    model_config, state, kind = load_any(weights)
    cfg.model.vocab_size = model_config["vocab_size"]
    val = load_val_data(cfg, cfg.train.seq_len, cfg.data.val_tokens)
    float_model = rebuild_model(model_config, state, where=source)
    float_eval = score(float_model, val, cfg.train.seq_len, cfg.export.eval_stride, setup, progress)
    out_path = Path(out_path) if out_path is not None else default_artifact_path(source, cfg)
    exported = export_and_score(state, float_model, model_config, cfg, out_path, val, setup, progress)
    return {"source": kind, "params": sum(t.numel() for t in state.values()), "val_loss": float_eval.loss,
            "val_bpb": float_eval.bpb, "val_tokens": float_eval.tokens, "val_bytes": float_eval.bytes,
            "export": C.to_dict(cfg)["export"], **exported}

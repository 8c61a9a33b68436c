"""The pieces of a job that pgolf and the script `pgolf pack` ships share.

Seeding, validation data, scoring, GPTQ calibration and the export round trip
(export -> write -> read back from disk -> rebuild -> score). Nothing here
imports Hydra or safetensors: `standalone.py` (the shipped script's main)
runs on exactly this code, so the score the script prints is computed by the
same lines as `pgolf eval`'s.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf.data.loader import TokenStream, TrainBatches, load_val_tokens
from pgolf.data.shards import find_shards
from pgolf.data.tokenizer import ByteLUTs, build_byte_luts, load_scoring_tokenizer, tokenizer_size
from pgolf.errors import ArtifactError, DataError
from pgolf.evaluate import EvalResult, evaluate_bpb
from pgolf.export.artifact import ExportResult, export_state_dict, load_artifact, write_artifact
from pgolf.model.gpt import GPT, load_reference_state_dict, make_gpt
from pgolf.progress import ProgressFn, no_progress
from pgolf.schema import Config, to_dict
from pgolf.train.device import DeviceSetup, autocast, resolve_device
from pgolf.train.distributed import DistInfo, init_distributed
from pgolf.train.loop import build_model

ARTIFACT_SUFFIX = ".pgolf"


@dataclass
class ValData:
    tokens: torch.Tensor
    luts: ByteLUTs
    vocab_size: int


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_val_data(cfg: Config, seq_len: int, max_tokens: int) -> ValData:
    """Validation tokens and byte LUTs (SentencePiece or the pure-byte JSON), checked against the model's vocabulary."""
    tokenizer = load_scoring_tokenizer(Path(cfg.data.tokenizer))
    vocab = tokenizer_size(tokenizer)
    if vocab != cfg.model.vocab_size:
        raise DataError(f"tokenizer {cfg.data.tokenizer} has {vocab} pieces but model.vocab_size is "
                        f"{cfg.model.vocab_size}")
    files = find_shards(Path(cfg.data.dir), cfg.data.val_pattern)
    tokens = load_val_tokens(files, seq_len, max_tokens)
    top = int(tokens.max())
    if top >= vocab:
        raise DataError(f"validation shards in {cfg.data.dir} hold token id {top}, beyond tokenizer "
                        f"{cfg.data.tokenizer} ({vocab} pieces)")
    return ValData(tokens=tokens, luts=build_byte_luts(tokenizer, cfg.model.vocab_size), vocab_size=vocab)


@dataclass
class TrainingStart:
    """What a training run holds before its first step, the same for `pgolf train` and the shipped script."""

    setup: DeviceSetup
    dist_info: DistInfo
    train_files: list[Path]
    val: ValData
    batches: TrainBatches
    model: GPT


def start_training(cfg: Config, device: str) -> TrainingStart:
    """Device, process group, seeds (offset by rank), shards, validation data, batches and the built model."""
    setup = resolve_device(device, cfg.train.compile)
    dist_info = init_distributed(setup.device)
    seed_everything(cfg.seed + dist_info.rank)
    t = cfg.train
    train_files = find_shards(Path(cfg.data.dir), cfg.data.train_pattern)
    val = load_val_data(cfg, t.seq_len, cfg.data.val_tokens)
    batches = TrainBatches(train_files, t.batch_tokens, t.seq_len, t.grad_accum, rank=dist_info.rank,
                           world_size=dist_info.world_size, device=setup.device, sampling=t.sampling, seed=cfg.seed)
    return TrainingStart(setup, dist_info, train_files, val, batches, build_model(cfg).to(setup.device))


def score(model: torch.nn.Module, val: ValData, seq_len: int, stride: int, setup: DeviceSetup,
          progress: ProgressFn = no_progress) -> EvalResult:
    model.to(setup.device)
    return evaluate_bpb(model, val.tokens, val.luts, seq_len, stride=stride, device=setup.device,
                        autocast_dtype=setup.autocast_dtype, progress=progress)


def scored_on(setup: DeviceSetup) -> dict[str, str]:
    """Where a score was computed: CUDA autocasts bf16 and CPU runs float32, and the two differ in the last digits."""
    dtype = str(setup.autocast_dtype or torch.float32).removeprefix("torch.")
    return {"eval_device": setup.device.type, "eval_dtype": dtype}


def rebuild_model(model_config: dict, state_dict: dict[str, torch.Tensor] | None = None,
                  where: Path | str = "checkpoint") -> GPT:
    """A GPT from saved kwargs, with `state_dict` loaded strictly (one-line error on mismatch)."""
    try:
        model = make_gpt(**model_config)
    except TypeError as exc:
        raise ArtifactError(f"{where}: model config does not fit the GPT ({exc})") from exc
    if state_dict is not None:
        try:
            load_reference_state_dict(model, state_dict)
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{where}: state dict does not match the model config: {exc}") from exc
    return model


_CALIBRATION_SEQUENCES = 8  # sequences per forward pass of the GPTQ calibration


def calibration_hessians(float_model: torch.nn.Module, cfg: Config,
                         setup: DeviceSetup) -> dict[str, torch.Tensor] | None:
    """GPTQ's per-layer input Hessians of `float_model` on the first export.gptq_tokens training tokens (None
    without gptq)."""
    if not cfg.export.gptq:
        return None
    from pgolf.export.gptq import layer_hessians

    seq_len = cfg.train.seq_len
    n_seqs = max(1, cfg.export.gptq_tokens // seq_len)
    stream = TokenStream(find_shards(Path(cfg.data.dir), cfg.data.train_pattern))
    tokens = torch.from_numpy(stream.take(n_seqs * seq_len).astype(np.int64)).reshape(n_seqs, seq_len)
    vocab = float_model.tok_emb.num_embeddings
    if int(tokens.max()) >= vocab:
        raise DataError(f"training shards in {cfg.data.dir} hold token id {int(tokens.max())}, beyond the model's "
                        f"vocabulary ({vocab})")
    batches = (chunk.to(setup.device) for chunk in tokens.split(_CALIBRATION_SEQUENCES))
    with autocast(setup):
        return layer_hessians(float_model.to(setup.device), batches)


def export_roundtrip(state_dict: dict[str, torch.Tensor], float_model: torch.nn.Module, model_config: dict,
                     cfg: Config, out_path: Path, val: ValData, setup: DeviceSetup,
                     progress: ProgressFn = no_progress) -> tuple[ExportResult, EvalResult]:
    """Export `state_dict` (the weights of `float_model`, which GPTQ calibrates on) to `out_path`, read it back from
    disk, rebuild the model and score it."""
    hessians = calibration_hessians(float_model, cfg, setup)
    result = export_state_dict(state_dict, model_config, cfg.export, progress=progress, hessians=hessians)
    write_artifact(out_path, result)
    saved_config, restored = load_artifact(out_path)
    model = rebuild_model(saved_config, restored, where=out_path)
    return result, score(model, val, cfg.train.seq_len, cfg.export.eval_stride, setup, progress)


_SCORING_ONLY = ("code_bytes", "code_files", "eval_stride")
"""Export fields that do not change the artifact's bytes (left out of its name's hash)."""


def artifact_label(cfg: Config) -> str:
    """Readable name of an export (bits, clip, codec, pruning, gptq) plus a hash of every field that shapes the
    bytes, so exports that differ only in, say, group_bits never overwrite each other."""
    e = cfg.export
    shaping = {k: v for k, v in to_dict(cfg)["export"].items() if k not in _SCORING_ONLY}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:6]
    return (f"int{e.bits}-{e.clip}-{e.codec}" + (f"-prune{e.prune:g}{e.prune_kind}" if e.prune > 0 else "")
            + ("-gptq" if e.gptq else "") + f"-{digest}")

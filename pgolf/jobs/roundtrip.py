"""The export round trip: export -> write -> read back from disk -> rebuild -> score, with GPTQ calibration.

Every verb that writes an artifact goes through `export_roundtrip` (train, export, fit-budget, the shipped
script), so an artifact's score is always the score of the file on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pgolf.data.loader import TokenStream
from pgolf.data.shards import find_shards
from pgolf.errors import DataError
from pgolf.export.artifact import ExportResult, export_state_dict, write_artifact
from pgolf.jobs.scorer import Scorer, Scores
from pgolf.runtime.device import DeviceSetup, autocast
from pgolf.schema import Config

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
                     cfg: Config, out_path: Path, scorer: Scorer) -> tuple[ExportResult, Scores]:
    """Export `state_dict` (the weights of `float_model`, which GPTQ calibrates on) to `out_path`, read it back from
    disk, rebuild the model and score it (with test-time training too when the scorer's config asks for it)."""
    hessians = calibration_hessians(float_model, cfg, scorer.setup)
    result = export_state_dict(state_dict, model_config, cfg.export, progress=scorer.progress, hessians=hessians)
    return result, write_and_score(result, out_path, scorer)


def write_and_score(result: ExportResult, out_path: Path, scorer: Scorer) -> Scores:
    """The second half of the round trip, for an export already made (fit-budget's verified choice): write it, read
    it back from disk, rebuild and score."""
    write_artifact(out_path, result)
    return scorer.score_artifact(out_path)

"""What a training run holds before its first step, the same for `pgolf train` and the shipped script."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf.data.loader import TrainBatches
from pgolf.data.shards import find_shards, read_shard
from pgolf.jobs.models import build_model
from pgolf.jobs.scorer import Scorer, check_documents
from pgolf.model.gpt import GPT
from pgolf.progress import ProgressFn, no_progress
from pgolf.runtime.device import DeviceSetup, resolve_device
from pgolf.runtime.distributed import DistInfo, init_distributed
from pgolf.schema import Config


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainingStart:
    """What a training run holds before its first step, the same for `pgolf train` and the shipped script."""

    setup: DeviceSetup
    dist_info: DistInfo
    train_files: list[Path]
    scorer: Scorer
    """The validation set the run is scored on (periodic validation reads its tokens)."""
    batches: TrainBatches
    model: GPT


def start_training(cfg: Config, device: str, progress: ProgressFn = no_progress) -> TrainingStart:
    """Device, process group, seeds (offset by rank), shards, validation data, batches and the built model."""
    setup = resolve_device(device, cfg.train.compile)
    dist_info = init_distributed(setup.device)
    seed_everything(cfg.seed + dist_info.rank)
    t = cfg.train
    train_files = find_shards(Path(cfg.data.dir), cfg.data.train_pattern)
    scorer = Scorer.load(cfg, setup, progress)
    if cfg.model.doc_mask and train_files:
        check_documents(read_shard(train_files[0]), f"the training shard {train_files[0]}")
    batches = TrainBatches(train_files, t.batch_tokens, t.seq_len, t.grad_accum, rank=dist_info.rank,
                           world_size=dist_info.world_size, device=setup.device, sampling=t.sampling, seed=cfg.seed)
    return TrainingStart(setup, dist_info, train_files, scorer, batches, build_model(cfg).to(setup.device))

"""Validation data and the one Scorer: every score pgolf prints (train, export, eval, fit-budget, pack, the
shipped script) is computed by `Scorer.score`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pgolf.data.loader import load_val_tokens
from pgolf.data.shards import find_shards
from pgolf.data.tokenizer import ByteLUTs, build_byte_luts, load_scoring_tokenizer, tokenizer_size
from pgolf.errors import DataError
from pgolf.evaluate import EvalResult, evaluate_bpb
from pgolf.progress import ProgressFn, no_progress
from pgolf.runtime.device import DeviceSetup
from pgolf.schema import Config


@dataclass
class ValData:
    tokens: torch.Tensor
    luts: ByteLUTs
    vocab_size: int


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


def score(model: torch.nn.Module, val: ValData, seq_len: int, stride: int, setup: DeviceSetup,
          progress: ProgressFn = no_progress) -> EvalResult:
    model.to(setup.device)
    return evaluate_bpb(model, val.tokens, val.luts, seq_len, stride=stride, device=setup.device,
                        autocast_dtype=setup.autocast_dtype, progress=progress)


def scored_on(setup: DeviceSetup) -> dict[str, str]:
    """Where a score was computed: CUDA autocasts bf16 and CPU runs float32, and the two differ in the last digits."""
    dtype = str(setup.autocast_dtype or torch.float32).removeprefix("torch.")
    return {"eval_device": setup.device.type, "eval_dtype": dtype}

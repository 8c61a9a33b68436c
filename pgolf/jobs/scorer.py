"""Validation data and the one Scorer: every score pgolf prints (train, export, eval, fit-budget, pack, the
shipped script) is computed by `Scorer`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pgolf.data.loader import load_val_tokens
from pgolf.data.shards import find_shards
from pgolf.data.tokenizer import ByteLUTs, build_byte_luts, load_scoring_tokenizer, tokenizer_size
from pgolf.errors import ConfigError, DataError
from pgolf.evaluate import EvalResult, evaluate_bpb
from pgolf.export.artifact import load_artifact
from pgolf.jobs.models import rebuild_model
from pgolf.model.knobs import BOS_ID
from pgolf.progress import ProgressFn, no_progress
from pgolf.runtime.device import DeviceSetup
from pgolf.schema import Config, TTTConfig, ttt_rank_problem


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


@dataclass(frozen=True)
class TTTScore:
    """A score with test-time training (pgolf/ttt/score.py)."""

    result: EvalResult
    seconds: float
    preset: str

    def fields(self) -> dict:
        """As summary fields, beside the static score's."""
        r = self.result
        return {"ttt": self.preset, "val_loss_ttt": r.loss, "val_bpb_ttt": r.bpb, "ttt_seconds": self.seconds}


@dataclass(frozen=True)
class Scores:
    """A model's static score and, when the config asks for test-time training, its TTT score."""

    static: EvalResult
    ttt: TTTScore | None = None

    @property
    def final(self) -> EvalResult:
        """The score a submission reports: the TTT one when there is one."""
        return self.ttt.result if self.ttt is not None else self.static

    def ttt_fields(self) -> dict:
        return self.ttt.fields() if self.ttt is not None else {}


@dataclass
class Scorer:
    """Scores models on one validation set, always the same way: the canonical byte count, the configured
    window and stride, on the device's autocast dtype.

    Every score pgolf reports goes through it: the float and round-trip scores of train, export and fit-budget,
    `pgolf eval`, pack's score of an artifact without a record, and the shipped script's.
    """

    val: ValData
    seq_len: int
    stride: int
    setup: DeviceSetup
    progress: ProgressFn = no_progress
    ttt: TTTConfig = field(default_factory=TTTConfig)
    """Test-time training for `score_all` (ttt.name none: static only)."""
    seed: int = 0
    """Seeds the TTT adapters' initial A factors."""

    @classmethod
    def load(cls, cfg: Config, setup: DeviceSetup, progress: ProgressFn = no_progress) -> Scorer:
        """The validation data of cfg.data (capped at data.val_tokens), scored at train.seq_len and eval_stride."""
        too_wide = ttt_rank_problem(cfg.ttt, cfg.model.model_dim)  # a saved model's width is known only here
        if too_wide:
            raise ConfigError(too_wide)
        val = load_val_data(cfg, cfg.train.seq_len, cfg.data.val_tokens)
        for needs, on in (("model.doc_mask", cfg.model.doc_mask), (f"ttt={cfg.ttt.name}", cfg.ttt.name != "none")):
            if on:
                check_documents(val.tokens, f"the validation shards in {cfg.data.dir}", needs)
        return cls(val, cfg.train.seq_len, cfg.export.eval_stride, setup, progress, cfg.ttt, cfg.seed)

    @classmethod
    def for_saved(cls, cfg: Config, model_config: dict, setup: DeviceSetup,
                  progress: ProgressFn = no_progress) -> Scorer:
        """`load` for a saved model: its vocabulary (checked against the tokenizer), width and document masking are
        its own, whatever the config says; `cfg.model` takes them."""
        cfg.model.vocab_size = model_config["vocab_size"]
        cfg.model.model_dim = model_config["model_dim"]
        cfg.model.doc_mask = bool(model_config.get("doc_mask", False))
        return cls.load(cfg, setup, progress)

    def head(self, max_tokens: int) -> Scorer:
        """The same scorer on the first `max_tokens` targets (0: all), silent and static: fit-budget's search
        slice."""
        n = self.val.tokens.numel() if max_tokens <= 0 else min(self.val.tokens.numel(), max_tokens + 1)
        return dataclasses.replace(self, val=dataclasses.replace(self.val, tokens=self.val.tokens[:n]),
                                   progress=no_progress, ttt=TTTConfig())

    def score(self, model: torch.nn.Module, per_token: bool = False) -> EvalResult:
        """The score of `model`; `per_token` also keeps every scored target's loss (EvalResult.token_losses)."""
        model.to(self.setup.device)
        return evaluate_bpb(model, self.val.tokens, self.val.luts, self.seq_len, stride=self.stride,
                            device=self.setup.device, autocast_dtype=self.setup.autocast_dtype, progress=self.progress,
                            per_token=per_token)

    @property
    def uses_ttt(self) -> bool:
        return self.ttt.name != "none"

    def score_ttt(self, model: torch.nn.Module, per_token: bool = False) -> TTTScore:
        """The score of `model` with the configured test-time training (the model itself is not changed)."""
        from pgolf.ttt.score import evaluate_ttt  # only then: a packed script carries pgolf/ttt only then

        started = time.perf_counter()
        result = evaluate_ttt(model, self.val.tokens, self.val.luts, self.ttt, device=self.setup.device,
                              autocast_dtype=self.setup.autocast_dtype, seed=self.seed, progress=self.progress,
                              per_token=per_token)
        return TTTScore(result, time.perf_counter() - started, self.ttt.name)

    def score_all(self, model: torch.nn.Module, per_token: bool = False) -> Scores:
        """The static score, and the TTT score when the config asks for it."""
        static = self.score(model, per_token=per_token)
        return Scores(static, self.score_ttt(model, per_token) if self.uses_ttt else None)

    def score_weights(self, model_config: dict, state: dict[str, torch.Tensor], where: Path | str) -> Scores:
        """Score saved weights: the model rebuilt from its saved kwargs (one-line error on a mismatch)."""
        return self.score_all(rebuild_model(model_config, state, where=where))

    def score_artifact(self, path: Path) -> Scores:
        """Score an artifact as it is on disk: read back, decoded, rebuilt."""
        model_config, state = load_artifact(path)
        return self.score_weights(model_config, state, where=path)

    @property
    def scored_on(self) -> dict[str, str]:
        return scored_on(self.setup)


def check_documents(tokens: torch.Tensor | np.ndarray, where: str, needs: str = "model.doc_mask") -> None:
    """model.doc_mask and test-time training work within documents, which start at BOS: tokens without one are an
    error, not one long document."""
    if not bool((tokens == BOS_ID).any()):
        raise DataError(f"{needs} needs BOS-separated documents, but {where} hold no BOS token (id {BOS_ID})")


def scored_on(setup: DeviceSetup) -> dict[str, str]:
    """Where a score was computed: CUDA autocasts bf16 and CPU runs float32, and the two differ in the last digits."""
    dtype = str(setup.autocast_dtype or torch.float32).removeprefix("torch.")
    return {"eval_device": setup.device.type, "eval_dtype": dtype}

"""Token batches for training and evaluation.

`sampling="stream"` (the schema default, as the reference script does it): training
reads the shards as one endless stream in file order (wrapping to the first
shard after the last), with no shuffling. Each micro-batch, every rank takes the
same `world_size * (local_tokens + 1)` tokens from its own copy of the stream
and keeps its own contiguous span of `local_tokens + 1`, so ranks stay in
lockstep without communicating and never share a token; inputs and targets are
that span shifted by one.

`sampling="random"` (pgolf's, for small corpora): every sequence of a
micro-batch is a window of `seq_len + 1` tokens at a uniformly random position
of the training tokens (within one shard, each start equally likely). Each
step's global set of windows (`batch_tokens // seq_len` of them) is drawn at
once from a generator seeded by the run's seed alone, which every rank holds a
copy of; each rank keeps its share with the stream's layout (micro-batch m of
rank r: the (m * world_size + r)-th block of `local_tokens // seq_len`
windows). So a run reads the same windows whatever its world size and
`train.grad_accum`. The seed is `[seed, 0]`, what rank 0 used when each rank
had its own generator: one-process runs read the windows they read then. This
is what a plain training loop does; on a small corpus that is ordered by
document and read more than once (the built-in one, ~1.85 times by the tiny CPU
run) it scored 0.30 val_bpb better than the stream (docs/cpu_recipe.md), which
spends the end of training on the last documents.

Validation is all validation tokens concatenated and cut to whole sequences
plus the one extra target token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pgolf.data.shards import read_shard
from pgolf.errors import ConfigError, DataError


def check_vocab(num_ids: int, vocab_size: int, where: str) -> None:
    """DataError when `where` (a tokenizer or shards) needs more token ids than the model's vocabulary has."""
    if num_ids > vocab_size:
        raise DataError(f"{where} needs a vocabulary of {num_ids} but model.vocab_size is {vocab_size}")


class TokenStream:
    """The tokens of `files` read in order as one endless stream."""

    def __init__(self, files: Sequence[Path | str]):
        if not files:
            raise DataError("no shards to read")
        self.files = [Path(f) for f in files]
        self.seek(0, 0)
        if not self._tokens.size and not any(read_shard(f).size for f in self.files[1:]):
            raise DataError(f"shards {self.files[0]} ... hold no tokens")

    def seek(self, file_index: int, pos: int) -> None:
        """Continue from token `pos` of shard `file_index`."""
        if not 0 <= file_index < len(self.files):
            raise DataError(f"stream position names shard {file_index} of {len(self.files)}")
        self.file_index, self.pos = file_index, pos
        self._tokens = read_shard(self.files[file_index])

    def take(self, n: int) -> np.ndarray:
        """The next `n` tokens (a new uint16 array), continuing into the next shard and wrapping after the last."""
        chunks, remaining = [], n
        while remaining > 0:
            available = self._tokens.size - self.pos
            if available <= 0:
                self.seek((self.file_index + 1) % len(self.files), 0)
                continue
            count = min(remaining, available)
            chunks.append(self._tokens[self.pos:self.pos + count])
            self.pos += count
            remaining -= count
        return np.concatenate(chunks) if chunks else np.zeros(0, np.uint16)


class RandomWindows:
    """Windows of `length` tokens at uniformly random positions of `files` (never across a shard boundary)."""

    def __init__(self, files: Sequence[Path | str], length: int, seed: int):
        if not files:
            raise DataError("no shards to read")
        shards = [read_shard(f) for f in files]
        self.shards = [tokens for tokens in shards if tokens.size >= length]
        if not self.shards:
            raise DataError(f"shards {Path(files[0]).parent} hold no shard with a whole window of {length} tokens")
        starts = np.array([tokens.size - length + 1 for tokens in self.shards], dtype=np.int64)
        self._cum_starts = np.cumsum(starts)  # start k of all shards -> (shard, offset)
        self.length = length
        self.rng = np.random.default_rng([seed, 0])

    def draw(self, count: int) -> np.ndarray:
        """`count` window starts (int64), numbered over all shards; `read` reads them."""
        return self.rng.integers(0, self._cum_starts[-1], size=count)

    def read(self, picks: np.ndarray) -> np.ndarray:
        """The windows starting at `picks` (from `draw`), uint16 of shape (len(picks), length)."""
        shard_of = np.searchsorted(self._cum_starts, picks, side="right")
        out = np.empty((len(picks), self.length), dtype=np.uint16)
        for row, (pick, shard) in enumerate(zip(picks, shard_of)):
            offset = pick - (self._cum_starts[shard - 1] if shard else 0)
            out[row] = self.shards[shard][offset:offset + self.length]
        return out


SAMPLING_MODES = ("stream", "random")


class TrainBatches:
    """Micro-batches (x, y) of one rank; `batch_tokens` counts all micro-batches of all ranks in a step."""

    def __init__(self, files: Sequence[Path | str], batch_tokens: int, seq_len: int, grad_accum: int,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                 sampling: str = "stream", seed: int = 0):
        sequence_tokens = world_size * grad_accum * seq_len
        if batch_tokens <= 0 or batch_tokens % sequence_tokens:
            raise ConfigError(f"train.batch_tokens ({batch_tokens}) must be a positive multiple of world_size * "
                              f"train.grad_accum * train.seq_len ({world_size} * {grad_accum} * {seq_len} = "
                              f"{sequence_tokens})")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world_size {world_size}")
        if sampling not in SAMPLING_MODES:
            raise ConfigError(f"train.sampling must be one of {', '.join(SAMPLING_MODES)}, got {sampling!r}")
        self.local_tokens = batch_tokens // (world_size * grad_accum)
        self.seq_len, self.rank, self.world_size, self.grad_accum = seq_len, rank, world_size, grad_accum
        self.device = torch.device(device)
        self.sampling = sampling
        if sampling == "stream":
            self.stream = TokenStream(files)
        else:
            self.windows = RandomWindows(files, seq_len + 1, seed)
            self._micro = 0  # micro-batches of the current step already taken (0: the next one starts a step)
            self._step_picks = np.zeros(0, np.int64)  # the current step's window starts, all ranks'
            self._step_rng: dict = {}  # the generator's state before it drew them

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, int64 of shape (local_tokens // seq_len, seq_len), targets shifted by one.

        On CUDA the tokens travel once, from pinned memory without blocking the host; x and y are views of them.
        """
        if self.sampling == "random":
            rows = torch.from_numpy(self._random_rows().astype(np.int64))  # (B, T+1)
        else:
            span = self.local_tokens + 1
            chunk = self.stream.take(span * self.world_size)
            rows = torch.from_numpy(chunk[self.rank * span:(self.rank + 1) * span].astype(np.int64))  # (span,)
        if self.device.type == "cuda":
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        if self.sampling == "random":
            return rows[:, :-1], rows[:, 1:]
        return rows[:-1].view(-1, self.seq_len), rows[1:].view(-1, self.seq_len)  # (B, T) each

    def _random_rows(self) -> np.ndarray:
        """This rank's windows of the next micro-batch: its block of the step's global draw (see the module doc)."""
        if self._micro == 0:
            self._draw_step()
        rows = self.local_tokens // self.seq_len
        block = self._micro * self.world_size + self.rank
        self._micro = (self._micro + 1) % self.grad_accum
        return self.windows.read(self._step_picks[block * rows:(block + 1) * rows])

    def _draw_step(self) -> None:
        self._step_rng = self.windows.rng.bit_generator.state
        per_step = self.world_size * self.grad_accum * (self.local_tokens // self.seq_len)
        self._step_picks = self.windows.draw(per_step)

    def state_dict(self) -> dict:
        """Where the next batch starts (JSON-able): the stream's shard and offset, or the window generator's state
        (before the current step's draw) and how many of that step's micro-batches were taken."""
        if self.sampling == "random":
            if self._micro:
                return {"rng": self._step_rng, "micro": self._micro}
            return {"rng": self.windows.rng.bit_generator.state, "micro": 0}
        return {"file": self.stream.file_index, "pos": self.stream.pos}

    def load_state_dict(self, state: dict) -> None:
        if self.sampling == "random":
            self.windows.rng.bit_generator.state = state["rng"]
            self._micro = int(state.get("micro", 0))
            if self._micro:
                self._draw_step()
        else:
            self.stream.seek(state["file"], state["pos"])


def load_val_tokens(files: Sequence[Path | str], seq_len: int, max_tokens: int = 0) -> torch.Tensor:
    """Validation tokens (int64, 1-D): whole `seq_len` sequences plus one, from at most `max_tokens` (0 = all)."""
    if not files:
        raise DataError("no validation shards")
    tokens = np.concatenate([read_shard(f) for f in files])
    if max_tokens > 0:
        tokens = tokens[:max_tokens + 1]
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise DataError(f"validation shards {Path(files[0]).parent} hold {tokens.size} tokens; "
                        f"need at least seq_len + 1 = {seq_len + 1}")
    return torch.from_numpy(tokens[:usable + 1].astype(np.int64))

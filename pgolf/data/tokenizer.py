"""SentencePiece tokenizers, the challenge's pure-byte tokenizer, and the canonical val_bpb byte tables.

Tokenizers are trained like the challenge's sp1024: BPE with ids pad=0, bos=1,
eos=2, unk=3, then the 256 byte-fallback pieces `<0x00>`..`<0xFF>` (ids 4..259),
then the merges. Non-standard choices, so that the byte tables count exactly the
bytes of the text:
- identity normalization and no whitespace collapsing, so
  `decode(encode(text)) == text` for any text (byte fallback covers the rest);
- whole documents are training "sentences" (SentencePiece's default limit of
  4192 bytes would silently drop most of them), so pieces may span newlines;
- digits are split one per piece (numbers then cost predictable tokens).
Training runs from memory and writes the model atomically; it is deterministic
for a given SentencePiece version and input.

Byte tables (REFERENCE.md): control, unknown and unused pieces count 0 bytes and
are boundaries; byte pieces count 1; any other piece counts the UTF-8 length of
its text without the leading "▁", plus 1 for that "▁" when the previous token is
not a boundary. `byte_luts` gives the same tables for a byte-level tokenizer.

The challenge's byte260 export ships its tokenizer as a JSON file
(`fineweb_pure_byte_260.json`: `tokenizer_type: pure_byte`, a `config` with the
four special ids, `byte_offset` 4 and `byte_count` 256, and `vocab_size` 260).
`load_scoring_tokenizer` reads a `.json` path as that file and anything else as
a SentencePiece model; a JSON of any other type or layout is a DataError, since
its byte tables would be wrong.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from pgolf.atomic import atomic_write_bytes
from pgolf.data.loader import check_vocab
from pgolf.data.shards import command_that_makes
from pgolf.errors import DataError

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
BYTE_OFFSET = 4
"""Byte-level tokenizer layout: ids 0..3 are pad, bos, eos, unk; byte b is id b + 4 (so 260 ids in all)."""
PURE_BYTE_CONFIG = {"pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID, "unk_id": UNK_ID,
                    "byte_offset": BYTE_OFFSET, "byte_count": 256}
"""The `config` of the challenge's pure-byte tokenizer JSON, the one byte layout `byte_luts` counts."""
_SENTENCE_CHARS = 16384
_SENTENCE_SAMPLE = 1_000_000
"""Training sees at most this many sentences (documents or 16k-character slices), sampled with a fixed seed."""


def _training_sentences(documents: Iterable[str]) -> Iterator[str]:
    for doc in documents:
        for start in range(0, len(doc), _SENTENCE_CHARS):
            yield doc[start:start + _SENTENCE_CHARS]


def train_tokenizer(documents: Iterable[str], model_path: Path | str, vocab_size: int = 1024) -> Path:
    """Train a BPE SentencePiece model on `documents` and write it to `model_path` atomically."""
    model_path = Path(model_path)
    model_proto = io.BytesIO()
    spm.set_random_generator_seed(0)
    try:
        with open(os.devnull, "w") as devnull:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_training_sentences(documents), model_writer=model_proto, logstream=devnull,
                model_type="bpe", vocab_size=vocab_size,
                pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID, byte_fallback=True,
                normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
                max_sentence_length=4 * _SENTENCE_CHARS, input_sentence_size=_SENTENCE_SAMPLE,
                shuffle_input_sentence=True, num_threads=min(os.cpu_count() or 1, 16),
            )
    except RuntimeError as exc:
        raise DataError(_training_error(str(exc), vocab_size)) from exc
    atomic_write_bytes(model_path, model_proto.getvalue())
    return model_path


def _training_error(message: str, vocab_size: int) -> str:
    """SentencePiece's check failures, said in the user's terms."""
    if match := re.search(r"Please set it to a value <= (\d+)", message):
        return (f"corpus too small for vocab_size={vocab_size}: it supports at most {match.group(1)} pieces "
                f"(use a smaller vocab_size or more text)")
    if match := re.search(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)", message):
        return (f"vocab_size={vocab_size} is too small: the 256 byte pieces, 4 specials and the corpus's "
                f"characters need {match.group(1)}")
    if "sentences_.empty()" in message:
        return "no text to train the tokenizer on"
    return f"tokenizer training failed: {message.split('] ')[-1].strip()}"


def load_tokenizer(path: Path | str) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model, with a DataError for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer {path} not found (run `{command_that_makes(path)}`)")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load_from_serialized_proto(path.read_bytes())
    except (RuntimeError, OSError) as exc:
        raise DataError(f"tokenizer {path} is not a SentencePiece model ({str(exc).splitlines()[0]})") from exc
    return sp


class PureByteTokenizer:
    """The challenge's byte260 tokenizer: ids 0..3 are pad, bos, eos, unk; byte b is id b + BYTE_OFFSET."""

    vocab_size = 256 + BYTE_OFFSET

    def encode(self, text: str) -> list[int]:
        return [byte + BYTE_OFFSET for byte in text.encode("utf-8")]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the byte ids; special ids are skipped."""
        data = bytes(i - BYTE_OFFSET for i in map(int, ids) if BYTE_OFFSET <= i < self.vocab_size)
        return data.decode("utf-8", errors="replace")


def load_pure_byte_tokenizer(path: Path | str) -> PureByteTokenizer:
    """Read the challenge's pure-byte tokenizer JSON, with a DataError for a missing, malformed or other one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer {path} not found (run `{command_that_makes(path)}`)")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"tokenizer {path} is not a JSON file ({exc})") from exc
    kind = payload.get("tokenizer_type") if isinstance(payload, dict) else None
    if kind != "pure_byte":
        raise DataError(f"tokenizer {path} has tokenizer_type {kind!r}; a .json tokenizer must be the challenge's "
                        f"pure_byte one (other tokenizers: a SentencePiece .model)")
    config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
    wrong = [f"config.{key} is {config.get(key)!r}, expected {value}"
             for key, value in PURE_BYTE_CONFIG.items() if config.get(key) != value]
    if payload.get("vocab_size") != 256 + BYTE_OFFSET:
        wrong.append(f"vocab_size is {payload.get('vocab_size')!r}, expected {256 + BYTE_OFFSET}")
    if wrong:
        raise DataError(f"tokenizer {path} is not the byte260 layout pgolf counts bytes for: {'; '.join(wrong)}")
    return PureByteTokenizer()


Tokenizer = spm.SentencePieceProcessor | PureByteTokenizer


def load_scoring_tokenizer(path: Path | str) -> Tokenizer:
    """The tokenizer val_bpb counts bytes with: the pure-byte JSON for a `.json` path, else a SentencePiece model."""
    path = Path(path)
    return load_pure_byte_tokenizer(path) if path.suffix == ".json" else load_tokenizer(path)


def tokenizer_size(tokenizer: Tokenizer) -> int:
    """Number of token ids the tokenizer can produce."""
    if isinstance(tokenizer, PureByteTokenizer):
        return tokenizer.vocab_size
    return tokenizer.get_piece_size()


@dataclass(frozen=True)
class ByteLUTs:
    """Per-token-id byte tables for val_bpb (see the module docstring)."""

    base_bytes: torch.Tensor  # (V,) int16: UTF-8 bytes of the piece without its leading "▁"
    has_leading_space: torch.Tensor  # (V,) bool: the piece starts with "▁"
    is_boundary: torch.Tensor  # (V,) bool: a following "▁" counts no byte (control, unknown, unused, padding ids)

    @property
    def vocab_size(self) -> int:
        return self.base_bytes.numel()

    def to(self, device: torch.device | str) -> ByteLUTs:
        return ByteLUTs(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))


def _empty_tables(vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(vocab_size, np.int16), np.zeros(vocab_size, np.bool_), np.ones(vocab_size, np.bool_)


def _as_luts(base: np.ndarray, lead: np.ndarray, boundary: np.ndarray) -> ByteLUTs:
    return ByteLUTs(torch.from_numpy(base), torch.from_numpy(lead), torch.from_numpy(boundary))


def build_byte_luts(sp: Tokenizer, vocab_size: int | None = None) -> ByteLUTs:
    """Byte tables of a SentencePiece model (or the pure-byte tokenizer), padded to `vocab_size` ids (extra ids:
    0 bytes, boundary)."""
    if isinstance(sp, PureByteTokenizer):
        return byte_luts(sp.vocab_size if vocab_size is None else vocab_size)
    num_pieces = sp.get_piece_size()
    if vocab_size is None:
        vocab_size = num_pieces
    check_vocab(num_pieces, vocab_size, "tokenizer")
    base, lead, boundary = _empty_tables(vocab_size)
    for token_id in range(num_pieces):
        if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id):
            continue
        boundary[token_id] = False
        if sp.is_byte(token_id):
            base[token_id] = 1
            continue
        piece = sp.id_to_piece(token_id)
        if piece.startswith("▁"):
            lead[token_id] = True
            piece = piece[1:]
        base[token_id] = len(piece.encode("utf-8"))
    return _as_luts(base, lead, boundary)


def byte_luts(vocab_size: int = 256 + BYTE_OFFSET) -> ByteLUTs:
    """Byte tables of a byte-level tokenizer (byte260 layout, see BYTE_OFFSET): each byte id counts 1 byte."""
    check_vocab(256 + BYTE_OFFSET, vocab_size, "byte-level tokenizer")
    base, lead, boundary = _empty_tables(vocab_size)
    base[BYTE_OFFSET:BYTE_OFFSET + 256] = 1
    boundary[BYTE_OFFSET:BYTE_OFFSET + 256] = False
    return _as_luts(base, lead, boundary)


def target_bytes(prev_ids: torch.Tensor, target_ids: torch.Tensor, luts: ByteLUTs) -> torch.Tensor:
    """UTF-8 bytes each target token adds to the text, given the token before it (int32, shape of target_ids)."""
    base = luts.base_bytes[target_ids].to(torch.int32)
    space = luts.has_leading_space[target_ids] & ~luts.is_boundary[prev_ids]
    return base + space.to(torch.int32)

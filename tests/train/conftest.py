"""Fixtures shared by the training tests: a small synthetic corpus, its validation tokens and byte tables."""

from __future__ import annotations

import contextlib
import random

import pytest

from pgolf.data.loader import load_val_tokens
from pgolf.data.prepare import prepare_data
from pgolf.data.tokenizer import build_byte_luts, load_tokenizer

VOCAB = 300


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tokenizer and shards from a dozen synthetic .txt documents (simple sentences, ASCII)."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    nouns = "cat dog bird fish tree river stone cloud house road ship star".split()
    verbs = "sees finds likes moves holds keeps follows makes".split()
    adjectives = "red big small old quiet bright cold green".split()
    for index in range(16):
        sentences = [f"the {rng.choice(adjectives)} {rng.choice(nouns)} {rng.choice(verbs)} the {rng.choice(nouns)}."
                     for _ in range(150)]
        (root / f"doc{index:02d}.txt").write_text(" ".join(sentences) + "\n", encoding="utf-8")
    return prepare_data(root, root / "prepared", vocab_size=VOCAB, name="tiny")


@pytest.fixture(scope="module")
def val_data(corpus):
    tokens = load_val_tokens(corpus.val_files, 64, 4096)
    return tokens, build_byte_luts(load_tokenizer(corpus.tokenizer), VOCAB)




class SignalAfter:
    """A StopSignals stand-in whose request ("terminated") arrives once `steps` steps have asked for it."""

    def __init__(self, steps: int) -> None:
        self.steps, self.asked = steps, 0

    @property
    def reason(self) -> str:
        self.asked += 1
        return "terminated" if self.asked >= self.steps else ""

    def deferred(self):
        return contextlib.nullcontext()

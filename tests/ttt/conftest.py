"""A small random model and BOS-separated validation tokens for the TTT tests (no training, no files)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pgolf.data.tokenizer import ByteLUTs
from pgolf.model.build import make_gpt
from pgolf.schema import TTTConfig

VOCAB = 48
BOS = 1
DOC_LENGTHS = (70, 9, 41, 120, 25, 58, 3, 33, 90)


def random_model(**knobs) -> torch.nn.Module:
    """A GPT whose every weight is drawn (a fresh GPT's output projections are zero: its blocks would do nothing)."""
    torch.manual_seed(0)
    model = make_gpt(vocab_size=VOCAB, num_layers=knobs.pop("num_layers", 2), model_dim=32, num_heads=2,
                     num_kv_heads=1, **knobs)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.15)
    return model.eval()


def val_tokens(lengths=DOC_LENGTHS, seed: int = 1) -> torch.Tensor:
    """Documents of the given lengths, each starting at BOS, other tokens drawn from 2..VOCAB-1."""
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for n in lengths:
        doc = torch.randint(2, VOCAB, (n,), generator=gen)
        doc[0] = BOS
        docs.append(doc)
    return torch.cat(docs)


def luts() -> ByteLUTs:
    gen = torch.Generator().manual_seed(2)
    return ByteLUTs(base_bytes=torch.randint(1, 4, (VOCAB,), generator=gen).to(torch.int16),
                    has_leading_space=torch.rand(VOCAB, generator=gen) < 0.4,
                    is_boundary=torch.arange(VOCAB) < 2)


def ttt_config(**changes) -> TTTConfig:
    """LoRA on every target, small chunks and windows, 2 documents per batch; no global phase unless asked."""
    base = TTTConfig(name="test", rank=4, alpha=8.0, lr=1e-2, weight_decay=0.1, chunk=8, context=24, batch_docs=2,
                     phases=0, prefix_docs=0, global_lr=0.05, global_chunk_tokens=48, global_batch_seqs=2)
    return dataclasses.replace(base, **changes)


@pytest.fixture
def model():
    return random_model()

"""What a TTT score is, with nothing learned: each chunk scored with its own document's tokens before it, at most
`context` of them; computed here one target at a time, independently of pgolf/ttt."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgolf.ttt.documents import documents
from pgolf.ttt.score import evaluate_ttt
from tests.ttt.conftest import luts, random_model, ttt_config, val_tokens


def by_hand(model, tokens: torch.Tensor, chunk: int, context: int) -> torch.Tensor:
    """Loss of every target t: the model on the tokens of t's document that end its chunk, at most `context`."""
    tokens = tokens.tolist()
    bos = [i for i, t in enumerate(tokens) if t == 1] + [len(tokens) - 1]
    out = torch.zeros(len(tokens) - 1)
    for s, e in zip(bos, bos[1:]):  # targets s+1 .. e
        for k in range(0, e - s, chunk):
            last = min(s + k + chunk, e)  # the chunk's last target
            first_input = max(s, last - context)
            x = torch.tensor(tokens[first_input:last])[None]
            with torch.no_grad():
                logits = model(x)[0]
            for t in range(s + k + 1, last + 1):
                out[t - 1] = F.cross_entropy(logits[t - 1 - first_input], torch.tensor(tokens[t]))
    return out


@pytest.mark.parametrize("chunk, context", [(8, 24), (5, 5), (200, 200)])
def test_with_nothing_learned_each_chunk_is_scored_on_its_own_documents_context(chunk, context):
    model, tokens = random_model(), val_tokens()
    result = evaluate_ttt(model, tokens, luts(), ttt_config(lr=0.0, chunk=chunk, context=context), per_token=True)
    expected = by_hand(model, tokens, chunk, context)
    torch.testing.assert_close(result.token_losses, expected, rtol=1e-5, atol=1e-5)


def test_documents_cover_every_target_once_whatever_the_edges():
    """Tokens before the first BOS are a document; a trailing BOS is the last target of the document before it."""
    t = torch.tensor([5, 6, 1, 7, 8, 1, 1, 9, 1])
    docs = documents(t)
    assert [(d.start, d.length) for d in docs] == [(0, 3), (2, 4), (5, 2), (6, 3)]
    assert sum(d.targets for d in docs) == t.numel() - 1
    assert [(d.start, d.length) for d in documents(torch.tensor([4, 5, 6]))] == [(0, 3)]

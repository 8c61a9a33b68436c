"""Score first, train after: a validation token may be trained on only once it has been scored.

Checked from outside, on the per-token losses: change the tokens of one chunk and no score made before that
chunk's scores may change, bit for bit (CPU, float32). The scoring order is derived here from the documented rule
(ttt/documents.py's docstring), not taken from the module: documents by length in batches, the batch with the
longest document first, chunk c of every document of a batch before chunk c + 1.
"""

from __future__ import annotations

import torch

from pgolf.evaluate import evaluate_bpb
from pgolf.ttt.score import evaluate_ttt
from tests.ttt.conftest import BOS, VOCAB, luts, random_model, ttt_config, val_tokens


def documents_by_hand(tokens: torch.Tensor) -> list[tuple[int, int]]:
    """(first token, one past the last target) per document: a document's targets run up to the next BOS."""
    bos = [i for i, t in enumerate(tokens.tolist()) if t == BOS]
    assert bos[0] == 0
    ends = bos[1:] + [tokens.numel() - 1]
    return [(s, e) for s, e in zip(bos, ends) if e > s]


def scoring_steps(tokens: torch.Tensor, chunk: int, batch_docs: int) -> list[list[int]]:
    """Per scoring step, the validation positions of the targets it scores (loss index = position - 1)."""
    docs = sorted(documents_by_hand(tokens), key=lambda d: d[1] - d[0])
    groups = [docs[i:i + batch_docs] for i in range(0, len(docs), batch_docs)]
    groups.sort(key=lambda g: -max(e - s for s, e in g))
    steps = []
    for group in groups:
        longest = max(e - s for s, e in group)
        for c in range(-(-longest // chunk)):
            steps.append([t for s, e in group for t in range(s + 1 + c * chunk, min(s + 1 + (c + 1) * chunk, e + 1))])
    return steps


def perturbed(tokens: torch.Tensor, positions: list[int]) -> torch.Tensor:
    out = tokens.clone()
    for p in positions:
        out[p] = 2 + (int(out[p]) - 2 + 7) % (VOCAB - 2)  # another non-BOS token
    return out


def losses(model, tokens, cfg) -> torch.Tensor:
    result = evaluate_ttt(model, tokens, luts(), cfg, seed=3, per_token=True)
    assert not torch.isnan(result.token_losses).any()
    return result.token_losses


def test_the_scoring_order_covers_every_target_once():
    tokens = val_tokens()
    steps = scoring_steps(tokens, chunk=8, batch_docs=2)
    flat = sorted(t for step in steps for t in step)
    assert flat == list(range(1, tokens.numel()))


def _check(cfg, tokens, step_index: int, doc_of_step: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Perturb the last target of one document's chunk at `step_index`; assert nothing scored before moved."""
    model = random_model()
    steps = scoring_steps(tokens, cfg.chunk, cfg.batch_docs)
    step = steps[step_index]
    # the targets of one document in this step: a run of consecutive positions
    runs, run = [], [step[0]]
    for t in step[1:]:
        if t == run[-1] + 1:
            run.append(t)
        else:
            runs.append(run)
            run = [t]
    runs.append(run)
    target = runs[doc_of_step]
    before = [t for s in steps[:step_index] for t in s] + target[:-1]
    a = losses(model, tokens, cfg)
    b = losses(model, perturbed(tokens, [target[-1]]), cfg)
    idx = torch.tensor(before) - 1
    assert torch.equal(a[idx], b[idx]), "a score made before the changed token was scored moved"
    return a, b, [t for s in steps[step_index + 1:] for t in s]


def test_per_document_lora_scores_before_it_trains():
    cfg = ttt_config()
    tokens = val_tokens()
    a, b, later = _check(cfg, tokens, step_index=2)
    later_idx = torch.tensor(later) - 1
    assert not torch.equal(a[later_idx], b[later_idx])  # the changed token is context and training data after


def test_the_adapters_learn_from_the_chunk_just_scored():
    """The power of the check above. The longest document is scored first, alone in its batch; change the last
    target of its chunk 2 and look at its chunk 6, whose 24-token window starts after the change: with the
    adapters' learning rate at zero its scores stay, with learning on they move (what the adapters learned)."""
    tokens = val_tokens()
    steps = scoring_steps(tokens, 8, 2)
    changed_at = steps[2][-1]
    chunk_6 = steps[6]
    assert min(chunk_6) - 1 - 24 + len(chunk_6) > changed_at  # the window of chunk 6 does not reach the change
    changed = perturbed(tokens, [changed_at])
    model, idx = random_model(), torch.tensor(chunk_6) - 1
    for lr, moves in ((0.0, False), (1e-2, True)):
        cfg = ttt_config(lr=lr, context=24)
        a, b = losses(model, tokens, cfg), losses(model, changed, cfg)
        assert torch.equal(a[idx], b[idx]) != moves, lr


def test_global_phases_train_only_on_documents_already_scored():
    """Two phases over the first 4 documents scored: change a token of the first chunk of batch 2. Nothing scored
    before it moves, though phase 1 (after batch 2) trains on it; what is scored after that phase moves."""
    cfg = ttt_config(rank=0, phases=2, prefix_docs=4, global_lr=0.2, global_chunk_tokens=24, context=12)
    tokens = val_tokens()
    docs = sorted(documents_by_hand(tokens), key=lambda d: d[1] - d[0])
    groups = [docs[i:i + 2] for i in range(0, len(docs), 2)]
    groups.sort(key=lambda g: -max(e - s for s, e in g))
    first_of_batch_2 = -(-max(e - s for s, e in groups[0]) // cfg.chunk)
    a, b, later = _check(cfg, tokens, step_index=first_of_batch_2)
    batch_2_ends = first_of_batch_2 + -(-max(e - s for s, e in groups[1]) // cfg.chunk)
    after_phase = torch.tensor(later[sum(len(s) for s in scoring_steps(tokens, 8, 2)[first_of_batch_2 + 1:
                                                                                     batch_2_ends]):]) - 1
    assert not torch.equal(a[after_phase], b[after_phase])


def test_every_target_is_scored_exactly_once_with_the_static_totals():
    model, tokens = random_model(), val_tokens()
    static = evaluate_bpb(model, tokens, luts(), seq_len=32)
    for cfg in (ttt_config(), ttt_config(rank=0, phases=1, prefix_docs=3), ttt_config(phases=2, prefix_docs=5)):
        result = evaluate_ttt(model, tokens, luts(), cfg, per_token=True)
        assert (result.tokens, result.bytes) == (static.tokens, static.bytes) == (tokens.numel() - 1, static.bytes)
        assert result.token_losses.numel() == tokens.numel() - 1 and not torch.isnan(result.token_losses).any()
        assert abs(result.token_losses.double().sum().item() / result.tokens - result.loss) < 1e-6


def test_more_phases_than_documents_scores_all_the_same():
    """Two phases over one prefix document: the first phase ends after 0 documents and trains on nothing."""
    tokens = val_tokens(lengths=(60, 40))
    model, static = random_model(), None
    result = evaluate_ttt(model, tokens, luts(), ttt_config(rank=0, phases=2, prefix_docs=1), per_token=True)
    static = evaluate_bpb(model, tokens, luts(), seq_len=32)
    assert (result.tokens, result.bytes) == (static.tokens, static.bytes)
    assert not torch.isnan(result.token_losses).any()

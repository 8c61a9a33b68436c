"""val_bpb: every target scored exactly once (also with sliding windows), and the canonical formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from pgolf.data.tokenizer import ByteLUTs
from pgolf.evaluate import evaluate_bpb, unigram_bpb, window_plan


@pytest.mark.parametrize("n_targets,seq_len,stride", [
    (1024, 128, 0), (1000, 128, 0), (1000, 128, 64), (1023, 128, 1), (129, 128, 64), (50, 128, 64), (4096, 256, 100),
])
def test_window_plan_scores_every_target_exactly_once(n_targets, seq_len, stride):
    counts = torch.zeros(n_targets, dtype=torch.int64)
    for start, first, end in window_plan(n_targets, seq_len, stride):
        assert 0 <= start <= first < end <= n_targets
        assert end - start <= seq_len
        counts[first:end] += 1
    assert torch.equal(counts, torch.ones_like(counts))


def test_sliding_windows_give_later_targets_long_context():
    plan = window_plan(2048, 256, 64)
    for start, first, _end in plan[1:]:
        assert first - start >= 256 - 64 - 1


class _Uniform(torch.nn.Module):
    """Predicts every token with equal probability: loss is exactly ln(V)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ids):
        return torch.zeros(*ids.shape, self.vocab) + self.dummy


def _luts(vocab):
    base = torch.randint(1, 4, (vocab,), dtype=torch.int16, generator=torch.Generator().manual_seed(0))
    lead = torch.arange(vocab) % 2 == 0
    boundary = torch.zeros(vocab, dtype=torch.bool)
    base[1], lead[1], boundary[1] = 0, False, True  # BOS
    return ByteLUTs(base_bytes=base, has_leading_space=lead, is_boundary=boundary)


@pytest.mark.parametrize("stride", [0, 16])
def test_uniform_model_scores_log2_vocab_bits_per_token(stride):
    vocab = 64
    tokens = torch.randint(0, vocab, (1 + 8 * 32,), generator=torch.Generator().manual_seed(1))
    luts = _luts(vocab)
    result = evaluate_bpb(_Uniform(vocab), tokens, luts, seq_len=32, stride=stride, batch_seqs=3)
    prev, tgt = tokens[:-1], tokens[1:]
    expected_bytes = int((luts.base_bytes[tgt].long() + (luts.has_leading_space[tgt] & ~luts.is_boundary[prev])).sum())
    assert result.tokens == tokens.numel() - 1
    assert result.bytes == expected_bytes
    assert result.loss == pytest.approx(math.log(vocab), rel=1e-6)
    assert result.bpb == pytest.approx(math.log2(vocab) * result.tokens / expected_bytes, rel=1e-6)


def test_result_does_not_depend_on_batch_size():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(32, 32))
    tokens = torch.randint(0, 32, (1 + 5 * 16,))
    luts = _luts(32)
    a = evaluate_bpb(model, tokens, luts, seq_len=16, batch_seqs=1)
    b = evaluate_bpb(model, tokens, luts, seq_len=16, batch_seqs=4)
    assert a.bpb == pytest.approx(b.bpb, rel=1e-9) and a.bytes == b.bytes


def test_unigram_bpb_matches_hand_computation():
    vocab = 8
    train = torch.tensor([2, 2, 2, 3, 3, 4])
    val = torch.tensor([1, 2, 3, 2])
    luts = _luts(vocab)
    counts = torch.bincount(train, minlength=vocab).double() + 1
    p = counts / counts.sum()
    bits = -(torch.log2(p[2]) + torch.log2(p[3]) + torch.log2(p[2])).item()
    nbytes = sum(int(luts.base_bytes[t]) + int(luts.has_leading_space[t] and not luts.is_boundary[pv])
                 for pv, t in zip([1, 2, 3], [2, 3, 2]))
    assert unigram_bpb(train, val, luts, vocab) == pytest.approx(bits / nbytes)


class _Bigram(torch.nn.Module):
    """Logits that depend on the current token only, so a target's loss is the same in any window."""

    def __init__(self, vocab):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(2)))

    def forward(self, ids):
        return self.table[ids]


@pytest.mark.parametrize("stride", [0, 16])
def test_per_token_losses_line_up_with_the_targets_in_validation_order(stride):
    vocab = 32
    tokens = torch.randint(0, vocab, (1 + 5 * 32 + 7,), generator=torch.Generator().manual_seed(3))
    model = _Bigram(vocab)
    result = evaluate_bpb(model, tokens, _luts(vocab), seq_len=32, stride=stride, batch_seqs=3, per_token=True)
    expected = F.cross_entropy(model.table[tokens[:-1]].detach(), tokens[1:], reduction="none")  # by hand
    assert result.token_losses.dtype == torch.float32 and result.token_losses.numel() == result.tokens
    torch.testing.assert_close(result.token_losses, expected, rtol=1e-6, atol=1e-6)
    assert result.token_losses.double().mean().item() == pytest.approx(result.loss, rel=1e-6)
    assert evaluate_bpb(model, tokens, _luts(vocab), seq_len=32, stride=stride).token_losses is None

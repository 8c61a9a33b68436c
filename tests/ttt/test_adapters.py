"""Per-document adapters: they start as no change, each batch row is its own document, a looped block gets one
adapter per pass, and detaching gives the model back as it was."""

from __future__ import annotations

import torch

from pgolf.ttt.adapters import Adapters
from pgolf.ttt.score import evaluate_ttt
from tests.ttt.conftest import luts, random_model, ttt_config, val_tokens

TARGETS = ["q", "k", "v", "o", "mlp", "head"]


def _input(rows: int = 3, length: int = 20) -> torch.Tensor:
    x = torch.randint(2, 48, (rows, length), generator=torch.Generator().manual_seed(5))
    x[:, 0] = 1
    return x


def test_fresh_adapters_change_nothing_and_each_row_is_its_own_document():
    model, x = random_model(), _input()
    with torch.no_grad():
        plain = model(x)
        adapters = Adapters(model, rows=3, rank=4, alpha=8.0, targets=TARGETS, generator=torch.Generator())
        assert torch.equal(model(x), plain)  # B starts at zero
        for lora in adapters.all():
            lora.B[1].normal_(0.0, 0.5)  # document 1 has learned something
        adapted = model(x)
    assert torch.equal(adapted[0], plain[0]) and torch.equal(adapted[2], plain[2])
    assert (adapted[1] - plain[1]).abs().max() > 1e-3
    adapters.detach()
    with torch.no_grad():
        assert torch.equal(model(x), plain)


def test_each_target_reaches_the_logits():
    model, x = random_model(), _input()
    with torch.no_grad():
        plain = model(x)
    for target in TARGETS:
        adapters = Adapters(model, rows=3, rank=4, alpha=8.0, targets=[target], generator=torch.Generator())
        with torch.no_grad():
            for lora in adapters.all():
                lora.B.normal_(0.0, 0.5)
            assert (model(x) - plain).abs().max() > 1e-3, target
        adapters.detach()


def test_a_looped_block_has_one_adapter_per_pass():
    """layers 1..2 of 4 run 3 times: their q adapters are 3 each, the others' 1 (the record's slots)."""
    model = random_model(num_layers=4, recur_passes=3, recur_start=1, recur_end=2)
    assert model.layer_order() == [0, 1, 2, 1, 2, 1, 2, 3]
    adapters = Adapters(model, rows=1, rank=2, alpha=2.0, targets=["q"], generator=torch.Generator())
    assert len(adapters.loras) == 1 + 3 + 3 + 1
    x = _input(rows=1)
    seen = []
    handles = [lora.register_forward_hook(lambda m, a, o, i=i: seen.append(i)) for i, lora in
               enumerate(adapters.loras)]
    with torch.no_grad():
        model(x)
        model(x)  # a second pass starts counting again
    for h in handles:
        h.remove()
    assert sorted(seen) == sorted(list(range(8)) * 2) and len(seen) == 16


def test_ttt_leaves_the_callers_model_as_it_was():
    model = random_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = evaluate_ttt(model, val_tokens(), luts(), ttt_config(phases=1, prefix_docs=3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.head_adapter is None and not model._forward_hooks and not model._forward_pre_hooks
    assert result.tokens > 0


def test_adapting_lowers_the_loss_of_a_document_that_repeats_itself():
    """A document of one 16-token phrase said 12 times: the adapters learn it from the chunks already scored, so
    its later chunks cost less than the static model says (the effect TTT exists for)."""
    gen = torch.Generator().manual_seed(9)
    phrase = torch.randint(2, 48, (16,), generator=gen)
    tokens = torch.cat([torch.tensor([1]), phrase.repeat(12), torch.tensor([1]), phrase[:5]])
    model = random_model()
    static = evaluate_ttt(model, tokens, luts(), ttt_config(lr=0.0), per_token=True).token_losses
    adapted = evaluate_ttt(model, tokens, luts(), ttt_config(lr=3e-2), per_token=True).token_losses
    late = slice(96, 192)
    assert adapted[late].mean() < 0.8 * static[late].mean()
    assert torch.equal(adapted[:8], static[:8])  # the first chunk is scored before anything is learned

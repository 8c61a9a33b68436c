"""model.doc_mask: attention never crosses a BOS boundary, in the baseline GPT and the records model."""

import math

import pytest
import torch
import torch.nn.functional as F

from pgolf import config as C
from pgolf.errors import DataError
from pgolf.jobs.models import build_model, rebuild_model
from pgolf.jobs.scorer import check_documents
from pgolf.model.doc_mask import DocumentMask, block_mask
from pgolf.model.knobs import BOS_ID

TINY = ["model.vocab_size=64", "model.num_layers=4", "model.model_dim=32", "model.num_heads=4", "model.num_kv_heads=2"]
RECORDS_TINY = ["model=records_tiny", "model.vocab_size=64", "model.model_dim=64", "model.rope_dims=8"]


def trained_like(overrides, seed=0):
    """A model with every weight moved off its init (zero-initialised output projections would hide attention)."""
    torch.manual_seed(seed)
    model = build_model(C.compose(overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def two_documents(seed=0, length=24, second=10):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(BOS_ID + 3, 64, (2, length), generator=gen)
    ids[:, 0] = BOS_ID
    ids[:, second] = BOS_ID
    return ids


@pytest.mark.parametrize("overrides", [[*TINY, "model.doc_mask=true"], RECORDS_TINY], ids=["baseline", "records"])
@torch.no_grad()
def test_the_next_documents_logits_do_not_depend_on_the_previous_document(overrides):
    model = trained_like(overrides)
    assert model.config["doc_mask"] is True
    ids = two_documents()
    other = ids.clone()
    other[:, 1:10] = torch.randint(BOS_ID + 3, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    logits, changed = model(ids), model(other)
    assert torch.equal(logits[:, 10:], changed[:, 10:])
    assert not torch.allclose(logits[:, :10], changed[:, :10])  # the perturbation did reach document 1
    alone = model(ids[:, 10:])  # RoPE is relative: document 2 scored on its own gives the same logits
    torch.testing.assert_close(logits[:, 10:], alone, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_without_the_knob_attention_crosses_documents_and_the_config_stays_as_it_was():
    model = trained_like(TINY)
    assert "doc_mask" not in model.config  # configs and artifacts of unmasked models are unchanged
    ids = two_documents()
    other = ids.clone()
    other[:, 1:10] = (other[:, 1:10] + 7) % 60 + 4
    assert not torch.allclose(model(ids)[:, 10:], model(other)[:, 10:])


def test_the_mask_is_causal_within_each_document():
    ids = torch.tensor([[BOS_ID, 5, 6, BOS_ID, 7, 8, 9]])
    mask = DocumentMask(ids).mask[0, 0]
    expected = torch.zeros(7, 7, dtype=torch.bool)
    for q in range(7):
        start = 0 if q < 3 else 3
        expected[q, start:q + 1] = True
    assert torch.equal(mask, expected)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@torch.no_grad()
def test_the_cuda_block_mask_keeps_the_same_keys_as_the_cpu_mask():
    """The CUDA path (flex_attention over a BlockMask) on CPU, forward only: the same output as masked SDPA."""
    from torch.nn.attention.flex_attention import flex_attention

    ids = torch.randint(BOS_ID + 3, 64, (2, 256), generator=torch.Generator().manual_seed(3))
    ids[:, [0, 50, 130, 131, 200]] = BOS_ID
    q, k, v = (torch.randn(2, h, 256, 16, generator=torch.Generator().manual_seed(h)) for h in (4, 2, 2))
    cpu = DocumentMask(ids).attend(q, k, v)
    doc = torch.cumsum(ids == BOS_ID, dim=1)
    flex = flex_attention(q, k, v, block_mask=block_mask(doc), enable_gqa=True)
    torch.testing.assert_close(flex, cpu, rtol=1e-5, atol=1e-5)
    scores = (q @ k.repeat_interleave(2, dim=1).transpose(-1, -2)) / math.sqrt(16)  # written out by hand
    allowed = (doc[:, None, :, None] == doc[:, None, None, :]) & torch.ones(256, 256, dtype=torch.bool).tril()
    by_hand = F.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v.repeat_interleave(2, dim=1)
    torch.testing.assert_close(cpu, by_hand, rtol=1e-5, atol=1e-5)


def test_a_saved_masked_model_rebuilds_masked():
    model = trained_like([*TINY, "model.doc_mask=true"])
    rebuilt = rebuild_model(dict(model.config), model.state_dict())
    assert rebuilt.doc_mask and rebuilt.config == model.config


def test_tokens_without_a_bos_are_a_one_line_error_naming_the_key():
    check_documents(torch.tensor([BOS_ID, 5, 6]), "here")
    with pytest.raises(DataError, match=r"^model.doc_mask needs BOS-separated documents, but the shards hold no BOS"):
        check_documents(torch.tensor([4, 5, 6]), "the shards")

"""Document-masked attention (`model.doc_mask`): causal attention that never crosses a BOS boundary.

The record trains and scores with flash-attn's varlen kernel over `cu_seqlens` (one segment per document);
pgolf keeps its fixed windows and masks them instead, which attends to exactly the same keys: position t
sees positions s <= t of its own document, a document starting at its BOS token. So document N+1's logits do
not depend on document N's tokens, in training and in eval.

Kernels, one switch on the device of the tokens:
- CPU: scaled_dot_product_attention with a boolean mask (B, 1, T, T). Chosen by measurement
  (bench/bench_doc_mask.py, torch 2.13, one thread, 8 x 256 tokens, 4/2 heads of 32): it costs about what causal
  SDPA costs (15.8 against 15.0 ms forward + backward), while flex_attention has no backward on CPU at all and
  its compiled forward takes 7.2 ms against masked SDPA's 4.8.
- CUDA: flex_attention (compiled once) with a BlockMask built from the same rule, so blocks of the mask that
  are all False are skipped and the kernel stays a fused one; the flash SDPA kernel takes no mask.
Imported only when the model has the knob on (bundle.graph.GATED): a packed script carries it only then.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.model.knobs import BOS_ID


class DocumentMask:
    """What each position may attend to, for one batch of token ids (B, T); `attend` applies it."""

    def __init__(self, input_ids: Tensor, bos_id: int = BOS_ID) -> None:
        doc = torch.cumsum(input_ids == bos_id, dim=1)  # (B, T): the document each position is in
        if input_ids.is_cuda:
            self.mask = block_mask(doc)
        else:
            T = input_ids.size(1)
            causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
            self.mask = ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]  # (B, 1, T, T)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention of q (B, H, T, hd) over k, v (B, Hkv, T, hd) within documents; (B, H, T, hd)."""
        gqa = q.size(1) != k.size(1)
        if isinstance(self.mask, Tensor):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, enable_gqa=gqa)
        return _compiled_flex()(q, k, v, block_mask=self.mask, enable_gqa=gqa)


def block_mask(doc: Tensor):
    """flex_attention's BlockMask of the same rule, for document ids `doc` (B, T), on their device."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_document(b, h, q, k):
        return (k <= q) & (doc[b, q] == doc[b, k])

    B, T = doc.shape
    return create_block_mask(same_document, B, None, T, T, device=doc.device)


@functools.cache
def _compiled_flex():
    """flex_attention compiled once: eager flex_attention materialises the whole score matrix."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)

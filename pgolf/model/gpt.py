"""The challenge's baseline GPT, with the same state-dict keys as its reference script.

A plain state dict saved by the root `train_gpt.py` of openai/parameter-golf loads into
`GPT(...)` with strict=True, and with the default regularization arguments the forward
pass computes the same numbers. What is non-standard (all from the reference):

- RMSNorm has no weight (no state-dict keys); q and k are RMS-normalised per head,
  then rotated (RoPE, half-split), then queries scaled by a learned per-head `q_gain`.
- Each block mixes its input with the embedding output x0 (`resid_mix`) and scales
  both residual branches per channel (`attn_scale`, `mlp_scale`).
- U-Net skips: the first half of the blocks push their outputs, the second half pop
  them in reverse order and add them scaled by `skip_weights`.
- Output projections (and an untied head) start at zero, so a fresh model's blocks
  are the identity and its logits come from the embedding alone.
- Linear weights are cast to the input's dtype at matmul time (`CastedLinear`), so
  fp32 master weights work under bf16 autocast.
- RoPE positions are built in the dtype of the `inv_freq` buffer, as in the
  reference: a model cast with `.bfloat16()` (as the reference does before training)
  rounds positions above 256 exactly as the reference did. In fp32 they are exact.
- Softcap is applied in the compute dtype and the logits are then cast to float32,
  in the reference's order.

Added for pgolf, each off with the constructor's defaults:
- `ln_scale` scales each block's normalized inputs by 1/sqrt(layer+1), `fixed` (a
  non-persistent buffer: no state-dict key) or `learned` (a parameter
  `blocks.<i>.ln_scale` initialised to that value). It is part of the forward pass, in
  training and eval alike, so a model is scored with the ln_scale it was trained
  with (it is in `GPT.config`, which checkpoints and artifacts carry). pgolf's
  reg presets `cpu` (the default), `default` and `records` turn it on as `fixed`;
  `reg=none` and the reference leave it off.
- `dropout` on the branch outputs and `drop_path` (per-sample stochastic depth, rate
  rising linearly from 0 at the first block to `drop_path` at the last): training
  mode only, the identity in eval mode.
The model knows nothing of quantization or pruning.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from collections.abc import Callable

    from pgolf.model.doc_mask import DocumentMask

LN_SCALE_MODES = ("none", "fixed", "learned")


def rms_norm(x: Tensor) -> Tensor:
    """RMS-normalise over the last dimension, without a learned weight."""
    return F.rms_norm(x, (x.size(-1),))


class CastedLinear(nn.Linear):
    """Bias-free linear layer whose weight is cast to the input's dtype at matmul time."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype))


class Rotary(nn.Module):
    """RoPE tables for a head dimension; `inv_freq` is a non-persistent buffer (no state-dict key)."""

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int) -> tuple[Tensor, Tensor]:
        t = torch.arange(seq_len, device=self.inv_freq.device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(t, self.inv_freq)  # (T, hd/2)
        return freqs.cos()[None, None], freqs.sin()[None, None]  # (1, 1, T, hd/2) each


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of the last dimension of x (B, H, T, hd) by position."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero whole samples of a residual branch x (B, T, C) with probability p, rescaling the rest."""
    if p == 0.0 or not training:
        return x
    keep = torch.rand(x.size(0), 1, 1, device=x.device) >= p  # (B, 1, 1)
    return x * keep.to(x.dtype) / (1.0 - p)


class CausalSelfAttention(nn.Module):
    """Grouped-query causal attention with q/k RMS norm, RoPE and a learned per-head query gain."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, qk_gain_init: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim)
        self.c_k = CastedLinear(dim, kv_dim)
        self.c_v = CastedLinear(dim, kv_dim)
        self.proj = CastedLinear(dim, dim)
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head q (B, H, T, hd), k and v (B, Hkv, T, hd) of x (B, T, C); q and k RMS-normalised."""
        B, T, _ = x.shape
        q = self.c_q(x).reshape(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.c_k(x).reshape(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(x).reshape(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return rms_norm(q), rms_norm(k), v

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: DocumentMask | None = None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self._qkv(x)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        y = self._attend(q, k, v, mask)  # (B, H, T, hd)
        y = y.transpose(1, 2).contiguous().reshape(B, T, C)
        return self.proj(y)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: DocumentMask | None) -> Tensor:
        """Causal attention, within documents when the model masks them (model/doc_mask.py)."""
        if mask is not None:
            return mask.attend(q, k, v)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.num_kv_heads != self.num_heads)


class MLP(nn.Module):
    """relu^2 MLP."""

    def __init__(self, dim: int, mlp_mult: int) -> None:
        super().__init__()
        self.fc = CastedLinear(dim, mlp_mult * dim)
        self.proj = CastedLinear(mlp_mult * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


class Block(nn.Module):
    """Residual mix with x0, then attention and MLP branches with per-channel output scales."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        mlp_mult: int,
        qk_gain_init: float,
        layer_index: int,
        ln_scale: str,
        dropout: float,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(dim, num_heads, num_kv_heads, qk_gain_init)
        self.mlp = MLP(dim, mlp_mult)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())
        # Shape (1,) rather than a 0-d scalar so row-wise export code can treat it like any vector.
        ln_init = torch.full((1,), 1.0 / math.sqrt(layer_index + 1))
        if ln_scale == "learned":
            self.ln_scale = nn.Parameter(ln_init)
        elif ln_scale == "fixed":
            self.register_buffer("ln_scale", ln_init, persistent=False)
        else:
            self.ln_scale = None
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate

    def _norm(self, x: Tensor) -> Tensor:
        x = rms_norm(x)
        return x if self.ln_scale is None else x * self.ln_scale.to(x.dtype)

    def _add_branch(self, x: Tensor, y: Tensor, scale: Tensor) -> Tensor:
        """x + scale * y with dropout and drop path on y; scale in x's dtype, as the reference."""
        y = F.dropout(y, self.dropout, self.training) if self.dropout > 0.0 else y
        return x + drop_path(scale.to(x.dtype)[None, None, :] * y, self.drop_path_rate, self.training)

    def forward(self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor, mask: DocumentMask | None = None) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        x = self._add_branch(x, self.attn(self._norm(x), cos, sin, mask), self.attn_scale)
        x = self._add_branch(x, self.mlp(self._norm(x)), self.mlp_scale)
        return x


class GPT(nn.Module):
    """The baseline GPT; `forward(input_ids (B, T)) -> logits (B, T, V)` in float32, after the softcap."""

    def __init__(
        self,
        vocab_size: int = 1024,
        num_layers: int = 9,
        model_dim: int = 512,
        num_heads: int = 8,
        num_kv_heads: int = 4,
        mlp_mult: int = 2,
        tie_embeddings: bool = True,
        tied_embed_init_std: float = 0.005,
        rope_base: float = 10000.0,
        qk_gain_init: float = 1.5,
        logit_softcap: float = 30.0,
        ln_scale: str = "none",
        dropout: float = 0.0,
        drop_path: float = 0.0,
        doc_mask: bool = False,
    ) -> None:
        super().__init__()
        self.config = dict(
            vocab_size=vocab_size, num_layers=num_layers, model_dim=model_dim, num_heads=num_heads,
            num_kv_heads=num_kv_heads, mlp_mult=mlp_mult, tie_embeddings=tie_embeddings,
            tied_embed_init_std=tied_embed_init_std, rope_base=rope_base, qk_gain_init=qk_gain_init,
            logit_softcap=logit_softcap, ln_scale=ln_scale, dropout=dropout, drop_path=drop_path,
        )
        if doc_mask:  # only then: configs (and artifacts) of unmasked models stay as they were
            self.config["doc_mask"] = True
        self.doc_mask = doc_mask
        _check_config(self.config)
        self.tie_embeddings = tie_embeddings
        self.logit_softcap = logit_softcap
        # Module creation order follows the reference, so a seed draws the same initial weights.
        self.tok_emb = nn.Embedding(vocab_size, model_dim)
        self.num_encoder_layers = num_layers // 2
        self.num_decoder_layers = num_layers - self.num_encoder_layers
        num_skips = self._num_skips()
        self.skip_weights = nn.Parameter(torch.ones(num_skips, model_dim, dtype=torch.float32))
        self.blocks = nn.ModuleList(
            self._block(
                model_dim, num_heads, num_kv_heads, mlp_mult, qk_gain_init,
                layer_index=i, ln_scale=ln_scale, dropout=dropout,
                drop_path_rate=drop_path * i / (num_layers - 1) if num_layers > 1 else drop_path,
            )
            for i in range(num_layers)
        )
        self.rotary = Rotary(model_dim // num_heads, rope_base)
        self.lm_head = None if tie_embeddings else CastedLinear(model_dim, vocab_size)
        self.head_adapter: Callable[[Tensor], Tensor] | None = None
        """Added to the logits before the softcap, from the final hidden state: test-time training's head adapter
        (pgolf/ttt/adapters.py); a plain function, not a module, so it is never in the state dict."""
        self._init_weights(tied_embed_init_std)

    def _num_skips(self) -> int:
        """U-Net skip connections: one per encoder block that has a decoder block to feed."""
        return min(self.num_encoder_layers, self.num_decoder_layers)

    def _block(self, *args, **kwargs) -> Block:
        return Block(*args, **kwargs)

    def _init_weights(self, tied_embed_init_std: float) -> None:
        if self.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=tied_embed_init_std)
        else:
            nn.init.zeros_(self.lm_head.weight)
        for block in self.blocks:
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.mlp.proj.weight)

    def forward(self, input_ids: Tensor) -> Tensor:
        x = rms_norm(self.tok_emb(input_ids))  # (B, T, C)
        x0 = x
        cos, sin = self.rotary(input_ids.size(1))
        mask = self.document_mask(input_ids)
        skips: list[Tensor] = []
        for block in self.blocks[: self.num_encoder_layers]:
            x = block(x, x0, cos, sin, mask)
            skips.append(x)
        for i, block in enumerate(self.blocks[self.num_encoder_layers :]):
            if skips:
                x = x + self.skip_weights[i].to(x.dtype)[None, None, :] * skips.pop()
            x = block(x, x0, cos, sin, mask)
        return self._logits(rms_norm(x))

    def document_mask(self, input_ids: Tensor) -> DocumentMask | None:
        """The attention mask of `model.doc_mask` for this batch (None: plain causal attention)."""
        if not self.doc_mask:
            return None
        from pgolf.model.doc_mask import DocumentMask  # imported only then: a packed script carries it only then

        return DocumentMask(input_ids)

    def _logits(self, x: Tensor) -> Tensor:
        """The (tied or untied) head on the final normed hidden state, softcapped, in float32."""
        if self.lm_head is None:
            logits = F.linear(x, self.tok_emb.weight.to(x.dtype))  # (B, T, V)
        else:
            logits = self.lm_head(x)  # (B, T, V)
        if self.head_adapter is not None:
            logits = logits + self.head_adapter(x)
        if self.logit_softcap > 0.0:
            logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
        return logits.float()


def _check_config(cfg: dict) -> None:
    """Raise ValueError naming every inconsistent constructor argument, in one line."""
    problems = []
    for name in ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult"):
        if cfg[name] < 1:
            problems.append(f"{name} must be >= 1, got {cfg[name]}")
    if not problems:
        if cfg["model_dim"] % cfg["num_heads"]:
            problems.append(f"model_dim {cfg['model_dim']} must be divisible by num_heads {cfg['num_heads']}")
        elif (cfg["model_dim"] // cfg["num_heads"]) % 2:
            problems.append(f"head dim model_dim/num_heads = {cfg['model_dim'] // cfg['num_heads']} must be even")
        if cfg["num_heads"] % cfg["num_kv_heads"]:
            problems.append(f"num_heads {cfg['num_heads']} must be divisible by num_kv_heads {cfg['num_kv_heads']}")
    if cfg["logit_softcap"] < 0.0:
        problems.append(f"logit_softcap must be >= 0 (0 = off), got {cfg['logit_softcap']}")
    if cfg["ln_scale"] not in LN_SCALE_MODES:
        problems.append(f"ln_scale must be one of {', '.join(LN_SCALE_MODES)}, got {cfg['ln_scale']!r}")
    for name in ("dropout", "drop_path"):
        if not 0.0 <= cfg[name] < 1.0:
            problems.append(f"{name} must be in [0, 1), got {cfg[name]}")
    if problems:
        raise ValueError("; ".join(problems))


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile
_MAX_LISTED = 8


def strip_wrapper_prefixes(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop leading `module.` (DDP) and `_orig_mod.` (torch.compile) from every key, in any nesting."""
    out = {}
    for key, value in state_dict.items():
        name = key
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        out[name] = value
    return out


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def load_reference_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Load a state dict strictly (wrapper prefixes stripped); dtypes are converted to the model's.

    Raises ValueError with one line naming missing and unexpected keys and shape mismatches.
    """
    incoming = strip_wrapper_prefixes(state_dict)
    expected = model.state_dict()
    not_tensors = sorted(k for k, v in incoming.items() if not isinstance(v, Tensor))
    missing = sorted(expected.keys() - incoming.keys())
    unexpected = sorted(incoming.keys() - expected.keys())
    mismatched = sorted(
        f"{k} {tuple(incoming[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected.keys() & incoming.keys()
        if isinstance(incoming[k], Tensor) and incoming[k].shape != expected[k].shape
    )
    problems = [
        f"{label}: {_listed(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
            ("non-tensor values", not_tensors),
        )
        if items
    ]
    if problems:
        raise ValueError("state dict does not fit the model: " + "; ".join(problems))
    model.load_state_dict(incoming, strict=True)

"""The record-era architecture as knobs on the baseline GPT (the 2026-04-27 record, docs/records_model.md).

`RecordsGPT` is the baseline `GPT` plus, each off at its default (gpt.RECORD_KNOBS):
- `mlp_leaky_slope`: MLP activation LeakyReLU(slope)^2 instead of relu^2.
- `rope_dims`: partial RoPE, only the first `rope_dims` dims of each head rotate (half-split pairs, inverse
  frequencies over `rope_dims`, as the record); the rest pass through.
- `xsa_layers`: XSA; each head's attention output loses its component along the token's own (raw) value
  vector: y <- y - (y . u) u, u = v / |v|.
- `recur_passes` > 1: depth recurrence; layers `recur_start..recur_end` run `recur_passes` times in a row once
  `looping` is on (the loop turns it on at training fraction `recur_from`; a built model, for evaluation, loops).
  No parameter is duplicated. The U-Net skips follow the looped layer sequence: its first half pushes, its
  second half pops, so there are min(encoder, decoder) skip rows of the *looped* sequence, and before the
  switch the unlooped sequence uses the first rows it needs (the record's rule; the rest wait for the switch).
- `parallel_from` > 0: from that layer on, two residual lanes. Attention reads lane 0 (mixed with x0), the MLP
  reads lane 1, and each lane becomes resid_lambda * lane + post_lambdas-weighted attention and MLP outputs;
  the output is the lanes' mean. `parallel_resid_lambdas` (L, 2), init 1.1, and `parallel_post_lambdas`
  (L, 2, 2) (branch, lane), init 1, are allocated for every layer as the record does.
- `skip_gates`: gated skips, x <- g x + (1 - g) w s with g = sigmoid(`skip_gates`), gates init 0.
- `smear_gate`: e_t <- e_t + lambda sigmoid(w . e_t[:12]) e_{t-1} on the raw embedding, zero where token t is
  BOS (id 1), so no document sees the one before it; `smear_gate.weight` (1, 12) and `smear_lambda` (1,), init 0.
- `attn_gate`: the record's sparse attention-output gate; each head's output times
  sigmoid(0.5 * W_h . n[:12]) with n the attention's normed input; `attn.attn_gate_w` (H, 12), init 0.
Parameter names follow the record's, so its parameter count is met exactly (tests/model/test_records.py).
Not carried over: the record's orthogonal init, document-masked attention and bf16 embedding storage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.gpt import GPT, MLP, Block, CausalSelfAttention, Rotary, apply_rotary, rms_norm
from pgolf.model.knobs import BOS_ID, GATE_WINDOW, knob_problems

if TYPE_CHECKING:
    from pgolf.model.doc_mask import DocumentMask

ATTN_GATE_SCALE = 0.5


def rotate_partial(x: Tensor, cos: Tensor, sin: Tensor, dims: int) -> Tensor:
    """RoPE on the first `dims` of the last dimension of x (B, H, T, hd); cos/sin have dims/2 frequencies."""
    return torch.cat((apply_rotary(x[..., :dims], cos, sin), x[..., dims:]), dim=-1)


def exclude_own_value(y: Tensor, v: Tensor) -> Tensor:
    """XSA: each head's output y (B, H, T, hd) minus its projection on its token's own value v (B, Hkv, T, hd)."""
    u = F.normalize(v.repeat_interleave(y.size(1) // v.size(1), dim=1), dim=-1)  # (B, H, T, hd)
    return y - (y * u).sum(-1, keepdim=True) * u


class RecordsAttention(CausalSelfAttention):
    """Attention with partial RoPE, optional XSA and an optional sparse head-output gate."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, qk_gain_init: float, rope_dims: int,
                 xsa: bool, gate: bool) -> None:
        super().__init__(dim, num_heads, num_kv_heads, qk_gain_init)
        self.rope_dims, self.xsa = rope_dims, xsa
        self.attn_gate_w = nn.Parameter(torch.zeros(num_heads, GATE_WINDOW)) if gate else None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: DocumentMask | None = None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self._qkv(x)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = rotate_partial(q, cos, sin, self.rope_dims), rotate_partial(k, cos, sin, self.rope_dims)
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        y = self._attend(q, k, v, mask)
        if self.xsa:
            y = exclude_own_value(y, v)
        if self.attn_gate_w is not None:
            gate = torch.sigmoid(ATTN_GATE_SCALE * F.linear(x[..., :GATE_WINDOW], self.attn_gate_w.to(x.dtype)))
            y = y * gate.transpose(1, 2)[..., None]  # (B, T, H) -> (B, H, T, 1)
        return self.proj(y.transpose(1, 2).contiguous().reshape(B, T, C))


class LeakyMLP(MLP):
    """LeakyReLU(slope)^2 MLP."""

    def __init__(self, dim: int, mlp_mult: int, slope: float) -> None:
        super().__init__(dim, mlp_mult)
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.leaky_relu(self.fc(x), self.slope).square())


class RecordsBlock(Block):
    """A baseline block with the record's attention and MLP, and a two-lane form."""

    def __init__(self, *args, rope_dims: int, xsa: bool, attn_gate: bool, slope: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        dim, num_heads, num_kv_heads, mlp_mult, qk_gain_init = args[:5]
        self.attn = RecordsAttention(dim, num_heads, num_kv_heads, qk_gain_init, rope_dims, xsa, attn_gate)
        if slope:
            self.mlp = LeakyMLP(dim, mlp_mult, slope)

    def forward_lanes(self, lanes: tuple[Tensor, Tensor], x0: Tensor, cos: Tensor, sin: Tensor, resid: Tensor,
                      post: Tensor, mask: DocumentMask | None = None) -> tuple[Tensor, Tensor]:
        """Attention on lane 0 (mixed with x0), the MLP on lane 1; resid (2,) and post (2 branches, 2 lanes).

        `reg.dropout` and `reg.drop_path` act on sequential blocks only, not on the lanes.
        """
        mix = self.resid_mix.to(x0.dtype)
        inp = mix[0][None, None, :] * lanes[0] + mix[1][None, None, :] * x0
        a = self.attn_scale.to(x0.dtype)[None, None, :] * self.attn(self._norm(inp), cos, sin, mask)
        m = self.mlp_scale.to(x0.dtype)[None, None, :] * self.mlp(self._norm(lanes[1]))
        resid, post = resid.to(x0.dtype), post.to(x0.dtype)
        return tuple(resid[j] * lanes[j] + post[0, j] * a + post[1, j] * m for j in range(2))


class RecordsGPT(GPT):
    """The GPT with the record-era knobs (module docstring); `forward(input_ids) -> logits` as GPT's."""

    def __init__(self, *, mlp_leaky_slope: float, rope_dims: int, xsa_layers: list[int], recur_start: int,
                 recur_end: int, recur_passes: int, recur_from: float, parallel_from: int, skip_gates: bool,
                 smear_gate: bool, attn_gate: bool, **base) -> None:
        knobs = dict(mlp_leaky_slope=mlp_leaky_slope, rope_dims=rope_dims, xsa_layers=sorted(xsa_layers),
                     recur_start=recur_start, recur_end=recur_end, recur_passes=recur_passes,
                     recur_from=recur_from, parallel_from=parallel_from, skip_gates=skip_gates,
                     smear_gate=smear_gate, attn_gate=attn_gate)
        self._knobs = knobs
        self.looping = recur_passes > 1
        """Whether the looped layers repeat (the loop switches it at `recur_from`; a built model loops)."""
        super().__init__(**base)
        problems = knob_problems(knobs, self.config["num_layers"], self.config["model_dim"], self.config["num_heads"])
        if problems:
            raise ValueError("; ".join(problems))
        self.config.update(knobs)
        L, D = self.config["num_layers"], self.config["model_dim"]
        self.rotary = Rotary(rope_dims or D // self.config["num_heads"], self.config["rope_base"])
        self.skip_gates = nn.Parameter(torch.zeros(self.skip_weights.shape)) if skip_gates else None
        if parallel_from:
            self.parallel_post_lambdas = nn.Parameter(torch.ones(L, 2, 2))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((L, 2), 1.1))
        if smear_gate:
            self.smear_gate = nn.Linear(GATE_WINDOW, 1, bias=False)
            nn.init.zeros_(self.smear_gate.weight)
            self.smear_lambda = nn.Parameter(torch.zeros(1))

    def _block(self, *args, layer_index: int, **kwargs) -> Block:
        k = self._knobs
        head_dim = args[0] // args[1]
        return RecordsBlock(*args, layer_index=layer_index, rope_dims=k["rope_dims"] or head_dim,
                            xsa=layer_index in k["xsa_layers"], attn_gate=k["attn_gate"], slope=k["mlp_leaky_slope"],
                            **kwargs)

    def _num_skips(self) -> int:
        order = self.layer_order(looping=self._knobs["recur_passes"] > 1)
        return min(len(order) // 2, len(order) - len(order) // 2)

    def layer_order(self, looping: bool | None = None) -> list[int]:
        """The blocks in the order they run: the looped range repeated `recur_passes` times when looping."""
        k, n = self._knobs, self.num_encoder_layers + self.num_decoder_layers
        if k["recur_passes"] <= 1 or not (self.looping if looping is None else looping):
            return list(range(n))
        loop = list(range(k["recur_start"], k["recur_end"] + 1))
        return list(range(k["recur_start"])) + loop * k["recur_passes"] + list(range(k["recur_end"] + 1, n))

    def set_looping(self, on: bool) -> None:
        self.looping = on

    def _smear(self, e: Tensor, input_ids: Tensor) -> Tensor:
        gate = torch.sigmoid(self.smear_gate(e[..., :GATE_WINDOW].float())).to(e.dtype)  # (B, T, 1)
        keep = (input_ids[:, 1:] != BOS_ID).to(e.dtype)[..., None]  # (B, T-1, 1)
        smeared = e[:, 1:] + self.smear_lambda.to(e.dtype) * gate[:, 1:] * e[:, :-1] * keep
        return torch.cat((e[:, :1], smeared), dim=1)

    def _add_skip(self, x: Tensor, row: int, skip: Tensor) -> Tensor:
        w = self.skip_weights[row].to(x.dtype)[None, None, :]
        if self.skip_gates is None:
            return x + w * skip
        g = torch.sigmoid(self.skip_gates[row].to(x.dtype))[None, None, :]
        return g * x + (1 - g) * w * skip

    def forward(self, input_ids: Tensor) -> Tensor:
        e = self.tok_emb(input_ids)  # (B, T, C)
        if self._knobs["smear_gate"]:
            e = self._smear(e, input_ids)
        x = x0 = rms_norm(e)
        cos, sin = self.rotary(input_ids.size(1))
        mask = self.document_mask(input_ids)
        order = self.layer_order()
        encoder, decoder = order[: len(order) // 2], order[len(order) // 2:]
        skips: list[Tensor] = []
        for i in encoder:
            x = self.blocks[i](x, x0, cos, sin, mask)
            skips.append(x)
        lanes = None
        start = self._knobs["parallel_from"]
        for row, i in enumerate(decoder):
            if start and i >= start and lanes is None:
                lanes = (x, x)
            if skips and row < len(self.skip_weights):
                skip = skips.pop()
                if lanes is None:
                    x = self._add_skip(x, row, skip)
                else:
                    lanes = (self._add_skip(lanes[0], row, skip), lanes[1])
            if lanes is None:
                x = self.blocks[i](x, x0, cos, sin, mask)
            else:
                lanes = self.blocks[i].forward_lanes(lanes, x0, cos, sin, self.parallel_resid_lambdas[i],
                                                     self.parallel_post_lambdas[i], mask)
        if lanes is not None:
            x = 0.5 * (lanes[0] + lanes[1])
        return self._logits(rms_norm(x))

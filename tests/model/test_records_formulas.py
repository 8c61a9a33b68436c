"""The record-era formulas (docs/records_model.md, section 1), not only the code paths.

Every expected value is written out here with plain torch ops from the model's parameters, with the record's
constants as literals (gate window 12, attention-gate scale 0.5, BOS id 1), and every gate and mix is set
non-zero first: at their zero init the gates are 0.5 everywhere and the lambdas are 0, which hides a wrong
channel, a swapped g / 1-g or a wrong scale.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from pgolf.config import compose
from pgolf.model.build import make_gpt
from pgolf.model.records import rotate_partial
from pgolf.train.optim import build_optimizers
from pgolf.train.regularizers import decay_for, param_groups

WINDOW = 12  # GATE_WINDOW: input channels of the smear and attention-output gates
GATE_SCALE = 0.5  # SPARSE_ATTN_GATE_SCALE
BOS = 1
BASE = 10000.0
BASE_CFG = dict(vocab_size=64, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2,
                ln_scale="fixed")
"""Head dim 16, two query heads per KV head; ln_scale fixed, so each layer's s_i = 1/sqrt(i+1) differs."""
ALL_KNOBS = dict(mlp_leaky_slope=0.5, rope_dims=8, xsa_layers=[0, 2], recur_start=1, recur_end=1, recur_passes=2,
                 parallel_from=2, skip_gates=True, smear_gate=True, attn_gate=True)
"""Layer order [0, 1, 1, 2, 3]: encoder [0, 1], decoder [1, 2, 3], 2 skip rows, lanes from layer 2."""
TOL = dict(atol=2e-5, rtol=1e-4)


def build(**knobs):
    torch.manual_seed(0)
    return make_gpt(**BASE_CFG, **knobs).eval()


@torch.no_grad()
def randomize(model: torch.nn.Module) -> None:
    """Non-zero values everywhere, then each gate and mix set explicitly to distinct non-zero values."""
    gen = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.add_(0.3 * torch.randn(p.shape, generator=gen))
    for block in model.blocks:
        if getattr(block.attn, "attn_gate_w", None) is not None:
            block.attn.attn_gate_w.copy_(1.5 * torch.randn(block.attn.attn_gate_w.shape, generator=gen))
    if getattr(model, "skip_gates", None) is not None:
        model.skip_gates.copy_(2.0 * torch.randn(model.skip_gates.shape, generator=gen))
    if hasattr(model, "parallel_post_lambdas"):
        model.parallel_post_lambdas.copy_(1.0 + 0.6 * torch.randn(model.parallel_post_lambdas.shape, generator=gen))
        model.parallel_resid_lambdas.copy_(1.1 + 0.6 * torch.randn(model.parallel_resid_lambdas.shape, generator=gen))
    if hasattr(model, "smear_lambda"):
        model.smear_gate.weight.copy_(1.5 * torch.randn(model.smear_gate.weight.shape, generator=gen))
        model.smear_lambda.fill_(0.8)


# --------------------------------------------------------------------------- the record's formulas, written out


def rms(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)


def rope_ref(x, rope_dims):
    """Rotate dims j and j + rope_dims/2 (j < rope_dims/2) by t * 10000^(-2j/rope_dims); the rest pass through."""
    half = rope_dims // 2
    inv = BASE ** (-2.0 * torch.arange(half, dtype=torch.float64) / rope_dims)
    theta = torch.arange(x.size(2), dtype=torch.float64)[:, None] * inv[None, :]  # (T, half)
    cos, sin = theta.cos().to(x.dtype), theta.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:rope_dims]
    return torch.cat((a * cos + b * sin, -a * sin + b * cos, x[..., rope_dims:]), dim=-1)


def attn_ref(attn, n, rope_dims, xsa, gate):
    """The record's attention on its (normed, LN-scaled) input n (B, T, C)."""
    B, T, C = n.shape
    H, Hkv = attn.num_heads, attn.num_kv_heads
    hd = C // H
    q = (n @ attn.c_q.weight.T).reshape(B, T, H, hd).transpose(1, 2)
    k = (n @ attn.c_k.weight.T).reshape(B, T, Hkv, hd).transpose(1, 2)
    v = (n @ attn.c_v.weight.T).reshape(B, T, Hkv, hd).transpose(1, 2)
    q, k = rope_ref(rms(q), rope_dims), rope_ref(rms(k), rope_dims)
    q = q * attn.q_gain[None, :, None, None]
    group = torch.arange(H) // (H // Hkv)  # query head h reads KV head h // (H / Hkv)
    k, v = k[:, group], v[:, group]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = scores.softmax(-1) @ v  # (B, H, T, hd)
    if xsa:
        u = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        y = y - (y * u).sum(-1, keepdim=True) * u
    if gate:
        g = torch.sigmoid(GATE_SCALE * (n[..., :WINDOW] @ attn.attn_gate_w.T))  # (B, T, H)
        y = y * g.transpose(1, 2)[..., None]
    return y.transpose(1, 2).reshape(B, T, C) @ attn.proj.weight.T


def mlp_ref(mlp, n, slope):
    h = n @ mlp.fc.weight.T
    return torch.where(h > 0, h, slope * h).square() @ mlp.proj.weight.T


def ln(i):
    return 1.0 / math.sqrt(i + 1)


def block_ref(block, i, x, x0, k):
    x = block.resid_mix[0] * x + block.resid_mix[1] * x0
    x = x + block.attn_scale * attn_ref(block.attn, rms(x) * ln(i), k["rope_dims"], i in k["xsa_layers"],
                                        k["attn_gate"])
    return x + block.mlp_scale * mlp_ref(block.mlp, rms(x) * ln(i), k["mlp_leaky_slope"])


def lanes_ref(block, i, lane0, lane1, x0, R, P, k):
    """Attention on resid_mix(lane0, x0), the MLP on lane1 alone; lane_j <- R_j lane_j + P_aj a + P_mj m."""
    inp = block.resid_mix[0] * lane0 + block.resid_mix[1] * x0
    a = block.attn_scale * attn_ref(block.attn, rms(inp) * ln(i), k["rope_dims"], i in k["xsa_layers"],
                                    k["attn_gate"])
    m = block.mlp_scale * mlp_ref(block.mlp, rms(lane1) * ln(i), k["mlp_leaky_slope"])
    return R[0] * lane0 + P[0, 0] * a + P[1, 0] * m, R[1] * lane1 + P[0, 1] * a + P[1, 1] * m


def skip_ref(model, x, row, s):
    g = torch.sigmoid(model.skip_gates[row])
    return g * x + (1 - g) * model.skip_weights[row] * s


def smear_ref(model, e, ids):
    """e_t + lambda sigmoid(w . e_t[:12]) e_{t-1} [ids_t != BOS] for t >= 1; e_0 unchanged."""
    out = e.clone()
    w, lam = model.smear_gate.weight[0], model.smear_lambda[0]
    for t in range(1, e.size(1)):
        g = torch.sigmoid(e[:, t, :WINDOW] @ w)  # (B,): token t's own channels
        keep = (ids[:, t] != BOS).to(e.dtype)
        out[:, t] = e[:, t] + (lam * g * keep)[:, None] * e[:, t - 1]
    return out


def forward_ref(model, ids, k):
    L = BASE_CFG["num_layers"]
    E = model.tok_emb.weight
    e = smear_ref(model, E[ids], ids)
    x = x0 = rms(e)
    s, t = k["recur_start"], k["recur_end"]
    order = list(range(s)) + list(range(s, t + 1)) * k["recur_passes"] + list(range(t + 1, L))
    enc, dec = order[: len(order) // 2], order[len(order) // 2:]
    rows = min(len(enc), len(dec))
    assert model.skip_weights.shape[0] == rows == model.skip_gates.shape[0]
    stack = []
    for i in enc:
        x = block_ref(model.blocks[i], i, x, x0, k)
        stack.append(x)
    lanes = None
    for row, i in enumerate(dec):
        if i >= k["parallel_from"] and lanes is None:
            lanes = [x, x]
        if stack and row < rows:
            if lanes is None:
                x = skip_ref(model, x, row, stack.pop())
            else:
                lanes[0] = skip_ref(model, lanes[0], row, stack.pop())
        if lanes is None:
            x = block_ref(model.blocks[i], i, x, x0, k)
        else:
            lanes = list(lanes_ref(model.blocks[i], i, *lanes, x0, model.parallel_resid_lambdas[i],
                                   model.parallel_post_lambdas[i], k))
    h = rms(0.5 * (lanes[0] + lanes[1]))
    return 30.0 * torch.tanh((h @ E.T) / 30.0)


def ids_with_bos(T=12):
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(2, 64, (2, T), generator=gen)
    ids[0, 5] = ids[1, 0] = ids[1, 7] = BOS
    return ids


# --------------------------------------------------------------------------- tests


@torch.no_grad()
def test_whole_forward_matches_the_records_formulas_with_every_knob_on():
    model = build(**ALL_KNOBS)
    randomize(model)
    ids = ids_with_bos()
    assert model.layer_order() == [0, 1, 1, 2, 3]
    torch.testing.assert_close(model(ids), forward_ref(model, ids, ALL_KNOBS), **TOL)


@torch.no_grad()
def test_parallel_block_attention_reads_lane0_with_x0_and_the_mlp_reads_lane1():
    model = build(**ALL_KNOBS)
    randomize(model)
    gen = torch.Generator().manual_seed(3)
    lane0, lane1, x0 = (torch.randn(2, 10, 64, generator=gen) for _ in range(3))
    block, i = model.blocks[3], 3
    R, P = model.parallel_resid_lambdas[i], model.parallel_post_lambdas[i]
    assert len({float(v) for v in P.flatten()}) == 4 and float(R[0]) != float(R[1])  # lanes and branches distinct
    cos, sin = model.rotary(10)
    got = block.forward_lanes((lane0, lane1), x0, cos, sin, R, P)
    want = lanes_ref(block, i, lane0, lane1, x0, R, P, ALL_KNOBS)
    torch.testing.assert_close(got[0], want[0], **TOL)
    torch.testing.assert_close(got[1], want[1], **TOL)


@torch.no_grad()
def test_skip_gates_lerp_stream_and_weighted_skip_by_their_own_row():
    model = build(**ALL_KNOBS)
    randomize(model)
    gen = torch.Generator().manual_seed(4)
    x, s = torch.randn(2, 6, 64, generator=gen), torch.randn(2, 6, 64, generator=gen)
    assert (model.skip_gates[0] - model.skip_gates[1]).abs().min() > 0  # rows differ, none is 0.5 everywhere
    for row in range(model.skip_gates.shape[0]):
        g = 1.0 / (1.0 + torch.exp(-model.skip_gates[row]))
        want = g * x + (1.0 - g) * model.skip_weights[row] * s
        torch.testing.assert_close(model._add_skip(x, row, s), want, **TOL)


@torch.no_grad()
def test_attention_gate_is_sigmoid_of_half_the_first_12_normed_input_channels_per_head():
    model = build(**ALL_KNOBS)
    randomize(model)
    gen = torch.Generator().manual_seed(5)
    n = rms(torch.randn(2, 10, 64, generator=gen)) * ln(2)
    n[..., WINDOW:] *= 3.0  # channels past the window differ in scale from the first 12
    attn = model.blocks[2].attn  # an XSA layer: the gate commutes with XSA, but both are on here
    cos, sin = model.rotary(10)
    torch.testing.assert_close(attn(n, cos, sin), attn_ref(attn, n, 8, xsa=True, gate=True), **TOL)
    # In the block the gate reads the attention's own input: the normed, LN-scaled (s_2 = 1/sqrt(3)) stream.
    x, x0 = torch.randn(2, 10, 64, generator=gen), torch.randn(2, 10, 64, generator=gen)
    torch.testing.assert_close(model.blocks[2](x, x0, cos, sin), block_ref(model.blocks[2], 2, x, x0, ALL_KNOBS),
                               **TOL)


@torch.no_grad()
def test_smear_gate_reads_token_ts_own_first_12_channels_and_skips_bos():
    model = build(**ALL_KNOBS)
    randomize(model)
    ids = ids_with_bos()
    e = model.tok_emb(ids)
    gate_t = torch.sigmoid(e[..., :WINDOW] @ model.smear_gate.weight[0])
    assert (gate_t[:, 1:] - gate_t[:, :-1]).abs().max() > 0.2  # token t's gate differs from token t-1's
    got = model._smear(e, ids)
    torch.testing.assert_close(got, smear_ref(model, e, ids), **TOL)
    assert torch.equal(got[0, 5], e[0, 5]) and torch.equal(got[1, 7], e[1, 7])  # BOS receives nothing


def test_partial_rope_in_the_built_model_uses_frequencies_over_rope_dims():
    model = build(rope_dims=8)  # head dim 16: dims 0..7 rotate (pairs j, j+4), 8..15 pass through
    want = 1.0 / BASE ** (torch.tensor([0.0, 2.0, 4.0, 6.0]) / 8)  # 1, 0.1, 0.01, 0.001
    torch.testing.assert_close(model.rotary.inv_freq, want)
    randomize(model)
    attn, T = model.blocks[1].attn, 12
    gen = torch.Generator().manual_seed(6)
    n = rms(torch.randn(2, T, 64, generator=gen))
    cos, sin = model.rotary(T)
    with torch.no_grad():
        torch.testing.assert_close(attn(n, cos, sin), attn_ref(attn, n, 8, xsa=False, gate=False), **TOL)
        # q and k themselves: per-head normed, then rotated in their first 8 dims only.
        q, k, _ = attn._qkv(n)
        cos_m, sin_m = cos.to(q.dtype), sin.to(q.dtype)
        torch.testing.assert_close(rotate_partial(q, cos_m, sin_m, attn.rope_dims), rope_ref(q, 8), **TOL)
        torch.testing.assert_close(rotate_partial(k, cos_m, sin_m, attn.rope_dims), rope_ref(k, 8), **TOL)


GATE_AND_MIX = ("attn_gate_w", "skip_gates", "parallel_post_lambdas", "parallel_resid_lambdas", "smear_gate.weight",
                "smear_lambda")


def test_gates_and_mixes_sit_in_adams_group_and_in_no_decay():
    model = build(**ALL_KNOBS)
    cfg = compose([])
    reg = dataclasses.replace(cfg.reg, weight_decay=0.1, embed_weight_decay=0.1, scalar_weight_decay=0.1)
    named = list(model.named_parameters())
    gates = [(n, p) for n, p in named if "gate" in n or "lambda" in n]
    assert len(gates) == BASE_CFG["num_layers"] + 5, [n for n, _ in gates]  # 4 attn gates, skip, 2 lanes, 2 smear
    groups = param_groups(named, reg)
    role = {n: g for g, members in groups.items() for n, _ in members}
    for name, _ in gates:
        assert role[name] == "scalar", (name, role[name])
        assert any(fragment in name for fragment in cfg.reg.no_decay), name
        assert decay_for(name, role[name], reg) == 0.0, name
    opts = build_optimizers(groups, cfg.train, tied=True)
    adam_ids = {id(p) for group in opts.adam.param_groups for p in group["params"]}
    muon_ids = {id(p) for group in opts.muon.param_groups for p in group["params"]}
    for name, p in gates:
        assert id(p) in adam_ids and id(p) not in muon_ids, name
    assert all(any(n.endswith(f) for f in GATE_AND_MIX) for n, _ in gates), [n for n, _ in gates]  # record names

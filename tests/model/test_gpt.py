"""Tests for pgolf/model/gpt.py: reference-compatible keys, loading, and the forward pass's properties."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from pgolf.model.gpt import GPT, Rotary, apply_rotary, count_params, drop_path, load_reference_state_dict

TINY = dict(vocab_size=64, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(**{**TINY, **overrides})


def perturb(model: GPT, std: float = 0.1, seed: int = 1) -> GPT:
    """Add noise to every parameter so the zero-initialised branches do something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return model


def tokens(batch: int = 2, seq_len: int = 16, vocab: int = 64, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def reference_keys(num_layers: int, tied: bool) -> set[str]:
    keys = {"tok_emb.weight", "skip_weights"} | ({"lm_head.weight"} if not tied else set())
    for i in range(num_layers):
        keys |= {f"blocks.{i}.attn.{name}.weight" for name in ("c_q", "c_k", "c_v", "proj")}
        keys |= {f"blocks.{i}.mlp.{name}.weight" for name in ("fc", "proj")}
        keys |= {f"blocks.{i}.attn.q_gain", f"blocks.{i}.attn_scale", f"blocks.{i}.mlp_scale", f"blocks.{i}.resid_mix"}
    return keys


def test_constructor_signature_matches_the_config_contract():
    defaults = {name: p.default for name, p in inspect.signature(GPT).parameters.items()}
    assert defaults == dict(
        vocab_size=1024, num_layers=9, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=2,
        tie_embeddings=True, tied_embed_init_std=0.005, rope_base=10000.0, qk_gain_init=1.5,
        logit_softcap=30.0, ln_scale="none", dropout=0.0, drop_path=0.0, doc_mask=False,
    )  # fmt: skip
    model = tiny(ln_scale="fixed", dropout=0.1)
    unmasked = {k: v for k, v in defaults.items() if k != "doc_mask"}  # doc_mask enters the config only when on
    assert model.config == {**unmasked, **TINY, "ln_scale": "fixed", "dropout": 0.1}
    rebuilt = GPT(**model.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_baseline_has_reference_param_count_and_keys():
    model = GPT()
    assert count_params(model) == 17_059_912
    assert set(model.state_dict()) == reference_keys(9, tied=True)
    assert model.skip_weights.shape == (4, 512)
    assert model.blocks[0].attn.c_k.weight.shape == (256, 512)
    assert model.blocks[0].mlp.fc.weight.shape == (1024, 512)


def test_untied_adds_a_zero_initialised_lm_head():
    model = tiny(tie_embeddings=False)
    assert set(model.state_dict()) == reference_keys(4, tied=False)
    assert model.lm_head.weight.shape == (64, 32)
    assert torch.count_nonzero(model.lm_head.weight) == 0
    assert count_params(model) == count_params(tiny()) + 64 * 32


def test_fresh_model_init():
    model = GPT()
    assert model.tok_emb.weight.std().item() == pytest.approx(0.005, rel=0.02)
    assert model.tok_emb.weight.mean().abs().item() < 1e-4
    for block in model.blocks:
        assert torch.count_nonzero(block.attn.proj.weight) == 0
        assert torch.count_nonzero(block.mlp.proj.weight) == 0
        assert torch.equal(block.resid_mix, torch.stack((torch.ones(512), torch.zeros(512))))
        assert torch.equal(block.attn.q_gain, torch.full((8,), 1.5))


def test_fresh_model_logits_come_from_the_embedding_alone():
    """Zero output projections make every block the identity, so only the embedding and U-Net skips act."""
    model = tiny(num_layers=5)
    ids = tokens()
    x0 = F.rms_norm(model.tok_emb.weight[ids], (32,))  # (B, T, C)
    final = 3.0 * x0  # identity blocks; two encoder outputs (both x0) added back by the decoder's skips
    expected = 30.0 * torch.tanh(F.rms_norm(final, (32,)) @ model.tok_emb.weight.T / 30.0)
    torch.testing.assert_close(model(ids), expected)


def test_forward_shape_and_dtype():
    logits = tiny()(tokens(batch=3, seq_len=10))
    assert logits.shape == (3, 10, 64)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize("ln_scale", ["none", "learned"])
def test_state_dict_round_trips_through_safetensors(tmp_path, ln_scale):
    model = perturb(tiny(ln_scale=ln_scale)).eval()
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    restored = GPT(**model.config).eval()
    load_reference_state_dict(restored, load_file(str(path)))
    ids = tokens()
    assert torch.equal(restored(ids), model(ids))


def test_reference_state_dict_loads_strictly_with_wrapper_prefixes_and_bf16_embedding():
    """The reference saves tok_emb in bf16 and may carry DDP/compile prefixes."""
    source = perturb(tiny(tie_embeddings=False), seed=5).eval()
    state = {f"module._orig_mod.{k}": v.clone() for k, v in source.state_dict().items()}
    state["module._orig_mod.tok_emb.weight"] = state["module._orig_mod.tok_emb.weight"].bfloat16()
    target = tiny(tie_embeddings=False).eval()
    load_reference_state_dict(target, state)
    assert target.tok_emb.weight.dtype == torch.float32
    torch.testing.assert_close(target.tok_emb.weight, source.tok_emb.weight.bfloat16().float())
    torch.testing.assert_close(target.blocks[1].attn.c_q.weight, source.blocks[1].attn.c_q.weight, rtol=0, atol=0)


def test_mismatched_state_dict_is_one_line_naming_every_problem():
    state = tiny().state_dict()
    del state["blocks.0.attn.q_gain"]
    state["blocks.0.extra"] = torch.zeros(1)
    state["skip_weights"] = torch.zeros(3, 32)
    with pytest.raises(ValueError) as info:
        load_reference_state_dict(tiny(), state)
    message = str(info.value)
    assert "\n" not in message
    assert "missing keys: blocks.0.attn.q_gain" in message
    assert "unexpected keys: blocks.0.extra" in message
    assert "skip_weights (3, 32) vs model (2, 32)" in message


def test_future_tokens_do_not_change_past_logits():
    model = perturb(tiny()).eval()
    ids = tokens(seq_len=12)
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 64
    before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_grouped_query_attention_equals_repeated_kv_heads():
    """Query head h reads kv head h // (num_heads / num_kv_heads)."""
    gqa = perturb(tiny(num_kv_heads=2)).eval()
    assert gqa.blocks[0].attn.c_k.weight.shape == (2 * 8, 32)
    assert gqa.blocks[0].attn.c_v.weight.shape == (2 * 8, 32)
    mha = tiny(num_kv_heads=4).eval()
    state = gqa.state_dict()
    for i in range(4):
        for name in ("c_k", "c_v"):
            key = f"blocks.{i}.attn.{name}.weight"
            state[key] = state[key].reshape(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32)
    load_reference_state_dict(mha, state)
    ids = tokens()
    torch.testing.assert_close(mha(ids), gqa(ids))


def test_softcap_bounds_logits():
    model = perturb(tiny(logit_softcap=5.0)).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(100.0)
    logits = model(tokens())
    assert logits.abs().max().item() <= 5.0
    assert logits.abs().max().item() > 4.9


def test_softcap_zero_leaves_logits_uncapped():
    model = perturb(tiny(logit_softcap=0.0)).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(100.0)
    assert model(tokens()).abs().max().item() > 100.0


def test_ln_scale_fixed_changes_outputs_without_a_state_dict_key():
    base = perturb(tiny()).eval()
    fixed = tiny(ln_scale="fixed").eval()
    load_reference_state_dict(fixed, base.state_dict())
    assert set(fixed.state_dict()) == set(base.state_dict())
    ids = tokens()
    assert not torch.allclose(fixed(ids), base(ids))


def test_ln_scale_learned_adds_keys_initialised_like_fixed():
    learned = perturb(tiny(ln_scale="learned")).eval()
    for i in range(4):
        assert learned.state_dict()[f"blocks.{i}.ln_scale"].shape == (1,)
    state = learned.state_dict()
    for i in range(4):
        state[f"blocks.{i}.ln_scale"] = torch.full((1,), 1.0 / math.sqrt(i + 1))
    learned.load_state_dict(state)
    fixed = tiny(ln_scale="fixed").eval()
    load_reference_state_dict(fixed, {k: v for k, v in state.items() if not k.endswith("ln_scale")})
    ids = tokens()
    torch.testing.assert_close(learned(ids), fixed(ids))
    assert set(tiny(ln_scale="learned").state_dict()) - set(tiny().state_dict()) == {
        f"blocks.{i}.ln_scale" for i in range(4)
    }


@pytest.mark.parametrize("reg", [{"dropout": 0.3}, {"drop_path": 0.5}])
def test_dropout_and_drop_path_act_in_training_only(reg):
    plain = perturb(tiny()).eval()
    regularized = tiny(**reg)
    load_reference_state_dict(regularized, plain.state_dict())
    ids = tokens(batch=8)
    regularized.train()
    assert not torch.equal(regularized(ids), regularized(ids))
    regularized.eval()
    assert torch.equal(regularized(ids), plain(ids))


def test_drop_path_rate_rises_linearly_to_the_last_block():
    model = tiny(num_layers=5, drop_path=0.2)
    assert [b.drop_path_rate for b in model.blocks] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_drop_path_zeroes_whole_samples_and_keeps_the_mean():
    torch.manual_seed(3)
    x = torch.ones(4000, 3, 5)
    y = drop_path(x, 0.25, training=True)
    per_sample = y.reshape(4000, -1)
    assert torch.all((per_sample == 0).all(dim=1) | (per_sample == 1 / 0.75).all(dim=1))
    assert y.mean().item() == pytest.approx(1.0, abs=0.05)
    assert torch.equal(drop_path(x, 0.25, training=False), x)


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = Rotary(head_dim=8, base=10000.0)(seq_len=20)
    gen = torch.Generator().manual_seed(4)
    q, k = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    rot_q = apply_rotary(q.expand(1, 1, 20, 8), cos, sin)[0, 0]  # (T, hd)
    rot_k = apply_rotary(k.expand(1, 1, 20, 8), cos, sin)[0, 0]
    scores = rot_q @ rot_k.T  # (T, T)
    for offset in (0, 3, 11):
        diagonal = torch.diagonal(scores, offset=offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), rtol=0, atol=1e-4)
    torch.testing.assert_close(rot_q.norm(dim=-1), q.norm().expand(20))


def test_bf16_autocast_forward_returns_float32_logits():
    model = perturb(tiny()).eval()
    ids = tokens()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, model(ids), rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"ln_scale": "sometimes"}, "ln_scale must be one of none, fixed, learned"),
        ({"num_heads": 3}, "model_dim 32 must be divisible by num_heads 3"),
        ({"num_kv_heads": 3}, "num_heads 4 must be divisible by num_kv_heads 3"),
        ({"model_dim": 36, "num_heads": 4, "num_kv_heads": 4}, "head dim model_dim/num_heads = 9 must be even"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"logit_softcap": -1.0}, "logit_softcap must be >= 0"),
    ],
)
def test_invalid_arguments_raise_one_line_value_errors(overrides, fragment):
    with pytest.raises(ValueError) as info:
        GPT(**{**TINY, **overrides})
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)

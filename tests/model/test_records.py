"""The record-era knobs (pgolf/model/records.py): each one's effect, the record's parameter count, the baseline kept."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import compose
from pgolf.errors import ConfigError
from pgolf.export.quantize import is_control
from pgolf.jobs.models import build_model
from pgolf.model.build import make_gpt
from pgolf.model.gpt import GPT, MLP, Rotary, apply_rotary, count_params
from pgolf.model.records import RecordsGPT, exclude_own_value, rotate_partial

SMALL = dict(vocab_size=64, num_layers=6, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2)
RECORD_PARAMS = 35_945_671
"""`model_params:35945671` in the record's train logs (docs/records_model.md, section 2)."""


def small(**knobs) -> RecordsGPT:
    torch.manual_seed(0)
    model = make_gpt(**SMALL, **knobs)
    assert isinstance(model, RecordsGPT)
    return model.eval()


def randomize(model: torch.nn.Module) -> None:
    """Non-zero values everywhere (a fresh model's zero-init projections hide most paths)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))


def test_model_records_has_the_records_parameter_count_exactly():
    model = build_model(compose(["model=records", "reg=records"]))
    assert isinstance(model, RecordsGPT) and count_params(model) == RECORD_PARAMS
    assert model.layer_order() == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]


def test_baseline_stays_the_reference_gpt_with_its_keys():
    model = build_model(compose(["model=baseline", "reg=none"]))
    assert type(model) is GPT and count_params(model) == 17_059_912
    assert not any(key in model.config for key in ("rope_dims", "xsa_layers"))  # its artifacts are unchanged


def test_leaky_slope_lets_negative_preactivations_through_squared():
    torch.manual_seed(0)
    relu = MLP(32, 2)
    leaky = make_gpt(**SMALL, mlp_leaky_slope=0.5).blocks[0].mlp
    leaky.load_state_dict(relu.state_dict())
    x = torch.randn(3, 32)
    h = relu.fc(x)
    assert torch.allclose(relu(x), relu.proj(torch.relu(h).square()))
    assert torch.allclose(leaky(x), relu.proj(torch.where(h > 0, h, 0.5 * h).square()))
    assert not torch.allclose(leaky(x), relu(x))


def test_partial_rope_rotates_only_the_first_dims_with_frequencies_over_them():
    x = torch.randn(1, 2, 5, 16)
    cos, sin = Rotary(4, 10000.0)(5)
    y = rotate_partial(x, cos, sin, 4)
    assert torch.equal(y[..., 4:], x[..., 4:])  # dims 4.. pass through at every position
    assert torch.allclose(y[..., :4], apply_rotary(x[..., :4], cos, sin))
    assert not torch.allclose(y[..., :4], x[..., :4])


def test_xsa_output_is_orthogonal_to_the_tokens_own_value():
    y, v = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8)
    out = exclude_own_value(y, v)
    own = v.repeat_interleave(2, dim=1)  # query heads 0,1 share KV head 0; 2,3 share 1
    assert (out * own).sum(-1).abs().max() < 1e-5
    assert torch.allclose(out + (y - out), y) and (y - out).abs().max() > 0.1


def test_xsa_layers_change_only_those_layers():
    off, on = small(rope_dims=16), small(rope_dims=16, xsa_layers=[1])
    assert [b.attn.xsa for b in on.blocks] == [i == 1 for i in range(6)]
    on.load_state_dict(off.state_dict())
    randomize(off)
    on.load_state_dict(off.state_dict())
    x = torch.randint(0, 64, (2, 12))
    assert not torch.allclose(on(x), off(x))


def test_recurrence_reuses_the_layers_and_calls_them_k_times():
    plain = small(rope_dims=16)
    looped = small(rope_dims=16, recur_passes=3, recur_start=2, recur_end=3)
    # No block is duplicated: the only new parameters are the skip rows of the longer (10-block) sequence.
    extra_rows = min(10 // 2, 10 - 10 // 2) - min(3, 3)
    assert count_params(looped) == count_params(plain) + extra_rows * SMALL["model_dim"]
    calls = [0] * 6
    for i, block in enumerate(looped.blocks):
        block.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
    looped(torch.randint(0, 64, (1, 8)))
    assert calls == [1, 1, 3, 3, 1, 1]
    looped.set_looping(False)
    looped(torch.randint(0, 64, (1, 8)))
    assert calls == [2, 2, 4, 4, 2, 2]


def _trained_looping(recur_from: float, iterations: int) -> list[bool]:
    """Train `iterations` steps and return, per step, whether the looped layers repeated in its forward."""
    from pgolf.data.tokenizer import byte_luts
    from pgolf.runtime.device import resolve_device
    from pgolf.runtime.distributed import DistInfo
    from pgolf.train.loop import NullMetrics, train_model

    cfg = compose(["model=records_tiny", "model.vocab_size=260", "model.num_layers=4", "model.model_dim=64",
                   "model.xsa_layers=[0,1]", "model.recur_start=1", "model.recur_end=1", "model.parallel_from=2",
                   "reg=none", "train.seq_len=16", "train.batch_tokens=32", f"train.iterations={iterations}",
                   "train.warmup_steps=0", "train.val_every=0", "train.wallclock_s=0", "train.log_every=1",
                   f"model.recur_from={recur_from}", "device=cpu"])
    torch.manual_seed(0)
    model = build_model(cfg)
    seen: list[bool] = []
    original = model.set_looping
    model.set_looping = lambda on: (seen.append(on), original(on))  # what the loop asks for, per step

    class Batches:
        local_tokens = 32

        def next_batch(self):
            x = torch.randint(4, 260, (2, 17))
            return x[:, :-1], x[:, 1:]

        def state_dict(self):
            return {}

        def load_state_dict(self, _state):
            pass

    train_model(cfg, model, Batches(), torch.randint(4, 260, (65,)), byte_luts(260), resolve_device("cpu"), DistInfo(),
                NullMetrics(), lambda _m: None)
    return seen[:iterations]


def test_the_loop_switches_recurrence_on_at_the_configured_fraction():
    assert _trained_looping(0.5, 6) == [False] * 3 + [True] * 3


def test_the_recurrence_switch_is_not_folded_into_a_compiled_graph():
    model = small(rope_dims=16, recur_passes=3, recur_start=2, recur_end=3)
    randomize(model)
    x = torch.randint(0, 64, (2, 8))
    model.set_looping(False)
    unlooped = model(x)
    model.set_looping(True)
    looped = model(x)
    graphs = []

    def backend(gm, _inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, backend=backend, dynamic=False)
    model.set_looping(False)
    assert torch.allclose(compiled(x), unlooped, atol=1e-5)
    model.set_looping(True)
    assert torch.allclose(compiled(x), looped, atol=1e-5)
    assert not torch.allclose(looped, unlooped) and len(graphs) == 2  # one graph per setting, switched at run time
    torch._dynamo.reset()


def test_parallel_lanes_mix_through_their_lambdas_from_the_chosen_layer():
    model = small(rope_dims=16, parallel_from=4)
    randomize(model)
    x = torch.randint(0, 64, (2, 8))
    model(x).square().mean().backward()
    post = model.parallel_post_lambdas.grad
    assert post[4:].abs().sum() > 0 and post[:4].abs().sum() == 0  # only layers 4 and 5 run as lanes
    before = model(x)
    with torch.no_grad():
        model.parallel_resid_lambdas[5, 1] += 0.5
    assert not torch.allclose(model(x), before)


def test_skip_gates_start_as_an_even_mix_of_stream_and_skip():
    model = small(rope_dims=16, skip_gates=True)
    x, s = torch.randn(1, 3, 32), torch.randn(1, 3, 32)
    w = model.skip_weights[0]
    assert torch.allclose(model._add_skip(x, 0, s), 0.5 * x + 0.5 * w * s)


def test_smear_gate_never_carries_a_document_into_the_next():
    model = small(rope_dims=16, smear_gate=True)  # fresh: zero-init projections, so a logit sees its embedding only
    with torch.no_grad():
        model.smear_lambda.fill_(1.0)
        model.smear_gate.weight.normal_()
    bos = 1
    doc = torch.tensor([[bos, 10, 11, 12, bos, 20, 21, 22]])
    logits = model(doc)
    other_end = doc.clone()
    other_end[0, 3] = 40  # the last token of document 1
    changed = model(other_end)
    assert torch.allclose(changed[0, 4:], logits[0, 4:])  # document 2 is unchanged
    assert not torch.allclose(changed[0, 3], logits[0, 3])
    inside = doc.clone()
    inside[0, 5] = 40  # a token inside document 2 changes the next one's logits: the smear is live
    assert not torch.allclose(model(inside)[0, 6], logits[0, 6])


def test_sparse_attention_gate_starts_at_one_half():
    with_gate, without = small(rope_dims=16, attn_gate=True), small(rope_dims=16)
    randomize(without)
    state = without.state_dict()
    with_gate.load_state_dict({**state, **{k: v for k, v in with_gate.state_dict().items() if "attn_gate_w" in k}})
    x = torch.randn(2, 5, 32)
    cos, sin = with_gate.rotary(5)
    # The gate scales each head's output before the (linear) output projection: 0.5 at init.
    assert torch.allclose(with_gate.blocks[0].attn(x, cos, sin), 0.5 * without.blocks[0].attn(x, cos, sin), atol=1e-6)


def test_new_gates_and_mixes_are_control_tensors_kept_float():
    model = build_model(compose(["model=records_tiny"]))
    new = [k for k in model.state_dict() if any(f in k for f in ("gate", "lambda", "parallel_"))]
    assert new and all(is_control(k) for k in new)


@pytest.mark.parametrize("override, fragment", [
    ("model.rope_dims=3", "model.rope_dims must be 0 (all) or even"),
    ("model.rope_dims=64", "at most the head dim 32"),
    ("model.recur_end=9", "model.recur_start..model.recur_end must be a range of layers 0..5"),
    ("model.xsa_layers=[0,7]", "model.xsa_layers names layers [7]"),
    ("model.mlp_leaky_slope=-0.1", "model.mlp_leaky_slope must be >= 0"),
])
def test_knob_values_that_cannot_work_are_one_line_config_errors(override, fragment):
    with pytest.raises(ConfigError, match=r"model\.") as info:
        compose(["model=records_tiny", override])
    assert fragment in str(info.value) and "\n" not in str(info.value)

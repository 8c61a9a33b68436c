"""fit-budget's space beyond bits and pruning: the knapsack's Pareto sums, sdclip k per group, the control tensors'
width, GPTQ priced by the layer's output error, and each codec priced with its own shipped code."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from pgolf import config as C
from pgolf.errors import ArtifactError
from pgolf.export.artifact import export_state_dict
from pgolf.export.container import read_container
from pgolf.export.quantize import is_control
from pgolf.fit.search import Search, export_config_of, pareto_sums
from pgolf.fit.sizes import Setting, SizeTable
from pgolf.model.gpt import GPT
from pgolf.progress import no_progress

MODEL = {"vocab_size": 64, "num_layers": 2, "model_dim": 32, "num_heads": 2, "num_kv_heads": 1, "mlp_mult": 2}


def test_pareto_sums_are_the_frontier_of_every_combination():
    rng = np.random.default_rng(0)
    sizes_of = [rng.integers(1, 100, size=int(rng.integers(3, 7))) for _ in range(5)]
    lists = [[(int(n), 10.0 / n + 0.05 * float(rng.random())) for n in sizes] for sizes in sizes_of]  # bytes buy error
    sizes, errors, picks = pareto_sums(lists)
    combos = [(sum(lists[j][i][0] for j, i in enumerate(c)), sum(lists[j][i][1] for j, i in enumerate(c)))
              for c in itertools.product(*[range(len(opts)) for opts in lists])]
    # brute force: a combination is on the frontier when no other is at most as large and strictly better
    frontier = sorted({(s, e) for s, e in combos if not any(s2 <= s and e2 < e for s2, e2 in combos)})
    got = sorted(zip(sizes.tolist(), errors.tolist()))
    assert len(frontier) > 20
    assert [s for s, _ in got] == [s for s, _ in frontier]
    assert np.allclose([e for _, e in got], [e for _, e in frontier])
    for row in range(len(sizes)):  # the picks add up to the point
        assert sum(lists[j][picks[row, j]][0] for j in range(len(lists))) == sizes[row]


def _space(**fit):
    torch.manual_seed(0)
    model = GPT(**MODEL)
    state = {n: (torch.randn_like(t) * 0.05 if t.ndim == 2 else t.clone()) for n, t in model.state_dict().items()}
    # heavy tails in the MLP input only: there a wide clip pays, elsewhere a tight one does
    for name in ("blocks.0.mlp.fc.weight", "blocks.1.mlp.fc.weight"):
        state[name] = torch.distributions.StudentT(2.0).sample(state[name].shape) * 0.02
    cfg = C.Config()
    cfg.export = dataclasses.replace(cfg.export, clip="sdclip")
    s = Search(state, dict(MODEL), cfg, C.FitConfig(bits=[4, 6], embed_bits=[6], **fit), None, no_progress)
    fisher = {n: torch.ones_like(state[n]) for n in s.quant_names + s.control_names}
    return s, SizeTable(state, s.quant_names, fisher, cfg.export), model


def test_each_group_gets_its_own_sdclip_k_and_the_export_writes_the_same_bytes():
    s, table, _ = _space(clips=["sdclip"], sdclip_ks=[3.0, 30.0])
    setting = Setting("sdclip", "rans")
    options = s.group_options(table, setting)
    best_k = {g: min((o for o in options[g] if o[0].bits == 6), key=lambda o: o[2])[0].k for g in s.groups}
    assert best_k["mlp_in"] > best_k["attn_q"]  # heavy tails want a wider clip: the groups disagree
    cands = s.candidates(table, setting, 10**9)
    mixed = [c for c in cands if len(set(c.group_k.values())) > 1]
    assert mixed
    for cand in mixed:
        export_cfg = export_config_of(cand, s.cfg.export)
        result = export_state_dict(s.state, s.model_config, export_cfg)
        assert result.model_bytes - result.overhead_bytes == cand.stream_bytes, cand.label()


def test_control_tensors_at_float16_are_a_priced_choice_that_reaches_the_file():
    s, table, _ = _space(control_dtypes=["float32", "float16"])
    assert s.control_names
    setting = Setting("sdclip", "rans")
    wide, narrow = s.control_options(table, "rans")
    assert (wide[0], narrow[0]) == ("float32", "float16") and narrow[1] < wide[1] and narrow[2] > wide[2] == 0
    cand = next(c for c in s.candidates(table, setting, 10**9) if c.control_dtype == "float16")
    result = export_state_dict(s.state, s.model_config, export_config_of(cand, s.cfg.export))
    assert result.model_bytes - result.overhead_bytes == cand.stream_bytes
    records = {r["name"]: r for r in read_container(result.blob)[0]["tensors"]}
    assert {records[n]["store"] for n in s.control_names} == {"float16"}


def test_a_control_tensor_that_overflows_float16_is_refused():
    s, _, _ = _space()
    state = dict(s.state)
    name = next(n for n in state if is_control(n))
    state[name] = state[name] + 1e6
    cfg = dataclasses.replace(s.cfg.export, control_dtype="float16")
    with pytest.raises(ArtifactError, match=name):
        export_state_dict(state, s.model_config, cfg)


def test_with_a_hessian_the_proxy_is_the_layers_output_error():
    s, table, _ = _space()
    name = "blocks.0.mlp.fc.weight"
    rows, cols = s.state[name].shape
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3000, cols, generator=gen) @ torch.randn(cols, cols, generator=gen)  # correlated inputs
    table.hessians = {name: x.T @ x / len(x)}
    fisher = torch.rand(rows, cols, generator=gen)
    table.fisher[name] = fisher
    delta = torch.randn(rows, cols, generator=gen) * 0.01
    # independently: the mean squared change of each output over the inputs, weighted by that output's sensitivity
    out_err = ((x.double() @ delta.double().T) ** 2).mean(dim=0)  # (rows,)
    sensitivity = fisher.double().sum(dim=1) / (x.double() ** 2).mean(dim=0).sum()
    assert table.weighted_error(name, delta) == pytest.approx(float((out_err * sensitivity).sum()), rel=1e-6)
    table.hessians = {}
    assert table.weighted_error(name, delta) == pytest.approx(float((fisher.double() * delta.double() ** 2).sum()))


def test_each_setting_reserves_its_own_code_and_the_reserve_holds_the_chosen_script():
    """ctx ships its context coder and rans does not, so a ctx candidate has less room than a rans one; whatever the
    search then picks (group ks apart, tensors raised, pruning, float16 control tensors), its script fits the
    reserve of its setting."""
    from pgolf.bundle.code_bytes import count_code_bytes
    from pgolf.fit.budget import code_reserve

    s, table, _ = _space(clips=["sdclip"], sdclip_ks=[3.0, 30.0])
    ctx, rans = (code_reserve(s.cfg, Setting("sdclip", codec), s.quant_names) for codec in ("ctx", "rans"))
    assert ctx > rans + 1000
    cand = s.candidates(table, Setting("sdclip", "rans"), 10**9)[0]
    widest = dataclasses.replace(cand, tensor_bits=dict.fromkeys(s.quant_names, 6), prune=0.123456789,
                                 control_dtype="float16",
                                 group_k={g: (3.0, 30.0, 12.0)[i % 3] for i, g in enumerate(s.groups)})
    chosen = dataclasses.replace(s.cfg, export=export_config_of(widest, s.cfg.export))
    assert count_code_bytes(chosen) <= rans, widest.label()


def test_only_roundings_levels_are_pruned_to_fit():
    """GPTQ's levels absorb the error of the columns before them, which zeroing levels afterwards undoes: its
    candidates fit by bits alone, while rounding's may be pruned to fit."""
    from pgolf.export.gptq import layer_hessians

    s, table, model = _space(clips=["sdclip"], sdclip_ks=[12.0], fill_candidates=1)  # frontier fills asked for
    model.load_state_dict(s.state)
    table.hessians = layer_hessians(model, [torch.randint(0, 64, (4, 16))])
    rounding, gptq = Setting("sdclip", "rans"), Setting("sdclip", "rans", gptq=True)
    low = s.smallest(table, rounding)
    high = s.candidates(table, rounding, 10**9)[0].stream_bytes
    limit = (low + high) // 2
    assert any(c.prune > 0 for c in s.candidates(table, rounding, limit))
    with_gptq = s.candidates(table, gptq, limit)
    assert with_gptq and all(c.prune == 0 for c in with_gptq)

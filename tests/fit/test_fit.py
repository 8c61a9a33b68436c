"""fit.py on a small random GPT: exact sizes, fills never over the limit, single-tensor raises, selective-pruning
order, the choice among measured candidates, checks."""

import dataclasses

import pytest
import torch

from pgolf import config as C
from pgolf.errors import ConfigError
from pgolf.export.artifact import export_state_dict
from pgolf.export.container import read_container
from pgolf.export.gptq import layer_hessians
from pgolf.export.prune import prune_selective
from pgolf.export.quantize import quantize_rows, tensor_group
from pgolf.fit.budget import ROW_FIELDS, _shrink, budget_limit, candidate_frame, check_space
from pgolf.fit.search import Candidate, Search, export_config_of, short_tensor_name
from pgolf.fit.sizes import Quant, Setting, SizeTable, pruned_levels
from pgolf.jobs.layout import output_paths
from pgolf.model.gpt import GPT
from pgolf.progress import no_progress
from pgolf.results import tables as T

MODEL = {"vocab_size": 64, "num_layers": 2, "model_dim": 32, "num_heads": 2, "num_kv_heads": 1, "mlp_mult": 2}


@pytest.fixture(scope="module")
def search():
    torch.manual_seed(0)
    model = GPT(**MODEL)
    state = {n: (torch.randn_like(t) * 0.05 if t.ndim == 2 else t.clone()) for n, t in model.state_dict().items()}
    cfg = C.Config()
    cfg.export.clip = "max"
    space = C.FitConfig(bits=[4, 6, 8], embed_bits=[6, 8], fill_candidates=1)
    s = Search(state, dict(MODEL), cfg, space, None, no_progress)
    fisher = {n: torch.rand_like(state[n]) for n in s.quant_names}
    return s, SizeTable(state, s.quant_names, fisher, cfg.export)


SETTING = Setting("max", "rans")


def _uniform(s, table, bits, setting=SETTING):
    cand = Candidate(group_bits=dict.fromkeys(s.groups, bits), setting=setting, prune=0.0, stream_bytes=0, proxy=0.0)
    return s.resized(table, cand, {}, 0.0)


def _limit(s, table, share):
    """A stream limit `share` of the way from the smallest reachable size to all-int8 (so the budget bites)."""
    low, high = s.smallest(table, SETTING), _uniform(s, table, 8).stream_bytes
    return int(low + share * (high - low))


def test_predicted_stream_bytes_plus_overhead_equal_a_real_export(search):
    s, table = search
    cands = s.candidates(table, SETTING, _limit(s, table, 0.6))
    assert any(c.prune > 0 for c in cands) and any(c.tensor_bits for c in cands)
    for cand in cands:
        result = export_state_dict(s.state, s.model_config, export_config_of(cand, s.cfg.export))
        assert result.model_bytes - result.overhead_bytes == cand.stream_bytes, cand.label()


def test_with_gptq_the_search_codes_gptq_levels_exactly_as_the_export_does(search):
    s, plain = search
    model = GPT(**MODEL)
    model.load_state_dict(s.state)
    hessians = layer_hessians(model, [torch.randint(0, 64, (4, 16))])
    cfg = dataclasses.replace(s.cfg.export, gptq=True)
    table = SizeTable(s.state, s.quant_names, plain.fisher, cfg, hessians)
    cand = _uniform(s, table, 4, Setting("max", "rans", gptq=True))
    result = export_state_dict(s.state, s.model_config, export_config_of(cand, cfg), hessians=hessians)
    assert result.model_bytes - result.overhead_bytes == cand.stream_bytes
    name = "blocks.0.mlp.fc.weight"
    rounded = plain.get(name, Quant(4, "max", 0.0, False, "rans")).qt.q
    assert not torch.equal(table.get(name, cand.quant(name)).qt.q, rounded)


@pytest.mark.parametrize("share", [0.2, 0.5, 0.8])
def test_every_candidate_fits_its_limit_and_fill_uses_it(search, share):
    s, table = search
    stream_limit = _limit(s, table, share)
    cands = s.candidates(table, SETTING, stream_limit)
    assert cands
    for cand in cands:
        assert cand.stream_bytes <= stream_limit
        real = export_state_dict(s.state, s.model_config, export_config_of(cand, s.cfg.export))
        assert real.model_bytes - real.overhead_bytes <= stream_limit
    filled = [c for c in cands if c.prune > 0]
    assert all(c.stream_bytes >= s.space.fill * stream_limit or c.prune < 1e-3 for c in filled)


def test_frontier_fills_are_off_by_default_yet_a_budget_only_pruning_reaches_is_met(search, monkeypatch):
    s, table = search
    monkeypatch.setattr(s.space, "fill_candidates", C.FitConfig().fill_candidates)
    assert s.space.fill_candidates == 0
    roomy = s.candidates(table, SETTING, _limit(s, table, 0.5))
    assert roomy and not any(c.origin.startswith("knapsack-fill") for c in roomy)
    tight = _limit(s, table, 0.0)  # the smallest reachable size: every group's fewest bytes at max_prune
    cands = s.candidates(table, SETTING, tight)
    assert any(c.origin.startswith("knapsack-fill") for c in cands)
    assert all(0 < c.prune <= s.space.max_prune and c.stream_bytes <= tight for c in cands)


def test_raised_tensors_spend_the_leftover_fit_and_reach_the_file(search):
    s, table = search
    raised = [(c, limit) for limit in (_limit(s, table, share) for share in (0.2, 0.35, 0.5, 0.65, 0.8))
              for c in s.candidates(table, SETTING, limit) if c.tensor_bits]
    assert len(raised) >= 3
    for cand, stream_limit in raised:
        parent = s.resized(table, cand, {}, cand.prune)
        assert parent.stream_bytes < cand.stream_bytes <= stream_limit and cand.proxy < parent.proxy
        assert all(b > cand.group_bits[tensor_group(n)] and b in s.bits_for(tensor_group(n))
                   for n, b in cand.tensor_bits.items())
        for n in s.quant_names:  # no single further raise that lowers the proxy still fits
            up = [b for b in s.bits_for(tensor_group(n)) if b > cand.bits_of(n)]
            if up:
                (size_now, err_now), (size_up, err_up) = (table.cost(n, cand.quant(n).at(b), cand.prune)
                                                          for b in (cand.bits_of(n), up[0]))
                assert cand.stream_bytes + size_up - size_now > stream_limit or err_up >= err_now, n
        blob = export_state_dict(s.state, s.model_config, export_config_of(cand, s.cfg.export)).blob
        records = read_container(blob)[0]["tensors"]
        assert {r["name"]: r["bits"] for r in records if r["kind"] == "quant"} == \
            {n: cand.bits_of(n) for n in s.quant_names}


def _measured_as(s, monkeypatch, bpb_of):
    """BPB by origin instead of a model; evals=1, so the uniform anchor's raised copy is measured after the pick."""
    def measure(table, cand):
        cand.val_bpb = bpb_of(cand)
        return cand.val_bpb
    monkeypatch.setattr(s, "measure", measure)
    monkeypatch.setattr(s.space, "evals", 1)


def _between_uniform_6_and_8(s, table):
    return (_uniform(s, table, 6).stream_bytes + _uniform(s, table, 8).stream_bytes) // 2


def test_choose_keeps_the_winners_raised_copy_when_it_is_not_worse(search, monkeypatch):
    s, table = search
    limit = _between_uniform_6_and_8(s, table)
    _measured_as(s, monkeypatch, lambda c: {"uniform": 1.0, "uniform+bits": 0.99}.get(c.origin, 2.0))
    chosen, measured = s.choose(table, s.candidates(table, SETTING, limit))
    uniform = next(c for c in measured if c.origin == "uniform")
    assert chosen.origin == "uniform+bits" and chosen in measured
    assert uniform.stream_bytes < chosen.stream_bytes <= limit


def test_choose_drops_a_raised_copy_that_measures_worse(search, monkeypatch):
    s, table = search
    limit = _between_uniform_6_and_8(s, table)
    _measured_as(s, monkeypatch, lambda c: 1.0 if c.origin == "uniform" else 1.01 if c.tensor_bits else 2.0)
    chosen, measured = s.choose(table, s.candidates(table, SETTING, limit))
    assert chosen.origin == "uniform" and not chosen.tensor_bits
    assert any(c.origin == "uniform+bits" for c in measured)  # it was measured, then refused


def test_shrink_redoes_the_raises_under_a_lower_limit(search):
    """The path taken when the real header is longer than estimated: the same group bits, fewer raises."""
    s, table = search
    limit = _between_uniform_6_and_8(s, table)
    raised = next(c for c in s.candidates(table, SETTING, limit) if c.tensor_bits and c.prune == 0)
    lower = raised.stream_bytes - 300
    shrunk = _shrink(s, table, raised, lower)
    assert shrunk.stream_bytes <= lower and shrunk.group_bits == raised.group_bits and shrunk.prune == 0
    assert shrunk.stream_bytes > s.resized(table, raised, {}, 0.0).stream_bytes  # still raised where room is left


def test_short_tensor_names_in_labels():
    assert [short_tensor_name(n) for n in ("blocks.3.mlp.fc.weight", "blocks.0.attn.c_k.weight", "tok_emb.weight",
                                           "lm_head.weight")] == ["i3", "k0", "tok_emb", "lm_head"]


def test_fill_keeps_a_measured_fit_when_sizes_are_not_monotone(search, monkeypatch):
    s, table = search
    cand = s.candidates(table, SETTING, 10**9)[0]
    limit = cand.stream_bytes - 500
    real = s.pruned_size

    def bumpy(table_, cand_, prune):  # sizes jump up between 0.05 and 0.1: not monotone in the fraction
        size, proxy = real(table_, cand_, prune)
        return (size + 2000 if 0.05 < prune < 0.1 else size), proxy

    monkeypatch.setattr(s, "pruned_size", bumpy)
    filled = s.fill(table, cand, limit)
    assert filled is not None and bumpy(table, cand, filled.prune)[0] <= limit


def test_fast_selective_pruning_matches_export(search):
    s, table = search
    name = s.quant_names[0]
    entry = table.get(name, Quant(6, "max", 0.0, False, "rans"))
    for fraction in (0.0, 0.013, 0.2):
        fast, _ = pruned_levels(entry, fraction)
        slow, _ = prune_selective(quantize_rows(s.state[name], 6, "max"), s.state[name], fraction)
        assert torch.equal(fast.q, slow.q)


def test_smallest_is_below_every_candidate(search):
    s, table = search
    smallest = s.smallest(table, SETTING)
    assert all(c.stream_bytes >= smallest for c in s.candidates(table, SETTING, _limit(s, table, 0.5)))
    assert s.candidates(table, SETTING, smallest - 1) == []


@pytest.mark.parametrize(("max_bytes", "margin"), [(0, 0), (-5, 0), (100, 100), (100, 200), (100, -1)])
def test_bad_budgets_are_config_errors(max_bytes, margin):
    with pytest.raises(ConfigError):
        budget_limit(max_bytes, margin)


@pytest.mark.parametrize(("change", "key"), [({"bits": []}, "fit.bits"), ({"embed_bits": []}, "fit.embed_bits"),
                                             ({"bits": [9]}, "fit.bits"), ({"max_prune": 1.0}, "fit.max_prune"),
                                             ({"clips": ["nope"]}, "fit.clips"), ({"codecs": ["nope"]}, "fit.codecs")])
def test_empty_or_bad_search_space_is_rejected(change, key):
    with pytest.raises(ConfigError) as info:
        check_space(C.FitConfig(**change))
    assert key in str(info.value) and "\n" not in str(info.value)


def test_output_paths_in_a_run_dir_and_beside_a_file(tmp_path):
    paths = output_paths(tmp_path, 400_000)
    assert paths["artifact"] == tmp_path / "artifacts" / "fit-400000.pgolf"
    assert paths["csv"].parent == tmp_path / "fit"
    ckpt = tmp_path / "final_model.pt"
    assert output_paths(ckpt, 16_000_000)["artifact"] == tmp_path / "final_model.fit-16000000.pgolf"


def test_candidate_frame_keeps_predicted_and_measured_bytes_apart_and_marks_frontier_and_choice(tmp_path):
    def cand(model_bytes, bpb, origin):
        return Candidate(group_bits={"embed": 8}, setting=SETTING, prune=0.0, stream_bytes=model_bytes, proxy=1.0,
                         model_bytes=model_bytes, val_bpb=bpb, origin=origin)

    chosen = cand(290, 2.4, "proxy")  # predicted 290, the written file measured 300
    frame = candidate_frame([chosen, cand(100, 3.0, "uniform"), cand(250, 2.6, "fill"), cand(200, 2.5, "proxy")],
                            chosen, measured_bytes=300, code_bytes=10, code_reserve={SETTING: 10}, limit_total=400,
                            float_bpb=2.0)
    assert tuple(frame.columns) == ROW_FIELDS
    assert frame["predicted_model_bytes"].tolist() == [100, 200, 250, 290]
    assert frame["measured_model_bytes"].isna().tolist() == [True, True, True, False]
    assert frame["measured_model_bytes"].iloc[-1] == 300
    assert frame["bytes_basis"].tolist() == ["predicted"] * 3 + ["measured"]
    assert frame["total_bytes"].tolist() == [110, 210, 260, 310]
    assert frame["frontier"].tolist() == [True, True, False, True]
    assert frame["chosen"].tolist() == [False, False, False, True]
    assert frame["headroom_bytes"].tolist() == [290, 190, 140, 90]
    T.write_csv(frame, tmp_path / "c.csv")
    header, *lines = (tmp_path / "c.csv").read_text().splitlines()
    assert header.split(",") == list(ROW_FIELDS)
    assert lines[0].split(",")[3] == "" and lines[-1].split(",")[2:4] == ["290", "300"]
    assert frame["delta_bpb"].iloc[-1] == pytest.approx(0.4)


def _lqer_search(offset: float):
    """A model whose MLP input weights are 3-bit grid points of their own scale plus a rank-1 offset of `offset`
    steps: at 3 bits that offset is the tensor's whole error, and it is rank 1. Only their error counts (the
    Fisher weights of the other tensors are zero), so the moves compete on these two tensors alone."""
    torch.manual_seed(0)
    model = GPT(**MODEL)
    state = {n: (torch.randn_like(t) * 0.05 if t.ndim == 2 else t.clone()) for n, t in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    step = 2.0**-6
    for name in ("blocks.0.mlp.fc.weight", "blocks.1.mlp.fc.weight"):
        rows, cols = state[name].shape
        levels = torch.randint(-2, 3, (rows, cols), generator=gen).float()
        levels[:, 0] = 3
        u, v = torch.rand(rows, 1, generator=gen) * 2 - 1, torch.rand(1, cols, generator=gen) * 2 - 1
        v[0, 0] = 0.0
        state[name] = step * (levels + offset * (u @ v))
    cfg = C.Config()
    cfg.export.clip, cfg.export.lqer_group, cfg.export.lqer_bits = "max", 0, 8
    space = C.FitConfig(bits=[3, 4, 8], embed_bits=[8], lqer_ranks=[0, 1])
    s = Search(state, dict(MODEL), cfg, space, None, no_progress)
    fisher = {n: torch.ones_like(state[n]) * (".mlp.fc." in n) for n in s.quant_names}
    return s, SizeTable(state, s.quant_names, fisher, cfg.export)


def test_lqer_is_chosen_where_its_bytes_buy_more_than_a_bit_and_reaches_the_file():
    s, table = _lqer_search(offset=0.45)
    uniform = _uniform(s, table, 3)
    stream_limit = uniform.stream_bytes + 2000  # room for factors, not for a bit more on an MLP input
    raised = s.top_ups(table, uniform, stream_limit)
    with_lqer = [c for c in raised if c.lqer_tensors]
    assert with_lqer and {"blocks.0.mlp.fc.weight", "blocks.1.mlp.fc.weight"} <= set(with_lqer[0].lqer_tensors)
    cand = with_lqer[0]
    assert cand.stream_bytes <= stream_limit and cand.proxy < 0.1 * uniform.proxy
    result = export_state_dict(s.state, s.model_config, export_config_of(cand, s.cfg.export))
    assert result.model_bytes - result.overhead_bytes == cand.stream_bytes  # exact, factors included
    records = {r["name"]: r for r in read_container(result.blob)[0]["tensors"]}
    assert {n for n, r in records.items() if "lqer" in r} == set(cand.lqer_tensors)


def test_lqer_is_not_chosen_where_a_bit_of_width_buys_more():
    """Without the offset the 3-bit error is plain rounding noise, which a rank-1 correction barely touches."""
    s, table = _lqer_search(offset=0.0)
    uniform = _uniform(s, table, 3)
    for limit in (uniform.stream_bytes + 2000, uniform.stream_bytes + 20000):
        assert not any(c.lqer_tensors for c in s.top_ups(table, uniform, limit))

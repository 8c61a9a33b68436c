"""fit.py on a small random GPT: exact sizes, fill never over the limit, selective-pruning order, Pareto, checks."""

import pytest
import torch

from pgolf import config as C
from pgolf.errors import ConfigError
from pgolf.export.artifact import export_state_dict
from pgolf.export.prune import prune_selective
from pgolf.export.quantize import quantize_rows
from pgolf.fit import (
    FitSpace,
    _Search,
    _Setting,
    _SizeTable,
    budget_limit,
    check_space,
    export_config_of,
    output_paths,
    pareto_front,
    pruned_levels,
)
from pgolf.model.gpt import GPT
from pgolf.progress import no_progress

MODEL = {"vocab_size": 64, "num_layers": 2, "model_dim": 32, "num_heads": 2, "num_kv_heads": 1, "mlp_mult": 2}


@pytest.fixture(scope="module")
def search():
    torch.manual_seed(0)
    model = GPT(**MODEL)
    state = {n: (torch.randn_like(t) * 0.05 if t.ndim == 2 else t.clone()) for n, t in model.state_dict().items()}
    cfg = C.Config()
    cfg.export.clip = "max"
    s = _Search(state, dict(MODEL), cfg, FitSpace(bits=(4, 6, 8), embed_bits=(6, 8)), None, None, no_progress)
    fisher = {n: torch.rand_like(state[n]) for n in s.quant_names}
    return s, _SizeTable(state, s.quant_names, fisher, cfg.export)


def _real_model_bytes(s, cand):
    return export_state_dict(s.state, s.model_config, export_config_of(cand, s.cfg.export)).model_bytes


def test_predicted_stream_bytes_plus_overhead_equal_a_real_export(search):
    s, table = search
    setting = _Setting("max", 12.0, "rans")
    for cand in s.candidates(table, setting, stream_limit=40_000):
        result = export_state_dict(s.state, s.model_config, export_config_of(cand, s.cfg.export))
        assert result.model_bytes - result.overhead_bytes == cand.stream_bytes


@pytest.mark.parametrize("stream_limit", [25_000, 32_000, 45_000])
def test_every_candidate_fits_its_limit_and_fill_uses_it(search, stream_limit):
    s, table = search
    cands = s.candidates(table, _Setting("max", 12.0, "rans"), stream_limit)
    assert cands
    for cand in cands:
        assert cand.stream_bytes <= stream_limit
        real = export_state_dict(s.state, s.model_config, export_config_of(cand, s.cfg.export))
        assert real.model_bytes - real.overhead_bytes <= stream_limit
    filled = [c for c in cands if c.prune > 0]
    assert all(c.stream_bytes >= s.space.fill * stream_limit or c.prune < 1e-3 for c in filled)


def test_fill_keeps_a_measured_fit_when_sizes_are_not_monotone(search, monkeypatch):
    s, table = search
    cand = s.candidates(table, _Setting("max", 12.0, "rans"), 10**9)[0]
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
    entry = table.get(name, 6, "max", 12.0, "rans")
    for fraction in (0.0, 0.013, 0.2):
        fast, _ = pruned_levels(entry, fraction)
        slow, _ = prune_selective(quantize_rows(s.state[name], 6, "max"), s.state[name], fraction)
        assert torch.equal(fast.q, slow.q)


def test_smallest_is_below_every_candidate(search):
    s, table = search
    setting = _Setting("max", 12.0, "rans")
    smallest = s.smallest(table, setting)
    assert all(c.stream_bytes >= smallest for c in s.candidates(table, setting, 10**9))
    assert s.candidates(table, setting, smallest - 1) == []


def test_pareto_front_marks_only_undominated_points():
    assert pareto_front([100, 200, 300, 250], [3.0, 2.5, 2.4, 2.6]) == [True, True, True, False]
    assert pareto_front([100, 100], [2.0, 2.0]) == [True, True]


@pytest.mark.parametrize(("max_bytes", "margin"), [(0, 0), (-5, 0), (100, 100), (100, 200), (100, -1)])
def test_bad_budgets_are_config_errors(max_bytes, margin):
    with pytest.raises(ConfigError):
        budget_limit(max_bytes, margin)


@pytest.mark.parametrize("space", [FitSpace(bits=()), FitSpace(embed_bits=()), FitSpace(bits=(9,)),
                                   FitSpace(max_prune=1.0), FitSpace(clips=("nope",)), FitSpace(codecs=("nope",))])
def test_empty_or_bad_search_space_is_rejected(space):
    with pytest.raises(Exception) as info:
        check_space(space)
    assert "fit space" in str(info.value) or "codec" in str(info.value)


def test_output_paths_in_a_run_dir_and_beside_a_file(tmp_path):
    paths = output_paths(tmp_path, 400_000)
    assert paths["artifact"] == tmp_path / "artifacts" / "fit-400000.pgolf"
    assert paths["csv"].parent == tmp_path / "fit"
    ckpt = tmp_path / "final_model.pt"
    assert output_paths(ckpt, 16_000_000)["artifact"] == tmp_path / "final_model.fit-16000000.pgolf"

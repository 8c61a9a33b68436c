"""One trial on a real (very small) training: the rung hook stops a loser with its checkpoint kept, a promoted retry
resumes from it and ends exactly where an unpruned run ends, and a cooldown branch leaves the trial unchanged."""

import json
import random
from pathlib import Path

import pytest

from pgolf import config as C
from pgolf.data.prepare import prepare_data
from pgolf.jobs.layout import read_summary
from pgolf.search.trial import TrialSetup, cooldown_steps, objective, run_trial
from pgolf.train.checkpoints import latest_checkpoint

pytestmark = pytest.mark.slow

VALUES = {"train.matrix_lr": "0.05"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Overrides for a seconds-long training on a small synthetic corpus."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = "the cat dog bird sees finds likes red big small old tree river stone".split()
    for index in range(12):
        (root / f"doc{index:02d}.txt").write_text(" ".join(rng.choice(words) for _ in range(900)) + ".\n")
    data = prepare_data(root, root / "prepared", vocab_size=300, name="tiny")
    return [f"data.dir={data.dir}", f"data.tokenizer={data.tokenizer}", "model.vocab_size=300",
            "model.num_layers=2", "model.model_dim=64", "train.seq_len=64", "train.batch_tokens=1024",
            "train.iterations=9", "train.warmdown_steps=3", "train.val_every=0", "train.val_tokens=1024",
            "data.val_tokens=2048", "reg.ema_decay=0", "export.code_bytes=40000"]


def setup(folder, base, **kw):
    return TrialSetup(str(folder), base, ["train.matrix_lr"], [], None, 0, **kw)


@pytest.fixture(scope="module")
def straight(base, tmp_path_factory):
    """The trial run to its end, never pruned: (outcome, its reports)."""
    reports = []
    outcome = run_trial(setup(tmp_path_factory.mktemp("straight"), base), VALUES, 1337,
                        lambda r, s: reports.append((r, s)) and False)
    return outcome, reports


def test_a_trial_reports_each_rung_once_and_scores_its_round_trip(straight):
    outcome, reports = straight
    assert [r for r, _ in reports] == [1, 3]  # rungs at steps ceil(9/9)=1 and ceil(9/3)=3, resources 3**k
    assert [r["step"] for r in outcome.rungs] == [1, 3]
    assert outcome.objective == read_summary(outcome.run_dir)["val_bpb_roundtrip"]


def test_a_pruned_trial_keeps_its_rung_checkpoint_and_a_promoted_retry_ends_as_if_never_pruned(base, tmp_path,
                                                                                                 straight):
    pruned = run_trial(setup(tmp_path, base), VALUES, 1337, lambda r, s: True)
    run_dir = tmp_path / "trials" / pruned.run_dir.rsplit("/", 1)[-1]
    assert pruned.pruned and pruned.objective is None
    assert latest_checkpoint(run_dir)["step"] == 1  # stopped at the first rung, its checkpoint kept
    assert not (run_dir / "summary.json").exists()
    assert json.loads((run_dir / "state.json").read_text())["stop_reason"] == "pruned"

    reports = []
    promoted = run_trial(setup(tmp_path, base), VALUES, 1337, lambda r, s: reports.append((r, s)) and False)
    assert reports[0] == (1, pruned.rungs[0]["val_bpb"])  # the recorded rung replayed, not re-run
    assert "resumed at step 1" in (run_dir / "train.log").read_text()
    assert promoted.objective == straight[0].objective  # CPU resume is exact


def test_a_cooldown_branch_scores_the_rung_and_leaves_the_trial_unchanged(base, tmp_path, straight):
    outcome = run_trial(setup(tmp_path, base, cooldown=True), VALUES, 1337)
    assert outcome.objective == straight[0].objective  # the branch restored the trial's RNG state
    for rung in outcome.rungs:
        branch = tmp_path / "trials" / outcome.run_dir.rsplit("/", 1)[-1] / "cooldown" / f"step-{rung['step']:06d}"
        cfg = C.load_yaml(branch / "config.yaml")
        decay = cooldown_steps(C.compose(base).train, rung["step"])
        assert (cfg.train.iterations, cfg.train.warmdown_steps) == (rung["step"] + decay, decay)
        assert rung["cooldown_bpb"] == read_summary(branch)["val_bpb_roundtrip"]


def test_at_a_budget_the_objective_is_fit_budgets_round_trip(base, straight):
    outcome = straight[0]
    run_dir = Path(outcome.run_dir)
    summary = read_summary(run_dir)
    budget = summary["bytes"]["total"]  # the training's own export fits; fit-budget may find better within it
    fit_base = base + ["fit.val_tokens=1024", "fit.evals=1", "fit.bits=[5,6]", "fit.embed_bits=[6]", "seed=1337",
                       "train.matrix_lr=0.05"]
    row = objective(TrialSetup(str(run_dir.parent.parent), base, ["train.matrix_lr"], [], budget, 0), run_dir,
                    fit_base, [], summary)
    fit = json.loads((run_dir / "fit" / f"fit-{budget}.json").read_text())
    assert row["val_bpb_roundtrip"] == fit["val_bpb_roundtrip"] != summary["val_bpb_roundtrip"]
    assert row["point"] == f"fit-{budget}" and fit["bytes"]["total"] <= budget

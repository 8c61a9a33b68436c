"""`pgolf search` and `pgolf report` on its folder as a user runs them: a tiny study, resumed, reported; bad input gives
one line, a non-zero exit and loses no finished trial. (The objective at a byte budget is fit-budget's number:
tests/search/test_trial.py, on a smaller model; here it would cost a fit-budget per trial.)"""

import json

import pandas as pd
import pytest

from .conftest import exited, one_line_error, run_pgolf, run_pgolf_each

pytestmark = pytest.mark.slow

QUICK = ["train.iterations=9", "train.batch_tokens=1024", "train.val_every=0", "train.val_tokens=2048",
         "data.val_tokens=8192", "export.code_bytes=40000"]  # measured code bytes (python-minifier) cost seconds
SPACE = ["train.matrix_lr=tag(log, interval(0.02, 0.08))"]


@pytest.fixture(scope="module")
def study(tmp_path_factory, builtin_data):
    """One search of 3 trials, 1 finalist x 2 seeds: (cwd, its args, folder, CompletedProcess)."""
    cwd = tmp_path_factory.mktemp("search")
    data = [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]
    args = ["search", *SPACE, *data, *QUICK, "--trials", "3", "--finalists", "1",
            "--seeds", "2", "--name", "lr", "--no-plot"]
    proc = run_pgolf(*args, "--json", cwd=cwd, check_code=0)
    return cwd, args, cwd / "runs" / "searches" / "lr", proc


def test_each_finished_trial_is_a_run_directory_scored_by_its_round_trip(study):
    _, _, folder, proc = study
    trials = pd.read_csv(folder / "trials.csv")
    assert len(trials) == 3 and set(trials["state"]) <= {"complete", "pruned"}
    complete = trials[trials["state"] == "complete"]
    assert len(complete) >= 1  # the first trial has nothing to trail
    for _, row in complete.iterrows():
        summary = json.loads((folder / "trials" / row["run_dir"].rsplit("/", 1)[-1] / "summary.json").read_text())
        assert row["objective"] == summary["val_bpb_roundtrip"]
    for _, row in trials[trials["state"] == "pruned"].iterrows():
        assert (folder / "trials" / row["run_dir"].rsplit("/", 1)[-1] / "checkpoints" / "latest.json").is_file()
    printed = json.loads(proc.stdout)
    assert printed["counts"]["complete"] == len(complete)
    assert printed["best"]["objective"] == complete["objective"].min()


def test_finalists_compare_the_best_config_with_the_defaults_over_seeds(study):
    _, _, folder, proc = study
    cells = json.loads(proc.stdout)["finalists"]
    assert len(cells) == 2 and {c["n_seeds"] for c in cells} == {2}
    base = next(c for c in cells if c["baseline"])
    assert float(base["train.matrix_lr"]) == 0.04  # the space's default is the baseline
    other = next(c for c in cells if not c["baseline"])
    assert other["delta_vs_baseline"] == pytest.approx(other["bpb_mean"] - base["bpb_mean"])
    assert "p_welch" in other and "p_paired" in other


def test_rerun_resumes_trains_nothing_and_bad_input_is_one_line_losing_nothing(study):
    cwd, args, folder, _ = study
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("trials/*/summary.json")}
    before = (folder / "trials.csv").read_text()
    data = [a for a in args if a.startswith("data.")]
    bad = {
        "empty space": ["search", *data, "train.iterations=12"],
        "low above high": ["search", "train.matrix_lr=interval(0.1, 0.01)", *data],
        "log with a bound <= 0": ["search", "train.matrix_lr=tag(log, interval(0, 0.1))", *data],
        "unknown key": ["search", "train.no_such=interval(0, 1)", *data],
        "--trials 0": ["search", *SPACE, *data, "--trials", "0"],
        "another space": ["search", "train.matrix_lr=interval(0.02, 0.09)", *data, *QUICK, "--name", "lr"],
        "no rung fits": ["search", *SPACE, *data, "train.iterations=3", "--pruner", "asha"],
    }
    procs = run_pgolf_each([(args, cwd), (["report", folder, "--csv"], cwd)] + [(b, cwd) for b in bad.values()])
    rerun, report = procs[:2]
    assert "3 trials before" in exited(rerun).stderr
    assert {p: p.stat().st_mtime_ns for p in folder.glob("trials/*/summary.json")} == stamps  # nothing retrained
    assert exited(report).stdout.startswith("number,state,objective")
    for (what, _), proc in zip(bad.items(), procs[2:], strict=True):
        assert proc.returncode in (1, 2), what
        one_line_error(proc)
    assert (folder / "trials.csv").read_text() == before


def test_without_optuna_the_error_is_one_line_naming_the_extra(tmp_path):
    fake = tmp_path / "site" / "optuna"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named optuna')\n")
    proc = run_pgolf("search", *SPACE, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 1
    assert "pgolf[search]" in one_line_error(proc)

"""`pgolf fit-budget` as a user runs it, on the short trained run of the built-in corpus."""

import json

import pytest

from tests.e2e.conftest import one_line_error, run_pgolf

FAST = ["--val-tokens", "2048"]  # the final score uses the run's own data.val_tokens (16384)


@pytest.mark.slow
def test_fit_budget_writes_a_verified_artifact_within_budget(trained_run, data_overrides):
    cwd, summary, _ = trained_run
    run_dir = cwd / summary["run_dir"]
    budget = int(summary["bytes"]["total"] * 0.6)
    proc = run_pgolf("fit-budget", run_dir, "--max-bytes", budget, "--margin", "1KB", "--json", *FAST,
                     cwd=cwd, check_code=0)
    fit = json.loads(proc.stdout)
    artifact = run_dir / "artifacts" / f"fit-{budget}.pgolf"
    assert fit["artifact"] == str(artifact)
    assert artifact.stat().st_size == fit["bytes"]["model"]
    assert fit["bytes"]["total"] <= budget - 1000
    assert sum(row["chosen"] for row in fit["candidates"]) == 1
    assert any(row["frontier"] for row in fit["candidates"])
    csv_lines = (run_dir / "fit" / f"fit-{budget}.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(fit["candidates"])
    rescored = json.loads(run_pgolf("eval", artifact, *data_overrides, "data.val_tokens=16384", "--json", cwd=cwd,
                                    check_code=0).stdout)
    assert rescored["val_bpb"] == pytest.approx(fit["val_bpb_roundtrip"], abs=1e-9)


@pytest.mark.slow
def test_infeasible_budget_exits_3_with_the_smallest_size_and_writes_nothing(trained_run):
    cwd, summary, _ = trained_run
    run_dir = cwd / summary["run_dir"]
    before = sorted(p.name for p in run_dir.rglob("*"))
    proc = run_pgolf("fit-budget", run_dir, "--max-bytes", "60KB", *FAST, cwd=cwd, check_code=3)
    line = one_line_error(proc)
    assert "smallest configuration reachable" in line and "60,000" in line
    assert sorted(p.name for p in run_dir.rglob("*")) == before


@pytest.mark.parametrize(("args", "needle"), [
    (["--max-bytes", "0"], "--max-bytes must be > 0"),
    (["--max-bytes", "-3MB"], "cannot parse size"),
    (["--max-bytes", "lots"], "cannot parse size"),
    (["--max-bytes", "1MB", "--margin", "2MB"], "must be smaller than --max-bytes"),
])
def test_bad_budgets_are_one_line_errors(tmp_path, args, needle):
    proc = run_pgolf("fit-budget", tmp_path, *args, cwd=tmp_path, check_code=1)
    assert needle in one_line_error(proc)


def test_a_source_that_does_not_load_is_one_line_error(tmp_path):
    proc = run_pgolf("fit-budget", tmp_path / "missing.safetensors", "--max-bytes", "1MB", cwd=tmp_path, check_code=1)
    assert "missing.safetensors" in one_line_error(proc)

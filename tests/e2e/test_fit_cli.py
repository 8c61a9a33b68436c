"""`pgolf fit-budget` as a user runs it, on the short trained run of the built-in corpus."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from pgolf import config as C
from pgolf.export.artifact import export_state_dict
from pgolf.export.container import read_container
from pgolf.export.quantize import tensor_group
from pgolf.jobs.float_checkpoint import load_checkpoint
from pgolf.jobs.models import rebuild_model
from pgolf.jobs.roundtrip import calibration_hessians
from pgolf.runtime.device import resolve_device

from .conftest import NARROW_FIT, exited, one_line_error, run_pgolf, run_pgolf_each

FAST = ["--val-tokens", "2048"]  # the final score uses the run's own data.val_tokens (16384)


@pytest.mark.slow
def test_fit_budget_writes_a_verified_artifact_within_budget(trained_run, data_overrides, tmp_path):
    cwd, summary, _ = trained_run
    run_dir = cwd / summary["run_dir"]
    budget = int(summary["bytes"]["total"] * 0.6)
    artifact = run_dir / "artifacts" / f"fit-{budget}.pgolf"
    fitted, rescored, packed = run_pgolf_each([  # the fit, then eval and pack of the artifact it writes
        (["fit-budget", run_dir, "--max-bytes", budget, "--margin", "1KB", "--json", *FAST], cwd),
        (["eval", artifact, *data_overrides, "data.val_tokens=16384", "--json"], cwd),
        (["pack", artifact, "--out", tmp_path / "records", "--json"], cwd)])
    fit = json.loads(exited(fitted).stdout)
    assert fit["artifact"] == str(artifact)
    assert artifact.stat().st_size == fit["bytes"]["model"]
    assert fit["bytes"]["total"] <= budget - 1000
    assert sum(row["chosen"] for row in fit["candidates"]) == 1
    assert any(row["frontier"] for row in fit["candidates"])
    for row in fit["candidates"]:  # only the chosen candidate was written: only its size is a file's
        measured = artifact.stat().st_size if row["chosen"] else None
        assert row["measured_model_bytes"] == measured and row["predicted_model_bytes"] > 0
        assert row["bytes_basis"] == ("measured" if row["chosen"] else "predicted")
        assert row["total_bytes"] == (measured or row["predicted_model_bytes"]) + row["code_bytes"]
        if row["chosen"]:  # its script measured; the others' code is their setting's reserve (codec, GPTQ)
            assert row["code_bytes"] == fit["bytes"]["code"]
    csv_lines = (run_dir / "fit" / f"fit-{budget}.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(fit["candidates"])
    assert "predicted_model_bytes,measured_model_bytes" in csv_lines[0] and ",model_bytes," not in csv_lines[0]
    rescored = json.loads(exited(rescored).stdout)
    assert rescored["val_bpb"] == pytest.approx(fit["val_bpb_roundtrip"], abs=1e-9)
    # the code bytes fit-budget counted are those of the train_gpt.py pack ships for the chosen config
    packed = json.loads(exited(packed).stdout)
    assert packed["bytes_code"] == fit["bytes"]["code"] == (tmp_path / "records" / "train_gpt.py").stat().st_size
    assert packed["bytes_total"] == fit["bytes"]["total"]
    assert packed["val_bpb"] == fit["val_bpb_roundtrip"]


@pytest.mark.slow
def test_infeasible_budget_exits_3_with_the_smallest_size_and_writes_nothing(trained_run):
    cwd, summary, _ = trained_run
    run_dir = cwd / summary["run_dir"]
    before = sorted(p.name for p in run_dir.rglob("*"))
    proc = run_pgolf("fit-budget", run_dir, "--max-bytes", "60KB", *FAST, *NARROW_FIT, cwd=cwd, check_code=3)
    line = one_line_error(proc)
    assert "smallest configuration reachable" in line and "60,000" in line
    assert sorted(p.name for p in run_dir.rglob("*")) == before


@pytest.mark.slow
def test_fit_space_overrides_shape_the_search_and_raised_tensors_spend_the_leftover(trained_run, monkeypatch):
    """Widths 2 and 8 only, no pruning, a budget one and a half single-tensor raises above all-int2: the uniform
    int2 anchor leaves room that only single-tensor raises can use."""
    cwd, summary, _ = trained_run
    run_dir = cwd / summary["run_dir"]
    model_config, state = load_checkpoint(run_dir / "model.safetensors")
    int2 = dataclasses.replace(C.ExportConfig(), bits=2, group_bits=C.GroupBits(embed=2), codec="rans")
    all2 = export_state_dict(state, model_config, int2).model_bytes
    one_raise = export_state_dict(state, model_config, dataclasses.replace(
        int2, tensor_bits={"blocks.0.attn.c_k.weight": 8})).model_bytes
    budget = all2 + summary["bytes"]["code"] + (one_raise - all2) * 3 // 2
    proc = run_pgolf("fit-budget", run_dir, "--max-bytes", budget, "fit.bits=[2,8]", "fit.embed_bits=[2,8]",
                     "fit.max_prune=0", "fit.evals=4", "--json", *FAST, cwd=cwd, check_code=0)
    fit = json.loads(proc.stdout)
    rows = fit["candidates"]
    for row in rows:  # "e2 q8 ... [k0=8] mse rans": group widths, then raised tensors
        tokens = row["config"].replace("[", "").replace("]", "").split()
        widths = {t.split("=")[1] if "=" in t else t[1:] for t in tokens if re.fullmatch(r"[eqkvoimx]\d|\S+=\d", t)}
        assert widths <= {"2", "8"} and len(widths) > 0 and "prune" not in row["config"], row["config"]
    uniform = next(row for row in rows if row["origin"] == "uniform")
    raised = [row for row in rows if row["origin"].endswith("+bits")]
    assert raised and all(uniform["total_bytes"] < row["total_bytes"] <= budget for row in raised)
    assert fit["bytes"]["total"] <= budget
    assert fit["val_bpb_roundtrip"] > 0 and min(row["val_bpb"] for row in rows) == next(
        row["val_bpb"] for row in rows if row["chosen"])

    artifact = Path(fit["artifact"]).read_bytes()
    export = fit["export"]
    for record in read_container(artifact)[0]["tensors"]:
        if record["kind"] == "quant":
            name = record["name"]
            assert record["bits"] == export["tensor_bits"].get(name, export["group_bits"][tensor_group(name)]), name
    saved = C.load_yaml(Path(fit["config"]))
    assert saved.export.tensor_bits == export["tensor_bits"]
    hessians = None
    if saved.export.gptq:  # measured again from the saved config, as `pgolf export` measures them
        monkeypatch.chdir(cwd)
        hessians = calibration_hessians(rebuild_model(model_config, state, where=run_dir), saved,
                                        resolve_device("cpu"))
    # the saved config reproduces it
    assert export_state_dict(state, model_config, saved.export, hessians=hessians).blob == artifact


BAD_FITS = [
    (["fit.bits=[]"], "fit.bits is empty: the search space has no candidates"),
    (["fit.max_prune=2", "fit.evals=0"], "fit.max_prune must be in [0, 1), got 2.0; fit.evals must be >= 1"),
    (["--val-tokens", "-1"], "fit.val_tokens must be >= 0"),
    (["export.tensor_bits={blocks.0.mlp.fc.weight:9}"], "export.tensor_bits[blocks.0.mlp.fc.weight]"),
    (["--max-bytes", "0"], "--max-bytes must be > 0"),
    (["--max-bytes", "-3MB"], "cannot parse size"),
    (["--max-bytes", "lots"], "cannot parse size"),
    (["--max-bytes", "1MB", "--margin", "2MB"], "must be smaller than --max-bytes"),
]


@pytest.fixture(scope="module")
def bad_fits(tmp_path_factory):
    """Each bad fit-budget of BAD_FITS (source and cwd: an empty folder of its own), and one of a source that does
    not exist, run in turn in one interpreter; the last is the missing source's."""
    commands = []
    for args, _ in BAD_FITS:
        if "--max-bytes" not in args:
            args = [*args, "--max-bytes", "1MB"]
        cwd = tmp_path_factory.mktemp("fit")
        commands.append((["fit-budget", cwd, *args], cwd))
    cwd = tmp_path_factory.mktemp("fit")
    commands.append((["fit-budget", cwd / "missing.safetensors", "--max-bytes", "1MB"], cwd))
    return run_pgolf_each(commands)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle"), BAD_FITS)
def test_bad_budgets_and_search_spaces_are_one_line_errors(bad_fits, args, needle):
    proc = bad_fits[BAD_FITS.index((args, needle))]
    assert proc.returncode == 1, proc.stderr
    assert needle in one_line_error(proc)


@pytest.mark.slow
def test_a_source_that_does_not_load_is_one_line_error(bad_fits):
    proc = bad_fits[-1]
    assert proc.returncode == 1, proc.stderr
    assert "missing.safetensors" in one_line_error(proc)

"""`pgolf export` as a user runs it: per-group table, artifact in the run, round trip, bad input."""

import json
from pathlib import Path

import pytest

from .conftest import one_line_error, run_pgolf

pytestmark = pytest.mark.slow


def test_export_a_run_writes_a_scored_artifact_from_the_float_weights(trained_run):
    cwd, summary, _ = trained_run
    run_dir = cwd / summary["run_dir"]
    proc = run_pgolf("export", run_dir, "export.bits=5", "export.codec=rans", "--json", cwd=cwd, check_code=0)
    result = json.loads(proc.stdout)
    artifact = Path(result["artifact"])
    assert artifact.parent == run_dir / "artifacts" and artifact.name.startswith("int5-mse-rans-")
    assert result["bytes"]["model"] == artifact.stat().st_size
    assert result["val_bpb"] == pytest.approx(summary["val_bpb"], rel=1e-9)  # float weights, not an artifact
    assert result["val_bpb_roundtrip"] > result["val_bpb"] - 1e-3
    groups = {g["group"]: g for g in result["export_groups"]}
    assert groups["mlp_in"]["bits"] == 5 and groups["embed"]["bits"] == 8
    assert sum(g["params"] for g in groups.values()) == result["params"]
    assert result["bytes"]["model"] < summary["bytes"]["model"]  # 5-bit matrices code smaller than 6-bit


def test_exports_that_differ_only_in_group_bits_do_not_overwrite_each_other(trained_run):
    cwd, summary, _ = trained_run
    paths = []
    for mlp_bits in (5, 7, 5):
        proc = run_pgolf("export", cwd / summary["run_dir"], "export.codec=zlib",
                         f"export.group_bits.mlp_in={mlp_bits}", "--json", cwd=cwd, check_code=0)
        paths.append(Path(json.loads(proc.stdout)["artifact"]))
    assert paths[0] != paths[1] and paths[0] == paths[2]  # same config, same name; another config, another file
    assert paths[0].is_file() and paths[1].is_file()


def test_gptq_export_beats_rounding_on_the_same_grid(trained_run, tmp_path):
    cwd, summary, _ = trained_run
    scores = {}
    for gptq in ("false", "true"):
        proc = run_pgolf("export", cwd / summary["run_dir"], "export.bits=4", f"export.gptq={gptq}",
                         "export.gptq_tokens=4096", "--out", tmp_path / f"gptq-{gptq}.pgolf", "--json", cwd=cwd,
                         check_code=0)
        scores[gptq] = json.loads(proc.stdout)["val_bpb_roundtrip"]
    assert scores["true"] < scores["false"]


def test_export_table_is_printed_for_people(trained_run, tmp_path):
    cwd, summary, _ = trained_run
    out = tmp_path / "ref.pgolf"
    proc = run_pgolf("export", cwd / summary["run_dir"], "export=int8_zlib", "--out", out, cwd=cwd, check_code=0)
    assert "export by tensor group" in proc.stdout and "zlib" in proc.stdout
    assert out.is_file()


@pytest.mark.parametrize("override,fragment", [
    ("export.bits=9", "export.bits"),
    ("export.codec=snappy", "export.codec"),
    ("export.prune_kind=random", "export.prune_kind"),
    ("export.tensor_bits={blocks.9.mlp.fc.weight:6}", "'blocks.9.mlp.fc.weight', which is not a tensor of this model"),
    ("export.gptq_damp=0", "export.gptq_damp"),
])
def test_bad_export_input_is_a_one_line_error(trained_run, override, fragment):
    cwd, summary, _ = trained_run
    proc = run_pgolf("export", cwd / summary["run_dir"], override, cwd=cwd)
    assert proc.returncode == 1 and fragment in one_line_error(proc)


def test_export_of_a_missing_source_is_a_one_line_error(tmp_path):
    proc = run_pgolf("export", tmp_path / "nothing.safetensors", cwd=tmp_path)
    assert proc.returncode == 1 and "nothing.safetensors" in one_line_error(proc)

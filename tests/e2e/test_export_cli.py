"""`pgolf export` as a user runs it: per-group table, artifact in the run, round trip, bad input."""

import json
from pathlib import Path

import pytest

from .conftest import exited, one_line_error, run_pgolf_each

pytestmark = pytest.mark.slow

BAD_EXPORTS = [
    ("export.bits=9", "export.bits"),
    ("export.codec=snappy", "export.codec"),
    ("export.prune_kind=random", "export.prune_kind"),
    ("export.tensor_bits={blocks.9.mlp.fc.weight:6}", "'blocks.9.mlp.fc.weight', which is not a tensor of this model"),
    ("export.gptq_damp=0", "export.gptq_damp"),
]


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory):
    """Every export these tests read, of the shared run, run in turn in one interpreter: name -> CompletedProcess."""
    cwd, summary, _ = trained_run
    run_dir = cwd / summary["run_dir"]
    out = tmp_path_factory.mktemp("exports")
    commands = {
        "rans5": ["export", run_dir, "export.bits=5", "export.codec=rans", "--json"],
        **{f"mlp_in{i}": ["export", run_dir, "export.codec=zlib", f"export.group_bits.mlp_in={bits}", "--json"]
           for i, bits in enumerate((5, 7, 5))},
        **{f"gptq-{gptq}": ["export", run_dir, "export.bits=4", f"export.gptq={gptq}", "export.gptq_tokens=4096",
                            "--out", out / f"gptq-{gptq}.pgolf", "--json"] for gptq in ("false", "true")},
        "table": ["export", run_dir, "export=int8_zlib", "--out", out / "ref.pgolf"],
        **{override: ["export", run_dir, override] for override, _ in BAD_EXPORTS},
    }
    procs = run_pgolf_each([(args, cwd) for args in commands.values()]
                           + [(["export", out / "nothing.safetensors"], out)])
    return {**dict(zip(commands, procs[:-1], strict=True)), "missing": procs[-1], "out": out}


def test_export_a_run_writes_a_scored_artifact_from_the_float_weights(trained_run, exports):
    cwd, summary, _ = trained_run
    run_dir = cwd / summary["run_dir"]
    result = json.loads(exited(exports["rans5"]).stdout)
    artifact = Path(result["artifact"])
    assert artifact.parent == run_dir / "artifacts" and artifact.name.startswith("int5-mse-rans-")
    assert result["bytes"]["model"] == artifact.stat().st_size
    assert result["val_bpb"] == pytest.approx(summary["val_bpb"], rel=1e-9)  # float weights, not an artifact
    assert result["val_bpb_roundtrip"] > result["val_bpb"] - 1e-3
    groups = {g["group"]: g for g in result["export_groups"]}
    assert groups["mlp_in"]["bits"] == 5 and groups["embed"]["bits"] == 8
    assert sum(g["params"] for g in groups.values()) == result["params"]
    assert result["bytes"]["model"] < summary["bytes"]["model"]  # 5-bit matrices code smaller than 6-bit


def test_exports_that_differ_only_in_group_bits_do_not_overwrite_each_other(exports):
    paths = [Path(json.loads(exited(exports[f"mlp_in{i}"]).stdout)["artifact"]) for i in range(3)]  # 5, 7, 5
    assert paths[0] != paths[1] and paths[0] == paths[2]  # same config, same name; another config, another file
    assert paths[0].is_file() and paths[1].is_file()


def test_gptq_export_beats_rounding_on_the_same_grid(exports):
    scores = {gptq: json.loads(exited(exports[f"gptq-{gptq}"]).stdout)["val_bpb_roundtrip"]
              for gptq in ("false", "true")}
    assert scores["true"] < scores["false"]


def test_export_table_is_printed_for_people(exports):
    proc = exited(exports["table"])
    assert "export by tensor group" in proc.stdout and "zlib" in proc.stdout
    assert (exports["out"] / "ref.pgolf").is_file()


@pytest.mark.parametrize("override,fragment", BAD_EXPORTS)
def test_bad_export_input_is_a_one_line_error(exports, override, fragment):
    proc = exports[override]
    assert proc.returncode == 1 and fragment in one_line_error(proc)


def test_export_of_a_missing_source_is_a_one_line_error(exports):
    proc = exports["missing"]
    assert proc.returncode == 1 and "nothing.safetensors" in one_line_error(proc)

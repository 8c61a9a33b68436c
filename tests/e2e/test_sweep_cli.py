"""`pgolf sweep` and `pgolf report` as a user runs them: a grid of tiny trainings, re-run, extended, read by the other
verbs; bad input gives one line. Sweeps killed, interrupted, failing or in parallel: test_sweep_runs.py."""

import json
import os
import sys

import pandas as pd
import pytest

from pgolf import cli

from .conftest import copy_of, exited, one_line_error, results, run_pgolf, run_pgolf_each, sweep_folder

pytestmark = pytest.mark.slow

REQUIRED = ["seed", "status", "error", "params", "model_bytes", "code_bytes", "total_bytes", "headroom_bytes",
            "val_bpb", "val_bpb_roundtrip", "steps", "train_time_s", "tokens_per_s", "artifact", "run_dir"]



@pytest.fixture(scope="module")
def grid_reruns(grid_sweep):
    """On the shared grid (conftest's grid_sweep), run in turn in one interpreter: the same sweep again, another grid
    in its folder, eval and report of its first cell; and results.csv as it was before them."""
    cwd, args, _ = grid_sweep
    folder = sweep_folder(cwd)
    before = (folder / "results.csv").read_bytes()
    other = [a if a != "reg.weight_decay=0,0.04" else "reg.weight_decay=0.04,0.09" for a in args]
    cell = next((folder / "cells").iterdir())
    procs = run_pgolf_each([(args, cwd), (other, cwd), (["eval", cell, "data.val_tokens=8192", "--json"], cwd),
                            (["report", cell, "--csv"], cwd)])
    return before, dict(zip(["rerun", "other grid", "eval", "report"], procs, strict=True))


def test_a_grid_trains_once_per_training_value_and_exports_every_point(grid_sweep):
    cwd, _, proc = grid_sweep
    folder = sweep_folder(cwd)
    cells = sorted(p.name for p in (folder / "cells").iterdir())
    assert len(cells) == 2  # 2 decays x 2 prunes: two trainings, not four
    frame = results(folder)
    assert len(frame) == 2 * 3  # per training: two export points and one fit-budget
    assert set(REQUIRED + ["reg.weight_decay", "export.prune", "point", "cell"]) <= set(frame.columns)
    assert (frame["status"] == "ok").all()
    assert set(frame["point"]) == {"export.prune=0", "export.prune=0.05", "fit-420000"}
    assert (frame["total_bytes"] == frame["model_bytes"] + frame["code_bytes"]).all()
    fit = frame[frame["point"] == "fit-420000"]
    assert (fit["total_bytes"] <= 420_000).all() and (fit["headroom_bytes"] == 420_000 - fit["total_bytes"]).all()
    for _, row in frame.iterrows():
        assert (cwd / row["artifact"]).is_file() or os.path.isfile(row["artifact"])
        assert row["run_dir"].endswith(row["cell"])
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "results.parquet")[["val_bpb_roundtrip", "total_bytes"]],
                                  frame[["val_bpb_roundtrip", "total_bytes"]], check_dtype=False)
    assert not (cwd / "runs" / "latest").exists()  # sweep cells never move runs/latest
    table = json.loads(proc.stdout)  # --json: the per-cell table alone on stdout
    assert len(table) == 6 and {"n_seeds", "bpb_mean", "bpb_std", "delta_vs_baseline", "p_welch", "p_paired",
                                "reg.weight_decay", "total_bytes"} <= set(table[0])
    assert (folder / "sweep.yaml").is_file() and (folder / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_each_cell_is_a_run_directory_the_other_verbs_read(grid_reruns):
    _, procs = grid_reruns
    assert json.loads(exited(procs["eval"]).stdout)["val_bpb"] > 0
    proc = exited(procs["report"])
    assert proc.stdout.splitlines()[0].split(",")[0] and "bpb_mean" in proc.stdout.splitlines()[0]


def test_rerunning_runs_nothing_and_keeps_the_results(grid_sweep, grid_reruns):
    cwd, _, _ = grid_sweep
    folder = sweep_folder(cwd)
    before, procs = grid_reruns
    proc = exited(procs["rerun"])
    assert "2 finished before, 0 to run" in proc.stderr
    assert (folder / "results.csv").read_bytes() == before


def test_another_grid_in_the_same_folder_is_refused_and_loses_nothing(grid_sweep, grid_reruns):
    cwd, _, _ = grid_sweep
    folder = sweep_folder(cwd)
    before, procs = grid_reruns
    proc = procs["other grid"]
    assert proc.returncode == 1 and "another grid" in one_line_error(proc)
    assert (folder / "results.csv").read_bytes() == before


def test_adding_a_value_extends_the_sweep(grid_sweep, tmp_path):
    _, args, _ = grid_sweep
    cwd = copy_of(tmp_path, grid_sweep[0])  # the shared grid stays as it is
    folder = sweep_folder(cwd)
    before = results(folder)
    wider = [a if a != "reg.weight_decay=0,0.04" else "reg.weight_decay=0,0.04,0.09" for a in args]
    proc = run_pgolf(*wider, cwd=cwd, check_code=0)
    assert "2 finished before, 1 to run" in proc.stderr
    after = results(folder)
    assert len(after) == 9 and sweep_folder(cwd) == folder
    pd.testing.assert_frame_equal(after.iloc[:6], before)


BAD_SWEEPS = [
    (["reg.weight_decay=0,0.04", "--jobs", "0"], 2, "--jobs"),
    (["reg.weight_decay=0,0.04", "--seeds", "0"], 2, "--seeds"),
    (["reg.weight_decay=0,0.04", "--launcher", "cloud"], 2, "--launcher"),
    (["reg.weight_decay=0,,1"], 1, "bad override"),
    ([], 2, "empty grid"),
]


@pytest.fixture(scope="module")
def quick_sweeps(tmp_path_factory, builtin_data):
    """The commands below that train nothing, each in a folder of its own, run in turn in one interpreter: the dry
    run, each of BAD_SWEEPS, a report on an empty folder; name -> (CompletedProcess, its cwd)."""
    data = [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]
    commands = {"dry run": ["sweep", "reg.weight_decay=0,0.04,0.09", "export.prune=0,0.02", *data, "--seeds", "2",
                            "--max-bytes", "16MB", "--dry-run", "--json"],
                **{f"bad{i}": ["sweep", *args] for i, (args, _, _) in enumerate(BAD_SWEEPS)}}
    cwds = {name: tmp_path_factory.mktemp("sweep") for name in [*commands, "report"]}
    (cwds["report"] / "empty").mkdir()
    commands["report"] = ["report", cwds["report"] / "empty"]
    procs = run_pgolf_each([(args, cwds[name]) for name, args in commands.items()])
    return {name: (proc, cwds[name]) for name, proc in zip(commands, procs, strict=True)}


def test_dry_run_prints_the_plan_and_runs_nothing(quick_sweeps):
    proc, cwd = quick_sweeps["dry run"]
    plan = json.loads(exited(proc).stdout)
    assert (plan["trainings"], plan["exports_per_training"], plan["fit_budgets"], plan["rows"]) == (6, 2, 6, 18)
    assert not (cwd / "runs").exists()


@pytest.mark.parametrize("args, code, words", BAD_SWEEPS)
def test_bad_sweep_input_is_one_line(quick_sweeps, args, code, words):
    proc, _ = quick_sweeps[f"bad{BAD_SWEEPS.index((args, code, words))}"]
    assert proc.returncode == code and words in one_line_error(proc)


def test_submitit_missing_names_the_extra(tmp_path, monkeypatch, capsys, data_overrides):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sweep", "reg.weight_decay=0,0.04", *data_overrides, "--launcher", "submitit"])
    assert exit_info.value.code == 2 and "pgolf[submitit]" in capsys.readouterr().err
    assert not list((tmp_path / "runs" / "sweeps").glob("*/cells/*"))


def test_report_on_a_folder_without_results_is_one_line(quick_sweeps):
    proc, _ = quick_sweeps["report"]
    assert proc.returncode == 1 and "empty" in one_line_error(proc)

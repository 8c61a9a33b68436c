"""report.py: sweeps and run directories become one cell table; seeds aggregated, baselines paired by seed."""

import io
import json
import math
import os

import pandas as pd
import pytest
from rich.console import Console
from scipy import stats

from pgolf.errors import ConfigError, DataError, PgolfError
from pgolf.results import report as R
from pgolf.results import tables as T

CODE = 50_000


def _row(wd, prune, seed, bpb, model_bytes, status="ok"):
    failed = status != "ok"
    return {"reg.weight_decay": wd, "export.prune": prune, "seed": seed,
            "point": f"export.prune={prune}", "cell": f"wd{wd}-s{seed}", "status": status,
            "error": "nan loss" if failed else "", "params": 1000,
            "model_bytes": math.nan if failed else model_bytes, "code_bytes": math.nan if failed else CODE,
            "total_bytes": math.nan if failed else model_bytes + CODE, "headroom_bytes": math.nan,
            "val_bpb": math.nan if failed else bpb - 0.01, "val_bpb_roundtrip": math.nan if failed else bpb,
            "steps": 10, "train_time_s": 1.0, "tokens_per_s": 1e4, "artifact": "a.pgolf",
            "run_dir": f"cells/wd{wd}-s{seed}", "export_time_s": 0.5, "wall_time_s": 2.0}


# wd=0 is the baseline; wd=0.04 is better by a seed-dependent amount at both prune values.
BASE = {1: 1.500, 2: 1.520, 3: 1.490}
BETTER = {1: 1.480, 2: 1.505, 3: 1.482}


def _sweep_rows():
    rows = []
    for prune, shift, size in (("0", 0.0, 900_000), ("0.02", 0.01, 800_000)):
        for seed in (1, 2, 3):
            rows.append(_row("0", prune, seed, BASE[seed] + shift, size + 10_000))
            rows.append(_row("0.04", prune, seed, BETTER[seed] + shift, size))
    return rows


def write_sweep(folder, rows, baseline=None, max_bytes=1_000_000):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.yaml").write_text(
        "name: s\naxes:\n  reg.weight_decay: ['0', '0.04']\n  export.prune: ['0', '0.02']\n"
        "train_axes: [reg.weight_decay]\nexport_axes: [export.prune]\nseeds: [1, 2, 3]\nbase: []\n"
        f"baseline: {json.dumps(baseline or {})}\nmax_bytes: {max_bytes}\nmargin: 0\n")
    T.write_parquet(pd.DataFrame(rows), folder / "results.parquet")
    T.write_csv(pd.DataFrame(rows), folder / "results.csv")
    return folder


def write_run(run_dir, seed, bpb, wd=0.0, fits=(), error=None):
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        f"run:\n  name: {run_dir.name}\n  root: runs\nreg:\n  weight_decay: {wd}\n  ema: false\n"
        f"train:\n  lr: 0.01\n  schedule: [1, 2]\nseed: {seed}\n")
    summary = {"run_dir": str(run_dir), "name": run_dir.name, "seed": seed, "params": 1000, "steps": 10,
               "train_time_s": 1.0, "tokens_per_s": 1e4, "wall_time_s": 2.0}
    if error:
        summary["error"] = error
    else:
        summary.update({"val_bpb": bpb - 0.01, "val_bpb_roundtrip": bpb, "artifact": "a.pgolf",
                        "bytes": {"model": 500_000, "code": CODE, "total": 550_000}})
    (run_dir / "summary.json").write_text(json.dumps(summary))
    for max_bytes, fit_bpb in fits:
        (run_dir / "fit").mkdir(exist_ok=True)
        (run_dir / "fit" / f"fit-{max_bytes}.json").write_text(json.dumps({
            "max_bytes": max_bytes, "bytes": {"model": max_bytes - CODE - 100, "code": CODE, "total": max_bytes - 100},
            "headroom_bytes": 100, "val_bpb": bpb - 0.01, "val_bpb_roundtrip": fit_bpb, "artifact": "fit.pgolf",
            "params": 1000, "wall_time_s": 3.0}))
    return run_dir


def _cell(cells, **values):
    mask = pd.Series(True, index=cells.index)
    for key, value in values.items():
        mask &= cells[key.replace("__", ".")] == value
    (index,) = cells.index[mask]
    return cells.loc[index]


def test_a_sweep_folder_aggregates_seeds_per_cell(tmp_path):
    results = R.load_results([write_sweep(tmp_path / "sw", _sweep_rows())])
    assert results.keys == ["reg.weight_decay", "export.prune"] and results.max_bytes == 1_000_000
    cells = R.cell_table(results)
    assert len(cells) == 4 and set(cells["n_seeds"]) == {3} and set(cells["seeds"]) == {"1,2,3"}
    cell = _cell(cells, reg__weight_decay="0.04", export__prune="0")
    values = list(BETTER.values())
    assert cell["bpb_mean"] == pytest.approx(sum(values) / 3)
    assert cell["bpb_std"] == pytest.approx(pd.Series(values).std(ddof=1))
    assert cell["total_bytes"] == 950_000 and cell["code_bytes"] == CODE and cell["headroom_bytes"] == 50_000
    assert cell["val_bpb_float_mean"] == pytest.approx(cell["bpb_mean"] - 0.01)


def test_p_values_are_scipys_one_sided_tests_against_the_baseline(tmp_path):
    cells = R.cell_table(R.load_results([write_sweep(tmp_path / "sw", _sweep_rows())]))
    # no baseline in sweep.yaml: the first cell (wd=0, prune=0) is every cell's baseline
    base = _cell(cells, reg__weight_decay="0", export__prune="0")
    assert base["baseline"] and base["delta_vs_baseline"] == 0 and math.isnan(base["p_welch"])
    cell = _cell(cells, reg__weight_decay="0.04", export__prune="0")
    a, b = list(BETTER.values()), list(BASE.values())
    assert cell["delta_vs_baseline"] == pytest.approx(sum(a) / 3 - sum(b) / 3)
    assert cell["p_welch"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
    assert cell["p_paired"] == pytest.approx(stats.ttest_rel(a, b, alternative="less").pvalue)
    assert cell["p_paired"] < 0.05 and not cell["baseline"]


def test_paired_test_matches_seeds_whatever_the_row_order(tmp_path):
    rows = _sweep_rows()
    shuffled = [rows[i] for i in (7, 2, 11, 0, 5, 9, 3, 10, 1, 6, 4, 8)]
    cells = R.cell_table(R.load_results([write_sweep(tmp_path / "sw", shuffled)]),
                         baseline={"reg.weight_decay": "0.0"})  # "0.0" names the cell "0"
    a, b = list(BETTER.values()), list(BASE.values())
    cell = _cell(cells, reg__weight_decay="0.04", export__prune="0")
    assert cell["p_paired"] == pytest.approx(stats.ttest_rel(a, b, alternative="less").pvalue)
    mismatched = stats.ttest_rel(a, b[1:] + b[:1], alternative="less").pvalue
    assert cell["p_paired"] != pytest.approx(mismatched)


def test_a_baseline_key_compares_at_the_same_other_key_values(tmp_path):
    cells = R.cell_table(R.load_results([write_sweep(tmp_path / "sw", _sweep_rows(),
                                                     baseline={"reg.weight_decay": "0"})]))
    assert cells["baseline"].sum() == 2  # wd=0 at prune 0 and at prune 0.02
    pruned = _cell(cells, reg__weight_decay="0.04", export__prune="0.02")
    assert pruned["delta_vs_baseline"] == pytest.approx(
        (sum(BETTER.values()) - sum(BASE.values())) / 3)  # the prune shift cancels: compared at prune 0.02


def test_failed_seeds_are_counted_not_scored(tmp_path):
    rows = _sweep_rows() + [_row("0.04", "0", 4, 0.0, 0, status="failed")]
    cell = _cell(R.cell_table(R.load_results([write_sweep(tmp_path / "sw", rows)])),
                 reg__weight_decay="0.04", export__prune="0")
    assert cell["n_seeds"] == 3 and cell["n_failed"] == 1 and cell["seeds"] == "1,2,3"


def test_pareto_marks_budget_and_sort(tmp_path):
    rows = _sweep_rows()
    for row in rows:  # wd=0 at prune 0: over a 950,000-byte budget
        if row["reg.weight_decay"] == "0" and row["export.prune"] == "0":
            row["total_bytes"] = 960_000 + 0 * row["total_bytes"]
    cells = R.cell_table(R.load_results([write_sweep(tmp_path / "sw", rows)]), max_bytes=950_000)
    assert cells["within_budget"].tolist() == [True, True, True, False]
    assert cells["bpb_mean"].iloc[:3].is_monotonic_increasing
    expected = T.pareto_front(cells["total_bytes"].astype(float), cells["bpb_mean"])
    assert cells["frontier"].tolist() == expected
    # wd=0.04 prune=0 (950,000) and wd=0.04 prune=0.02 (850,000, higher BPB) are the undominated pair
    assert set(zip(cells.loc[cells["frontier"], "reg.weight_decay"], cells.loc[cells["frontier"], "export.prune"])) \
        == {("0.04", "0"), ("0.04", "0.02")}
    assert cells.loc[~cells["within_budget"], "headroom_bytes"].tolist() == [-10_000]


def test_csv_results_read_like_parquet(tmp_path):
    folder = write_sweep(tmp_path / "sw", _sweep_rows())
    from_parquet = R.cell_table(R.load_results([folder]))
    (folder / "results.parquet").unlink()
    from_csv = R.cell_table(R.load_results([folder]))
    pd.testing.assert_frame_equal(from_csv, from_parquet)


def test_run_dirs_contribute_their_training_and_fit_rows(tmp_path):
    runs = tmp_path / "runs" / "2026-11-30"
    for seed, (bpb, fit_bpb) in {1: (1.50, 1.55), 2: (1.52, 1.56)}.items():
        write_run(runs / f"12-00-0{seed}-wd0-s{seed}", seed, bpb, wd=0.0, fits=[(400_000, fit_bpb)])
    for seed, bpb in {1: 1.45, 2: 1.49}.items():
        write_run(runs / f"13-00-0{seed}-wd4-s{seed}", seed, bpb, wd=0.04, fits=[(400_000, bpb + 0.05)])
    write_run(runs / "14-00-00-broken", 3, 0.0, wd=0.04, error="NaN loss at step 3")
    os.symlink("2026-11-30/13-00-02-wd4-s2", tmp_path / "runs" / "latest")

    results = R.load_results([tmp_path / "runs"])
    assert results.keys == ["reg.weight_decay"]  # run.name and seed differ too, but are not swept keys
    assert len(results.rows) == 9  # 5 trainings (latest not counted twice) + 4 fits
    cells = R.cell_table(results)
    assert sorted(cells["point"].unique()) == ["fit-400000", "train"]
    train = _cell(cells, reg__weight_decay="0.04", point="train")
    assert train["n_seeds"] == 2 and train["n_failed"] == 1 and train["bpb_mean"] == pytest.approx(1.47)
    fit = _cell(cells, reg__weight_decay="0.04", point="fit-400000")
    assert fit["total_bytes"] == 399_900 and fit["bpb_mean"] == pytest.approx(1.52)
    # without --baseline each point compares with its own first cell (wd=0)
    assert cells.loc[cells["baseline"], "reg.weight_decay"].tolist() == ["0.0", "0.0"]
    assert fit["p_paired"] == pytest.approx(stats.ttest_rel([1.50, 1.54], [1.55, 1.56], alternative="less").pvalue)


def test_by_picks_keys_and_unknown_keys_are_config_errors(tmp_path):
    write_run(tmp_path / "a", 1, 1.5, wd=0.0)
    write_run(tmp_path / "b", 2, 1.4, wd=0.04)
    results = R.load_results([tmp_path])
    report = R.build_report([tmp_path])  # no sweep, no --max-bytes: headroom against the challenge's 16MB
    assert report.keys == ["reg.weight_decay"] and report.max_bytes == 16_000_000
    assert report.cells["headroom_bytes"].tolist() == [16_000_000 - 550_000] * 2
    cells = R.cell_table(results, by=["train.lr"])  # same lr everywhere: one cell, two seeds
    assert len(cells) == 1 and cells["n_seeds"].iloc[0] == 2 and cells["seeds"].iloc[0] == "1,2"
    with pytest.raises(ConfigError, match="--by nope"):
        R.cell_table(results, by=["nope"])
    with pytest.raises(ConfigError, match="--baseline train.lr"):
        R.cell_table(results, baseline={"train.lr": "0.01"})
    with pytest.raises(ConfigError, match="no cell has these values"):
        R.cell_table(results, baseline={"reg.weight_decay": "0.5"})


def test_a_sweep_below_a_folder_counts_once_as_a_sweep(tmp_path):
    folder = write_sweep(tmp_path / "runs" / "sweeps" / "s", _sweep_rows())
    write_run(folder / "cells" / "wd0-s1", 1, 9.9)  # a cell's own run dir: already in results
    write_run(tmp_path / "runs" / "2026-11-30" / "loose", 1, 1.4)
    results = R.load_results([tmp_path / "runs"])
    assert len(results.rows) == 12 + 1
    assert 9.9 not in results.rows["val_bpb_roundtrip"].tolist()


def test_a_folder_without_results_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        R.load_results([tmp_path / "empty"])
    assert str(tmp_path / "empty") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(PgolfError, match="no such"):
        R.load_results([tmp_path / "missing"])


def test_cell_table_csv_and_json_round_trip(tmp_path):
    report = R.build_report([write_sweep(tmp_path / "sw", _sweep_rows())], baseline={"reg.weight_decay": "0"})
    cells = report.cells
    back_csv = pd.read_csv(io.StringIO(T.csv_text(cells)), dtype={k: str for k in report.keys})
    pd.testing.assert_frame_equal(back_csv, cells, check_dtype=False)
    records = json.loads(T.json_text(cells))
    assert [r["bpb_mean"] for r in records] == cells["bpb_mean"].tolist()
    base = next(r for r in records if r["baseline"])
    assert base["p_welch"] is None and base["delta_vs_baseline"] == 0 and base["total_bytes"] == 960_000


def test_rich_table_marks_frontier_baseline_and_budget(tmp_path):
    report = R.build_report([write_sweep(tmp_path / "sw", _sweep_rows())], max_bytes=900_000)
    console = Console(file=io.StringIO(), width=240, record=True)
    console.print(T.cells_table(report.cells, report.keys, report.max_bytes, "pgolf report"))
    text = console.export_text()
    assert "budget 900,000 bytes" in text and "baseline" in text and "960,000" in text
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if "0.04" in line and "850,000" in line)
    assert lines[first].lstrip("│ ").startswith("*")


def test_parse_baseline():
    assert R.parse_baseline(["reg.weight_decay=0", "export.prune=0.02"]) == {"reg.weight_decay": "0",
                                                                            "export.prune": "0.02"}
    with pytest.raises(ConfigError, match="key=value"):
        R.parse_baseline(["reg.weight_decay"])


def test_without_a_baseline_every_export_cell_compares_with_the_first_and_fit_rows_with_the_first_fit(tmp_path):
    rows = _sweep_rows()
    for seed in (1, 2, 3):
        for wd, bpb in (("0", 1.60), ("0.04", 1.58)):
            rows.append({**_row(wd, None, seed, bpb + seed / 1000, 900_000), "point": "fit-1000000"})
    cells = R.cell_table(R.load_results([write_sweep(tmp_path / "sw", rows)]))
    first = _cell(cells, reg__weight_decay="0", export__prune="0")
    pruned = _cell(cells, reg__weight_decay="0", export__prune="0.02")
    assert pruned["delta_vs_baseline"] == pytest.approx(pruned["bpb_mean"] - first["bpb_mean"])
    fits = cells[cells["point"] == "fit-1000000"]
    assert list(fits.sort_values("reg.weight_decay")["delta_vs_baseline"]) == pytest.approx([0.0, -0.02])
    assert cells["baseline"].sum() == 2  # the first export cell and the first fit cell

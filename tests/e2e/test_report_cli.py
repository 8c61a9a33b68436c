"""`pgolf report` through the command line on a folder of runs: --by groups, --baseline picks the baseline cell,
--json is JSON alone on stdout, --plot writes a PNG, --max-bytes moves the headroom. The runs are written by hand
(config.yaml as pgolf writes it, summary.json with the fields a report reads): no training here."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from pgolf import config as C
from pgolf.cli import app
from pgolf.results.tables import write_csv

CODE = 40_000
# (weight decay, prune, seed) -> (round-trip val_bpb, model bytes); runs are found in folder-name order
RUNS = {("0", "0", 1): (1.50, 560_000), ("0", "0.05", 1): (1.52, 460_000),
        ("0.04", "0", 1): (1.46, 540_000), ("0.04", "0.05", 1): (1.49, 440_000)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "runs"
    for i, ((wd, prune, seed), (bpb, model_bytes)) in enumerate(RUNS.items()):
        run_dir = root / "2026-01-01" / f"1{i}-00-00-wd{wd}-p{prune}"
        run_dir.mkdir(parents=True)
        cfg = C.compose([f"reg.weight_decay={wd}", f"export.prune={prune}", f"seed={seed}",
                         f"run.name={run_dir.name}"])
        (run_dir / "config.yaml").write_text(C.to_yaml(cfg))
        (run_dir / "summary.json").write_text(json.dumps({
            "run_dir": str(run_dir), "seed": seed, "params": 500_000, "steps": 12, "train_time_s": 3.0,
            "tokens_per_s": 4000.0, "wall_time_s": 9.0, "val_bpb": bpb - 0.01, "val_bpb_roundtrip": bpb,
            "artifact": str(run_dir / "artifacts" / "a.pgolf"),
            "bytes": {"model": model_bytes, "code": CODE, "total": model_bytes + CODE}}))
    return root


def report(*args):
    result = CliRunner().invoke(app, ["report", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def cells(*args):
    """The --json cell table, keyed by weight decay (and prune when it is a key)."""
    records = json.loads(report(*args, "--json").stdout)
    return {tuple(float(r[k]) for k in ("reg.weight_decay", "export.prune") if k in r): r for r in records}


def test_the_keys_are_the_values_that_differ_and_by_groups_by_the_given_key(runs):
    every = cells(runs)
    assert set(every) == {(0, 0), (0, 0.05), (0.04, 0), (0.04, 0.05)}
    assert all(r["n_seeds"] == 1 for r in every.values())
    by_wd = cells(runs, "--by", "reg.weight_decay")
    assert set(by_wd) == {(0,), (0.04,)}  # prune is no longer a key: its two runs are pooled
    assert "export.prune" not in by_wd[(0,)]
    assert by_wd[(0,)]["n_seeds"] == 2 and by_wd[(0,)]["bpb_mean"] == pytest.approx(1.51)
    assert by_wd[(0.04,)]["bpb_mean"] == pytest.approx(1.475)
    assert by_wd[(0.04,)]["total_bytes"] == 490_000 + CODE


def test_baseline_picks_the_cell_every_other_is_compared_with(runs):
    default = cells(runs, "--by", "reg.weight_decay")
    assert default[(0,)]["baseline"] and not default[(0.04,)]["baseline"]  # without it: the first cell
    chosen = cells(runs, "--by", "reg.weight_decay", "--baseline", "reg.weight_decay=0.04")
    assert chosen[(0.04,)]["baseline"] and chosen[(0.04,)]["delta_vs_baseline"] == 0
    assert not chosen[(0,)]["baseline"] and chosen[(0,)]["delta_vs_baseline"] == pytest.approx(1.51 - 1.475)
    # with both keys, each prune value is compared with the baseline decay at its own prune value
    both = cells(runs, "--baseline", "reg.weight_decay=0.04")
    assert both[(0, 0.05)]["delta_vs_baseline"] == pytest.approx(1.52 - 1.49)
    assert both[(0, 0)]["delta_vs_baseline"] == pytest.approx(1.50 - 1.46)


def test_json_is_alone_on_stdout_and_plot_writes_a_png(runs, tmp_path):
    png = tmp_path / "wd.png"
    result = report(runs, "--by", "reg.weight_decay", "--json", "--plot", png)
    assert [r["reg.weight_decay"] for r in json.loads(result.stdout)] == ["0.04", "0.0"]  # sorted by val_bpb
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot:" in result.stderr and "plot:" not in result.stdout


def test_max_bytes_sets_the_headroom_and_the_budget_line(runs):
    default = cells(runs)
    assert all(r["headroom_bytes"] == 16_000_000 - r["total_bytes"] for r in default.values())
    tight = cells(runs, "--max-bytes", "550KB")
    assert all(r["headroom_bytes"] == 550_000 - r["total_bytes"] for r in tight.values())
    assert {k for k, r in tight.items() if not r["within_budget"]} == {(0, 0), (0.04, 0)}  # 600,000 and 580,000
    assert "budget 550,000 bytes" in report(runs, "--max-bytes", "550KB").stdout


def test_baseline_on_an_export_key_compares_each_cell_with_its_own_training_at_that_export(tmp_path):
    folder = tmp_path / "runs" / "sweeps" / "wd-prune"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(C.plain_yaml({
        "name": "wd-prune", "axes": {"reg.weight_decay": ["0", "0.04"], "export.prune": ["0", "0.05"]},
        "train_axes": ["reg.weight_decay"], "export_axes": ["export.prune"], "seeds": [1], "base": [],
        "baseline": {}, "max_bytes": None, "margin": 0}))
    rows = [{"reg.weight_decay": wd, "export.prune": prune, "seed": seed, "point": f"export.prune={prune}",
             "cell": f"wd={wd}", "status": "ok", "error": "", "model_bytes": size, "code_bytes": CODE,
             "total_bytes": size + CODE, "val_bpb": bpb - 0.01, "val_bpb_roundtrip": bpb}
            for (wd, prune, seed), (bpb, size) in RUNS.items()]
    write_csv(pd.DataFrame(rows), folder / "results.csv")
    got = cells(folder, "--baseline", "export.prune=0")
    assert got[(0, 0)]["baseline"] and got[(0.04, 0)]["baseline"]
    assert got[(0, 0.05)]["delta_vs_baseline"] == pytest.approx(1.52 - 1.50)
    assert got[(0.04, 0.05)]["delta_vs_baseline"] == pytest.approx(1.49 - 1.46)

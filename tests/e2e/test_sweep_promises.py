"""What the README promises about re-running `pgolf sweep`: a failed cell stays failed until --retry-failed, a cell
cut off during its exports keeps its training; and `pgolf report` on the sweep folder it leaves."""

import json

import pandas as pd
import pytest

from .conftest import run_pgolf

pytestmark = pytest.mark.slow

# A few seconds of training per cell: 2 layers, 12 steps of 1,024 tokens, zstd only.
CHEAP = ["model.num_layers=2", "train.iterations=12", "train.batch_tokens=1024", "train.seq_len=128",
         "train.val_every=0", "train.log_every=4", "data.val_tokens=8192", "export.codec=zstd"]


def sweep_folder(cwd):
    (folder,) = (cwd / "runs" / "sweeps").iterdir()
    return folder


def results(folder):
    return pd.read_csv(folder / "results.csv", dtype={"export.prune": str})


def test_a_failed_cell_is_not_rerun_until_retry_failed(tmp_path, builtin_data):
    later = tmp_path / "later"  # the second cell's data folder: missing at first, so its training fails
    args = ["sweep", f"data.dir={builtin_data},{later}", f"data.tokenizer={builtin_data / 'tokenizer.model'}", *CHEAP]
    run_pgolf(*args, cwd=tmp_path, check_code=0)
    folder = sweep_folder(tmp_path)
    first = results(folder)
    assert list(first["status"]) == ["ok", "failed"] and "not found" in first["error"][1]
    ok_cell, failed_cell = (folder / "cells" / c / "cell.json" for c in first["cell"])
    stamps = ok_cell.stat().st_mtime_ns, failed_cell.stat().st_mtime_ns

    later.symlink_to(builtin_data, target_is_directory=True)  # the cell would pass now, but a plain re-run skips it
    proc = run_pgolf(*args, cwd=tmp_path, check_code=0)
    assert "2 finished before, 0 to run" in proc.stderr
    assert (ok_cell.stat().st_mtime_ns, failed_cell.stat().st_mtime_ns) == stamps
    assert list(results(folder)["status"]) == ["ok", "failed"]

    proc = run_pgolf(*args, "--retry-failed", cwd=tmp_path, check_code=0)
    assert "1 finished before, 1 to run" in proc.stderr
    after = results(folder)
    assert list(after["status"]) == ["ok", "ok"] and pd.isna(after["error"][1])
    assert after["val_bpb_roundtrip"][1] > 0 and after["total_bytes"][1] > 0
    assert ok_cell.stat().st_mtime_ns == stamps[0]  # the finished cell was not run again
    pd.testing.assert_series_equal(after.iloc[0], first.iloc[0])


@pytest.fixture(scope="module")
def prune_sweep(tmp_path_factory, builtin_data):
    """One training, two export points (prune 0 and 0.05)."""
    cwd = tmp_path_factory.mktemp("prune")
    args = ["sweep", "export.prune=0,0.05", f"data.dir={builtin_data}",
            f"data.tokenizer={builtin_data / 'tokenizer.model'}", *CHEAP]
    run_pgolf(*args, cwd=cwd, check_code=0)
    return cwd, args


def test_a_cell_cut_off_during_its_exports_keeps_its_training(prune_sweep):
    cwd, args = prune_sweep
    folder = sweep_folder(cwd)
    before = results(folder)
    (cell,) = (folder / "cells").iterdir()
    # cut off while exporting: the training finished, the second export point and cell.json were never written
    (cell / "cell.json").unlink()
    (cwd / before["artifact"][1]).unlink()
    training = {name: ((cell / name).read_bytes(), (cell / name).stat().st_mtime_ns)
                for name in ("model.safetensors", "summary.json", "metrics.jsonl", "train.log")}
    sha = json.loads((cell / "summary.json").read_text())["weights_sha256"]

    proc = run_pgolf(*args, cwd=cwd, check_code=0)
    assert "0 finished before, 1 to run" in proc.stderr
    assert (cell / "cell.json").is_file() and (cwd / before["artifact"][1]).is_file()
    for name, (data, mtime) in training.items():
        assert (cell / name).read_bytes() == data and (cell / name).stat().st_mtime_ns == mtime, name
    assert json.loads((cell / "summary.json").read_text())["weights_sha256"] == sha
    after = results(folder)
    assert list(after["status"]) == ["ok", "ok"] and (after["wall_time_s"] == 0).all()  # no training time spent
    columns = ["cell", "point", "total_bytes", "val_bpb", "val_bpb_roundtrip", "steps", "train_time_s", "artifact"]
    pd.testing.assert_frame_equal(after[columns], before[columns])


def test_report_on_the_sweep_folder_compares_with_the_baseline_export_point(prune_sweep):
    cwd, _ = prune_sweep
    folder = sweep_folder(cwd)
    rows = results(folder).set_index("export.prune")
    proc = run_pgolf("report", folder, "--baseline", "export.prune=0.05", "--max-bytes", "1MB", "--json", cwd=cwd,
                     check_code=0)
    cells = {r["export.prune"]: r for r in json.loads(proc.stdout)}
    assert set(cells) == {"0", "0.05"}
    for prune, cell in cells.items():
        assert cell["n_seeds"] == 1 and cell["bpb_mean"] == pytest.approx(rows["val_bpb_roundtrip"][prune])
        assert cell["headroom_bytes"] == 1_000_000 - rows["total_bytes"][prune]
    assert cells["0.05"]["baseline"] and cells["0.05"]["delta_vs_baseline"] == 0
    assert not cells["0"]["baseline"]
    assert cells["0"]["delta_vs_baseline"] == pytest.approx(rows["val_bpb_roundtrip"]["0"]
                                                            - rows["val_bpb_roundtrip"]["0.05"])
    assert cells["0"]["delta_vs_baseline"] != 0

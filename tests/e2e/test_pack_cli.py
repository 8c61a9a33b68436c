"""`pgolf pack` as a user runs it: the records folder, its measured bytes, and the shipped script run in a fresh
virtual environment that has only the folder's requirements.txt and torch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf.bundle.script import compact_keys
from pgolf.errors import PgolfError
from pgolf.jobs.sources import config_for_source
from pgolf.ship.pack import pack

from .conftest import exited, one_line_error, run_pgolf, run_pgolf_each

pytestmark = pytest.mark.slow

FILES = {"train_gpt.py", "final_model.pgolf", "submission.json", "requirements.txt", "README.md"}


def test_pack_writes_a_records_folder_whose_bytes_are_the_files(run_copy, tmp_path):
    run_dir, summary = run_copy
    out, readable = tmp_path / "records", tmp_path / "readable"
    packed, packed_readable = run_pgolf_each([
        (["pack", run_dir, "--out", out, "--author", "Ada", "--github-id", "ada", "--name", "tiny", "--blurb",
          "a test", "--json"], tmp_path),
        (["pack", run_dir, "--out", readable, "--wrap", "none"], tmp_path)])
    result = json.loads(exited(packed).stdout)
    assert {p.name for p in out.iterdir()} == FILES | {"train_seed1337.log"}
    sub = json.loads((out / "submission.json").read_text())
    assert sub["bytes_code"] == (out / "train_gpt.py").stat().st_size
    assert sub["bytes_total"] == sub["bytes_code"] + (out / "final_model.pgolf").stat().st_size
    assert (out / "final_model.pgolf").read_bytes() == Path(summary["artifact"].replace(
        summary["run_dir"], str(run_dir))).read_bytes()
    assert sub["val_bpb"] == summary["val_bpb_roundtrip"] and sub["val_loss"] == summary["val_loss_roundtrip"]
    assert (sub["author"], sub["github_id"], sub["name"], sub["blurb"]) == ("Ada", "ada", "tiny", "a test")
    assert set(sub) >= {"date", "val_loss", "val_bpb", "bytes_total", "bytes_code"} and "seeds" not in sub
    assert result["headroom_bytes"] == 16_000_000 - sub["bytes_total"]
    # the training's own total already counted the script pack ships for its config
    assert summary["bytes"]["code"] == sub["bytes_code"]
    requirements = (out / "requirements.txt").read_text().split()
    assert sorted(r.split("==")[0].lower() for r in requirements) == ["brotli", "numba", "sentencepiece", "zstandard"]
    readme = (out / "README.md").read_text()
    assert f"{sub['val_bpb']:.8f}" in readme and "torchrun" in readme and "```yaml" in readme
    script = (out / "train_gpt.py").read_text()
    assert script.startswith("import lzma,base64;exec(") and len(script.splitlines()) == 1

    exited(packed_readable)
    text = (readable / "train_gpt.py").read_text()
    assert "def train_and_score(" in text and '"""' in text  # the modules as written, docstrings kept
    assert json.loads((readable / "submission.json").read_text())["bytes_code"] == len(text.encode())
    assert len(text.encode()) > 3 * sub["bytes_code"]


def test_the_packed_script_scores_and_trains_in_a_fresh_venv(run_copy, tmp_path, builtin_data, data_overrides,
                                                              fresh_venv):
    """In a virtual environment with torch (this one's version) and the folder's requirements, nothing else."""
    run_dir, _ = run_copy
    out = tmp_path / "records"
    packed, ours = run_pgolf_each([  # the pack, then pgolf's own score of its artifact
        (["pack", run_dir, "--out", out], tmp_path),
        (["eval", out / "final_model.pgolf", *data_overrides, "data.val_tokens=8192", "--json"], tmp_path)])
    exited(packed)
    python = fresh_venv(out / "requirements.txt")
    freeze = subprocess.run([python, "-m", "pip", "list"], capture_output=True, text=True).stdout.lower()
    assert "pgolf" not in freeze and "hydra" not in freeze and "safetensors" not in freeze
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "DATA_PATH": str(builtin_data), "TOKENIZER_PATH": str(builtin_data / "tokenizer.model"),
           "VAL_TOKENS": "8192", "PGOLF_BUNDLE_DIR": str(tmp_path / "bundle")}

    scored = subprocess.run([python, "train_gpt.py", "--eval", "final_model.pgolf"], cwd=out, env=env,
                            capture_output=True, text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr
    last = scored.stdout.strip().splitlines()[-1]
    assert last.startswith("val_bpb:") and len(last.split(".")[1]) >= 8
    assert abs(float(last.removeprefix("val_bpb:")) - json.loads(exited(ours).stdout)["val_bpb"]) < 1e-6

    work = tmp_path / "train"
    work.mkdir()
    shutil.copy(out / "train_gpt.py", work)
    env_train = {**env, "ITERATIONS": "3", "TRAIN_BATCH_TOKENS": "2048", "TRAIN_SEQ_LEN": "128", "SEED": "7",
                 "RUN_ID": "cpu"}
    trained = subprocess.run([python, "train_gpt.py"], cwd=work, env=env_train, capture_output=True, text=True,
                             timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.strip().splitlines()[-1].startswith("val_bpb:")
    assert "ITERATIONS=3" in trained.stdout and (work / "logs" / "cpu.txt").is_file()
    assert (work / "final_model.pgolf").is_file()  # written, read back from disk and scored by the run itself


def test_a_sweep_cell_packs_its_seeds_together(run_copy, tmp_path):
    run_dir, summary = run_copy
    cells = tmp_path / "sweep" / "cells"
    artifact = Path(summary["artifact"]).name
    scores = {}
    for seed, bpb in ((1, 3.1), (2, 3.3)):
        cell = cells / f"wd=0-seed={seed}-abc12{seed}"
        shutil.copytree(run_dir, cell)
        config = (cell / "config.yaml").read_text().replace("seed: 1337", f"seed: {seed}")
        (cell / "config.yaml").write_text(config)
        record = cell / "artifacts" / Path(artifact).with_suffix(".json")
        data = json.loads(record.read_text())
        data["config"]["seed"], data["val_bpb_roundtrip"] = seed, bpb
        record.write_text(json.dumps(data))
        scores[seed] = bpb
    out = tmp_path / "records"
    run_pgolf("pack", cells / "wd=0-seed=1-abc121", "--out", out, cwd=tmp_path, check_code=0)
    sub = json.loads((out / "submission.json").read_text())
    assert sub["seeds"] == [1, 2]
    assert [r["val_bpb"] for r in sub["seed_results"]] == [3.1, 3.3]
    assert sub["val_bpb"] == pytest.approx(3.2) and sub["val_bpb_std"] == pytest.approx(0.1414213, abs=1e-6)
    assert all(r["artifact_bytes"] == (out / "final_model.pgolf").stat().st_size for r in sub["seed_results"])
    assert {"train_seed1.log", "train_seed2.log"} <= {p.name for p in out.iterdir()}


def test_bad_sources_and_budgets_are_one_line_errors_that_write_nothing(run_copy, tmp_path):
    run_dir, summary = run_copy
    out = tmp_path / "records"
    empty = tmp_path / "empty_run"
    (empty / "artifacts").mkdir(parents=True)
    kept = tmp_path / "kept"  # a folder that is already there
    kept.mkdir()
    (kept / "keep.txt").write_text("mine")
    no_artifact, over_budget, not_forced = run_pgolf_each([
        (["pack", empty, "--out", out], tmp_path),
        (["pack", run_dir, "--out", out, "--max-bytes", "100KB"], tmp_path),
        (["pack", run_dir, "--out", kept], tmp_path)])
    assert "no artifacts/*.pgolf" in one_line_error(exited(no_artifact, 1))
    assert "over the budget of 100,000" in one_line_error(exited(over_budget, 3))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".records")]
    assert "--force" in one_line_error(exited(not_forced, 2)) and (kept / "keep.txt").read_text() == "mine"

    forced, zlib = run_pgolf_each([(["pack", run_dir, "--out", kept, "--force"], tmp_path),
                                   (["pack", run_dir, "--out", tmp_path / "r2", "export.codec=zlib"], tmp_path)])
    exited(forced)
    assert {p.name for p in kept.iterdir()} >= FILES and not (kept / "keep.txt").exists()
    assert "export.codec=zlib" in one_line_error(exited(zlib, 1)) and "never makes" in one_line_error(zlib)
    for override, message in (("model.num_layers=2", "not what the packed config builds"),
                              ("model=baseline", "not what the packed config builds")):
        with pytest.raises(PgolfError, match=message):
            pack(run_dir, tmp_path / "r3", [override])
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_a_script_with_every_gated_feature_trains_under_torchrun(run_copy, tmp_path, builtin_data):
    """GPTQ, LQER, export pruning, gradual pruning, SWA, QAT and TTT (the modules the default bundle leaves out,
    stripped and renamed like the rest), run as the challenge runs the script: torchrun, here two CPU processes on
    gloo. Both ranks unpack the same bundle folder at once; rank 0 alone exports, scores and prints the last line."""
    run_dir, _ = run_copy
    out = tmp_path / "records"
    gated = ["export.gptq=true", "export.gptq_tokens=1024", "export.prune=0.02", "reg.prune_sparsity=0.2",
             "reg.prune_start=0.0", "reg.ema_decay=0", "reg.swa_start=0.3", "reg.swa_every=1", "reg.qat_bits=6",
             "reg.qat_start=0.0", "reg.l1=0.0001", "reg.z_loss=0.0001", "ttt=cpu", "ttt.prefix_docs=2",
             "ttt.global_chunk_tokens=512", "export.lqer_rank=2"]
    run_pgolf("pack", run_dir, "--out", out, *gated, cwd=tmp_path, check_code=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DATA_PATH": str(builtin_data),
           "TOKENIZER_PATH": str(builtin_data / "tokenizer.model"), "VAL_TOKENS": "4096", "ITERATIONS": "4",
           "TRAIN_BATCH_TOKENS": "2048", "TRAIN_SEQ_LEN": "128", "PGOLF_BUNDLE_DIR": str(tmp_path / "bundle")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29547",
           "train_gpt.py"]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("val_bpb:") and sum(line.startswith("val_bpb:") for line in lines) == 1
    assert "2 processes" in proc.stdout
    (bundle_dir,) = (tmp_path / "bundle").iterdir()  # one unpacked bundle: the losing rank's copy was removed
    modules = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*.py")}
    keys = compact_keys(config_for_source(run_dir, gated))  # its flat module names: export/gptq -> a short key
    assert {f"pgolf/{keys[m]}.py" for m in ("export/gptq", "export/prune", "train/pruning", "ttt/score",
                                                   "export/lqer")} <= modules
    assert "ttt=cpu" in proc.stdout and "round trip without ttt" in proc.stdout  # the last val_bpb is TTT's

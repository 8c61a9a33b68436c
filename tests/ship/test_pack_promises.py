"""What `pgolf pack` promises about where its numbers and files come from (ship/pack.py), and the shipped
script's one-line error for a packed key it does not know (ship/standalone.py).

(a) and (b) pack cells of a real two-seed sweep: the smallest there is (a 2-layer model trained 2 steps on a
synthetic corpus), so each seed's artifact is its own bytes, not a copy of the other's.
"""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf import config as C
from pgolf.audit.audit import audit_folder
from pgolf.data.prepare import prepare_data
from pgolf.jobs.export_job import run_export
from pgolf.ship import standalone
from pgolf.ship.pack import pack

VOCAB = 300


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory):
    """`pgolf sweep --seeds 2` of a tiny training: (cells by seed, data overrides)."""
    root = tmp_path_factory.mktemp("sweep")
    docs = root / "docs"
    docs.mkdir()
    rng = random.Random(0)
    nouns = "cat dog bird fish tree river stone cloud house road ship star".split()
    verbs = "sees finds likes moves holds keeps follows makes".split()
    for index in range(8):
        sentences = [f"the {rng.choice(nouns)} {rng.choice(verbs)} the {rng.choice(nouns)}." for _ in range(150)]
        (docs / f"doc{index}.txt").write_text(" ".join(sentences) + "\n", encoding="utf-8")
    data = prepare_data(docs, root / "data", vocab_size=VOCAB, name="tiny")
    data_overrides = [f"data.dir={data.dir}", f"data.tokenizer={data.tokenizer}", "data.val_tokens=1024"]
    args = [*data_overrides, f"model.vocab_size={VOCAB}", "model.num_layers=2", "model.model_dim=64",
            "model.num_heads=2", "model.num_kv_heads=1", "train.iterations=2", "train.val_every=0",
            "train.seq_len=64", "train.batch_tokens=512", "train.val_tokens=1024", "train.lr_warmup_steps=1",
            "train.warmdown_steps=1", "export.codec=zlib", "seed=11"]
    proc = subprocess.run([sys.executable, "-m", "pgolf", "sweep", *args, "--seeds", "2", "--no-plot"], cwd=root,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    (sweep,) = (root / "runs" / "sweeps").iterdir()
    cells = {json.loads((cell / "summary.json").read_text())["seed"]: cell for cell in (sweep / "cells").iterdir()}
    assert sorted(cells) == [11, 12]
    return cells, data_overrides


def _artifact(cell: Path) -> Path:
    (artifact,) = (cell / "artifacts").glob("*.pgolf")
    return artifact


@pytest.mark.slow
def test_a_sweep_cell_ships_its_own_seeds_artifact_and_names_every_seed(seed_sweep, tmp_path):
    cells, _ = seed_sweep
    own = {seed: _artifact(cell).read_bytes() for seed, cell in cells.items()}
    assert own[11] != own[12]  # trained from different seeds: the test can tell them apart
    records = {seed: json.loads(_artifact(cell).with_suffix(".json").read_text()) for seed, cell in cells.items()}

    for seed, other in ((11, 12), (12, 11)):
        out = tmp_path / f"records-{seed}"
        pack(cells[seed], out, [])
        shipped = (out / "final_model.pgolf").read_bytes()
        assert shipped == own[seed] and shipped != own[other], f"packing seed {seed}'s cell"
        sub = json.loads((out / "submission.json").read_text())
        assert sub["seeds"] == [seed, other]
        results = {r["seed"]: r for r in sub["seed_results"]}
        assert sorted(results) == [11, 12]
        for s in (11, 12):
            assert results[s]["val_bpb"] == records[s]["val_bpb_roundtrip"]
            assert results[s]["val_loss"] == records[s]["val_loss_roundtrip"]
            assert results[s]["artifact_bytes"] == len(own[s])
        assert sub["bytes_total"] == len(own[seed]) + sub["bytes_code"]
        mean = (records[11]["val_bpb_roundtrip"] + records[12]["val_bpb_roundtrip"]) / 2
        assert sub["val_bpb"] == pytest.approx(mean)
        assert {"train_seed11.log", "train_seed12.log"} <= {p.name for p in out.iterdir()}
        assert f"`final_model.pgolf` is seed {seed}'s artifact" in (out / "README.md").read_text()


@pytest.mark.slow
def test_an_artifact_without_a_record_is_scored_by_pack_and_the_readme_says_so(seed_sweep, tmp_path):
    cells, _ = seed_sweep
    run_dir = tmp_path / "run"
    shutil.copytree(cells[11], run_dir)
    artifact = _artifact(run_dir)
    record = json.loads(artifact.with_suffix(".json").read_text())
    artifact.with_suffix(".json").unlink()

    for source in (run_dir, artifact):  # a run directory, or the artifact file itself
        out = tmp_path / f"records-{source.name}"
        pack(source, out, [])
        sub = json.loads((out / "submission.json").read_text())
        # the same artifact, config and validation tokens as the training's own round trip: the same score
        assert sub["val_bpb"] == pytest.approx(record["val_bpb_roundtrip"], abs=1e-6)
        assert sub["val_loss"] == pytest.approx(record["val_loss_roundtrip"], abs=1e-6)
        readme = (out / "README.md").read_text()
        assert "scored by pack" in readme and "no record beside the artifact" in readme
        assert "recorded (" not in readme
        assert (out / "final_model.pgolf").read_bytes() == artifact.read_bytes()
    assert not artifact.with_suffix(".json").exists()  # pack reads; it writes nothing into the run


def test_an_unknown_packed_key_is_one_line_naming_it(capsys):
    code = standalone.main({"train": {"nope": 1}}, [])
    assert code != 0
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0], err


@pytest.mark.slow
def test_each_log_ends_with_the_shipped_artifacts_bytes_and_score_so_the_folder_agrees_with_itself(seed_sweep,
                                                                                                 tmp_path):
    """Packing a later export than the training's own (here at 3 bits, a worse score) ships the training log and,
    after it, that artifact's bytes and score: the log's last scored line is submission.json's, and `audit`
    finds no contradiction in the seeds or bytes."""
    cells, _ = seed_sweep
    run_dir = tmp_path / "run"
    shutil.copytree(cells[11], run_dir)
    trained_log = (run_dir / "train.log").read_bytes()
    cfg = C.merge_dotted(C.load_yaml(run_dir / "config.yaml"), ["export.bits=3"])
    later = run_export(run_dir, cfg)
    own = json.loads(_artifact(cells[11]).with_suffix(".json").read_text())
    assert abs(later["val_bpb_roundtrip"] - own["val_bpb_roundtrip"]) > 1e-3  # the training printed another score

    out = tmp_path / "records"
    sub = pack(run_dir, out, [])
    shipped_log = (out / "train_seed11.log").read_bytes()
    assert shipped_log.startswith(trained_log)
    artifact_bytes = (out / "final_model.pgolf").stat().st_size
    code_bytes = (out / "train_gpt.py").stat().st_size
    tail = shipped_log[len(trained_log):].decode()
    assert f"Serialized model artifacts/{Path(later['artifact']).name}: {artifact_bytes} bytes" in tail
    assert f"Code size train_gpt.py: {code_bytes} bytes" in tail
    assert f"Total submission size: {artifact_bytes + code_bytes} bytes" in tail
    score = f"val_loss:{later['val_loss_roundtrip']:.8f} val_bpb:{later['val_bpb_roundtrip']:.8f}"
    assert tail.rstrip().endswith(score)
    assert sub["val_bpb"] == later["val_bpb_roundtrip"]

    rows = {(row.check, row.item): row for row in audit_folder(out).rows}
    assert rows[("seeds", "submission.json val_bpb")].verdict == "pass", rows[("seeds", "submission.json val_bpb")]
    assert rows[("seeds", "train_seed11.log")].detail.startswith(f"val_bpb {later['val_bpb_roundtrip']:.8f}")
    assert {row.verdict for (check, _), row in rows.items() if check == "bytes"} == {"pass"}

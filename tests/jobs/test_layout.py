"""The run-directory layout (jobs/layout.py): dated folders, the `latest` link, state.json, the metrics a resumed
run keeps, and the names and places of artifacts and their records."""

import copy
import datetime
import json
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pgolf.config import compose
from pgolf.jobs import layout

FIXED = time.struct_time((2031, 2, 3, 4, 5, 6, 0, 34, -1))


@pytest.fixture
def frozen_clock(monkeypatch):
    """Every run directory is made in the same second (2031-02-03 04:05:06), so names collide."""
    monkeypatch.setattr(layout, "time", SimpleNamespace(localtime=lambda: FIXED, strftime=time.strftime))


def test_run_dirs_are_dated_unique_and_latest_follows_the_newest(tmp_path, frozen_clock):
    root = tmp_path / "runs"
    first = layout.create_run_dir(root, "demo")
    assert first == root / "2031-02-03" / "04-05-06-demo" and first.is_dir() and not any(first.iterdir())
    second = layout.create_run_dir(root, "demo")
    third = layout.create_run_dir(root, "demo")
    assert (second.name, third.name) == ("04-05-06-demo-2", "04-05-06-demo-3")
    other = layout.create_run_dir(root, "other")
    assert other.name == "04-05-06-other"

    latest = root / "latest"
    assert latest.is_symlink() and not os.path.isabs(os.readlink(latest))  # relative: the tree can move
    assert latest.resolve() == other.resolve()
    assert sorted(p.name for p in root.iterdir()) == ["2031-02-03", "latest"]  # no temporary link left


def test_latest_is_repointed_in_one_rename_and_never_missing(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    old = layout.create_run_dir(root, "old")
    new = root / "2031-01-01" / "00-00-00-new"
    new.mkdir(parents=True)
    (root / f".latest.{os.getpid()}.tmp").write_text("left by a killed process")  # a stale temporary is replaced
    seen = []

    def watch(real):
        def call(*args):
            seen.append((real.__name__, (root / "latest").resolve()))  # what a reader sees at this moment
            return real(*args)
        return call

    monkeypatch.setattr(layout.os, "symlink", watch(os.symlink))
    monkeypatch.setattr(layout.os, "replace", watch(os.replace))
    monkeypatch.setattr(layout.os, "unlink", watch(os.unlink))
    layout.point_latest(root, new)
    monkeypatch.undo()
    assert seen and all(target == old.resolve() for _, target in seen), seen  # old run until the one rename
    assert (root / "latest").resolve() == new.resolve()
    assert sorted(p.name for p in root.iterdir()) == sorted(["2031-01-01", old.parent.name, "latest"])


def test_run_state_says_what_where_and_when(tmp_path):
    before = datetime.datetime.now().replace(microsecond=0)
    layout.write_run_state(tmp_path, "interrupted", checkpoint_step=7, stop_reason="terminated")
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["state"] == "interrupted" and state["checkpoint_step"] == 7 and state["stop_reason"] == "terminated"
    assert state["pid"] == os.getpid() and state["host"] == socket.gethostname()
    written = datetime.datetime.strptime(state["updated"], "%Y-%m-%dT%H:%M:%S")
    assert before <= written <= datetime.datetime.now()
    layout.write_run_state(tmp_path, "completed")
    assert json.loads((tmp_path / "state.json").read_text())["state"] == "completed"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_metrics_after_the_checkpoint_and_a_line_cut_by_a_kill_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"event": "start"})] + [json.dumps({"step": s, "train_loss": 5.0 - s}) for s in range(1, 7)]
    path.write_text("\n".join(lines) + "\n" + '{"step": 7, "train_lo')  # the kill cut the last line short
    layout.keep_metrics_through(path, 4)
    assert path.read_text() == "\n".join(lines[:5]) + "\n"  # no step counts as step 0; order and text kept
    layout.keep_metrics_through(path, 0)
    assert path.read_text() == lines[0] + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]

    missing = tmp_path / "none.jsonl"
    layout.keep_metrics_through(missing, 3)
    assert not missing.exists()


def test_metrics_log_appends_one_flushed_line_per_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n')
    log = layout.MetricsLog(path)
    log.write(step=2, train_loss=1.5)
    assert path.read_text().splitlines()[-1] == '{"step": 2, "train_loss": 1.5}'  # readable before close
    log.close()


@pytest.fixture(scope="module")
def default_cfg():
    return compose([])


def changed(cfg, dotted: str, value):
    """A copy of `cfg` with one field (dotted path) set to `value`."""
    cfg = copy.deepcopy(cfg)
    *path, name = dotted.split(".")
    record = cfg
    for part in path:
        record = getattr(record, part)
    assert hasattr(record, name), dotted
    setattr(record, name, value)
    return cfg


@pytest.mark.parametrize("dotted, value", [
    ("export.bits", 5), ("export.group_bits.embed", 7), ("export.group_bits.mlp_out", 5), ("export.codec", "zlib"),
    ("export.codec_level", 3), ("export.shuffle", True), ("export.clip", "max"), ("export.clip_k", 10.0),
    ("export.float_max_numel", 65536), ("export.float_dtype", "bfloat16"),
    ("export.tensor_bits", {"blocks.0.mlp.fc.weight": 7}), ("export.prune", 0.02), ("export.gptq", True),
    ("export.gptq_damp", 0.02), ("export.scale_min", 0.01)])
def test_an_export_field_that_shapes_the_bytes_changes_the_artifact_name(default_cfg, dotted, value):
    assert layout.artifact_label(changed(default_cfg, dotted, value)) != layout.artifact_label(default_cfg)


@pytest.mark.parametrize("dotted, value", [
    ("export.code_bytes", 1234), ("export.code_files", ["a.py", "b.py"]), ("export.eval_stride", 64),
    ("train.iterations", 7), ("reg.weight_decay", 0.5), ("seed", 3), ("run.name", "other")])
def test_a_field_that_does_not_shape_the_bytes_keeps_the_artifact_name(default_cfg, dotted, value):
    assert layout.artifact_label(changed(default_cfg, dotted, value)) == layout.artifact_label(default_cfg)


def test_artifact_names_are_readable_and_deterministic(default_cfg):
    label = layout.artifact_label(default_cfg)
    assert label.startswith("int6-mse-auto-") and len(label.rsplit("-", 1)[1]) == 6
    assert layout.artifact_label(copy.deepcopy(default_cfg)) == label
    pruned = layout.artifact_label(compose(["export.bits=5", "export.prune=0.02", "export.prune_kind=heads",
                                            "export.gptq=true", "export.codec=rans"]))
    assert pruned.startswith("int5-mse-rans-prune0.02heads-gptq-")


def test_artifacts_and_their_records_have_fixed_places(tmp_path, default_cfg):
    cfg = default_cfg
    label = layout.artifact_label(cfg)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    artifact = layout.default_artifact_path(run_dir, cfg)
    assert artifact == run_dir / "artifacts" / f"{label}.pgolf"
    assert layout.record_path(artifact) == run_dir / "artifacts" / f"{label}.json"
    for name in ("model.safetensors", "final_model.pt"):
        source = tmp_path / name
        source.write_bytes(b"")
        assert layout.default_artifact_path(source, cfg) == tmp_path / f"{Path(name).stem}.{label}.pgolf"
    assert layout.record_path(Path("x/fit-420000.pgolf")) == Path("x/fit-420000.json")

    paths = layout.output_paths(run_dir, 420_000)
    assert paths == {"artifact": run_dir / "artifacts" / "fit-420000.pgolf", "csv": run_dir / "fit" / "fit-420000.csv",
                     "json": run_dir / "fit" / "fit-420000.json", "config": run_dir / "fit" / "fit-420000.yaml"}
    beside = layout.output_paths(tmp_path / "model.safetensors", 420_000)
    assert beside["artifact"] == tmp_path / "model.fit-420000.pgolf"
    assert beside["csv"] == tmp_path / "model.fit-420000.csv"


def test_read_summary_reads_the_run_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"val_bpb_roundtrip": 1.25}))
    assert layout.read_summary(tmp_path) == {"val_bpb_roundtrip": 1.25}

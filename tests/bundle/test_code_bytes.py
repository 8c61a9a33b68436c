"""Code bytes for any config: the `code` of every `total = artifact + code` pgolf prints is the size of the
train_gpt.py `pgolf pack` ships for that config (bundle/code_bytes.py), whatever section of the config changes
the script: the model (records knobs), the regularizers (EMA, QAT) or the export (codec).

The sizes are cached in this process and on disk by a key over the sources and the packed config; every test
starts from empty caches, and asks for several configs in one cache, so a key that misses part of the config
serves one config's size for another.
"""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from pgolf.bundle import code_bytes
from pgolf.bundle import script as script_module
from pgolf.bundle.graph import bundle_modules
from pgolf.bundle.script import script
from pgolf.config import compose
from pgolf.export.artifact import export_state_dict, write_artifact
from pgolf.jobs.export_job import write_artifact_record
from pgolf.jobs.models import build_model
from pgolf.ship.pack import pack

CONFIGS = {
    "default": [],
    "records_tiny": ["model=records_tiny"],
    "ema+qat": ["reg.ema_decay=0.99", "reg.qat_bits=6"],
    "no-ema": ["reg.ema_decay=0"],
    "rans": ["export.codec=rans"],
    "auto": ["export.codec=auto", "export.bits=5"],
}


@pytest.fixture(scope="module")
def configs():
    return {name: compose(overrides) for name, overrides in CONFIGS.items()}


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setattr(code_bytes, "_MEASURED", {})
    monkeypatch.setenv("PGOLF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "code-bytes"


def test_measured_code_bytes_are_the_script_of_each_config(configs, empty_caches, monkeypatch):
    sizes = {}
    for name, cfg in configs.items():  # one cache for all: a key blind to a section serves a stale size here
        sizes[name] = code_bytes.measured_code_bytes(cfg)
        assert sizes[name] == len(script(cfg, "lzma")), name
        assert code_bytes.count_code_bytes(cfg) == sizes[name], name
    assert sizes["rans"] != sizes["auto"]  # auto carries ctx, zstandard and brotli
    assert sizes["records_tiny"] > sizes["default"]  # carries model/records.py
    assert sizes["no-ema"] < sizes["default"]  # train/averaging.py left out
    # EMA and QAT ship in the default script already: only the config's text differs, and lzma may round it to
    # the same length, so a key blind to the reg section is caught by no-ema's smaller size above
    assert script(configs["ema+qat"], "lzma") != script(configs["default"], "lzma")
    assert len(list(empty_caches.glob("*.json"))) == len(configs)  # one entry per config on disk

    monkeypatch.setattr(code_bytes, "_MEASURED", {})  # a new process: sizes come from the disk cache
    monkeypatch.setattr(code_bytes, "script", lambda *a, **k: pytest.fail("measured again despite the disk cache"))
    for name, cfg in reversed(list(configs.items())):
        assert code_bytes.measured_code_bytes(cfg) == sizes[name], name


def test_a_new_process_reuses_the_compacted_modules_of_another_config_and_an_edit_invalidates_them(configs,
                                                                                                   empty_caches,
                                                                                                   monkeypatch):
    """The minified module bundle depends on the module set only: a sweep's next cell (another process, another
    config, the same modules) measures its code bytes from the bundle on disk, and gets the size of its own script;
    a module whose source changed is compacted again."""
    other = dataclasses.replace(configs["default"], seed=7)  # the same modules, another packed config
    script_module._compact_modules.cache_clear()
    expected = len(script(other, "lzma"))  # built here from scratch: the caches are empty
    compactions = []
    monkeypatch.setattr(script_module, "_compacted", lambda *args: compactions.append(args) or "")
    script_module._compact_modules.cache_clear()  # a new process
    monkeypatch.setattr(code_bytes, "_MEASURED", {})
    assert code_bytes.measured_code_bytes(other) == expected and not compactions
    modules = dict(bundle_modules(other))
    modules["export/artifact"] += "\n# edited\n"
    script_module._compact_modules(tuple(modules.items()), script_module.BOOTSTRAP.read_text())
    assert len(compactions) == 1
    script_module._compact_modules.cache_clear()


def _artifact(folder, cfg, name):
    """A real artifact of `cfg`'s model (untrained weights) with the record train/export would write beside it."""
    torch.manual_seed(0)
    model = build_model(cfg)
    export = cfg.export
    if export.codec == "auto":  # any codec auto may pick is one pack accepts for it; zlib is the quick one here
        export = dataclasses.replace(export, codec="zlib")
    result = export_state_dict(model.state_dict(), model.config, export)
    path = folder / f"{name}.pgolf"
    folder.mkdir(parents=True, exist_ok=True)
    write_artifact(path, result)
    write_artifact_record(path, cfg, {"val_loss_roundtrip": 5.0, "val_bpb_roundtrip": 3.0,
                                      "val_tokens_roundtrip": 1024, "eval_device": "cpu", "eval_dtype": "float32",
                                      "bytes": {"model": len(result.blob)}})
    return path


@pytest.mark.slow
def test_pack_ships_a_script_of_the_measured_size(configs, empty_caches, tmp_path):
    names = ("records_tiny", "ema+qat", "auto")
    measured = {name: code_bytes.measured_code_bytes(configs[name]) for name in ("default", *names)}
    for name in names:
        out = tmp_path / "records" / name
        result = pack(_artifact(tmp_path / "artifacts", configs[name], name), out, [])
        shipped = (out / "train_gpt.py").stat().st_size
        assert shipped == measured[name] == result["bytes_code"], name
        assert json.loads((out / "submission.json").read_text())["bytes_code"] == shipped


@pytest.mark.slow
def test_the_pgolf_pack_command_ships_the_measured_size(configs, empty_caches, tmp_path):
    cfg = configs["rans"]
    measured = {name: code_bytes.measured_code_bytes(configs[name]) for name in ("default", "rans")}
    artifact = _artifact(tmp_path / "artifacts", cfg, "rans")
    out = tmp_path / "records"
    proc = subprocess.run([sys.executable, "-m", "pgolf", "pack", str(artifact), "--out", str(out), "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    shipped = (out / "train_gpt.py").stat().st_size
    assert shipped == measured["rans"] == json.loads(proc.stdout)["bytes_code"]
    assert shipped != measured["default"]  # export.codec=auto

"""The shipped script as bytes: which modules it carries, how they are stripped, and the code bytes totals count."""

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from pgolf.bundle import code_bytes, flat, graph, minify, script
from pgolf.config import ExportConfig, compose
from pgolf.errors import ConfigError
from pgolf.schema import Config, from_plain


def modules_of(cfg):
    return {f"pgolf/{name}.py" for name in graph.bundle_modules(cfg)}


def test_the_default_bundle_carries_what_it_runs_and_nothing_of_the_cli_or_hydra():
    mods = modules_of(compose([]))
    assert {"pgolf/ship/standalone.py", "pgolf/jobs/start.py", "pgolf/schema.py", "pgolf/model/gpt.py",
            "pgolf/train/loop.py", "pgolf/export/artifact.py", "pgolf/export/coding/rans.py",
            "pgolf/train/averaging.py"} <= mods
    for absent in ("config", "cli", "jobs/float_checkpoint", "jobs/train_job", "jobs/export_job", "jobs/layout",
                   "fit/budget", "fit/search", "sweep/plan", "results/report", "results/tables", "ship/pack",
                   "ship/bootstrap", "bundle/script", "data/prepare", "data/corpus", "export/gptq", "export/prune",
                   "train/pruning"):
        assert f"pgolf/{absent}.py" not in mods, absent


@pytest.mark.parametrize("override, module", [
    ("export.gptq=true", "pgolf/export/gptq.py"),
    ("export.prune=0.05", "pgolf/export/prune.py"),
    ("reg.prune_sparsity=0.3", "pgolf/train/pruning.py"),
    ("reg.z_loss=0.0001", "pgolf/train/penalties.py"),
    ("model=records_tiny", "pgolf/model/records.py"),
    ("model.smear_gate=true", "pgolf/model/records.py"),
    ("ttt=cpu", "pgolf/ttt/score.py"),
    ("export.lqer_rank=4", "pgolf/export/lqer.py"),
    ("train.muon_coefficients=polar_express", "pgolf/train/muon.py"),
    ("ttt=records", "pgolf/ttt/adapters.py"),
])
def test_a_feature_brings_its_module_only_when_the_config_uses_it(override, module):
    assert module not in modules_of(compose([]))
    assert module in modules_of(compose([override]))
    # the readable wrap carries the modules verbatim (the compact one minifies each new module set for seconds;
    # test_code_bytes measures that the lzma script grows with a module and shrinks without one)
    assert len(script.script(compose([override]), "none")) > len(script.script(compose([]), "none"))


def test_averaging_is_carried_only_with_ema_or_swa():
    assert "pgolf/train/averaging.py" not in modules_of(compose(["reg.ema_decay=0"]))
    assert "pgolf/train/averaging.py" in modules_of(compose(["reg.ema_decay=0", "reg.swa_start=0.5"]))


def test_requirements_are_the_imported_packages_pinned_and_follow_the_codec():
    names = {line.split("==")[0].lower() for line in graph.requirements(compose([]))}
    assert names == {"brotli", "numba", "sentencepiece", "zstandard"}
    assert all("==" in line for line in graph.requirements(compose([])))
    rans_only = {line.split("==")[0].lower() for line in graph.requirements(compose(["export.codec=rans"]))}
    assert rans_only == {"numba", "sentencepiece"}
    with_artifact = graph.requirements(compose(["export.codec=rans"]), codecs={"rans", "zstd"})
    assert {line.split("==")[0].lower() for line in with_artifact} == {"numba", "sentencepiece", "zstandard"}


def test_a_gated_module_imported_at_import_time_is_refused(monkeypatch):
    monkeypatch.setitem(graph.GATED, "pgolf.export.quantize", lambda cfg: False)  # artifact.py imports it on top
    with pytest.raises(RuntimeError, match="imports the gated pgolf.export.quantize at import time"):
        graph.bundle_modules(compose([]))


@pytest.mark.parametrize("overrides", [[], ["model=baseline", "train=h100_10min", "reg=records",
                                            "data=fineweb_sp1024"], ["export=int8_zlib", "export.tensor_bits={}"]])
def test_the_packed_config_holds_only_changes_and_rebuilds_the_config(overrides):
    cfg = compose(overrides)
    packed = graph.packed_config(cfg)
    assert set(packed) <= set(graph.PACKED_SECTIONS)
    rebuilt = from_plain(Config, packed)
    for section in graph.PACKED_SECTIONS:
        assert getattr(rebuilt, section) == getattr(cfg, section), section
    assert "run" not in packed and "device" not in packed and "fit" not in packed


def test_tensor_bits_travel_whole():
    cfg = compose(["export.tensor_bits={blocks.0.mlp.fc.weight:7}"])
    packed = graph.packed_config(cfg)
    assert packed["export"]["tensor_bits"] == {"blocks.0.mlp.fc.weight": 7}
    assert from_plain(Config, packed).export == cfg.export


def test_the_wrapped_script_is_one_exec_line_of_the_stripped_bundle():
    cfg = compose([])
    wrapped = script.script(cfg, "lzma")
    assert wrapped.decode().startswith('import lzma,base64;exec(lzma.decompress(base64.b85decode("')
    config, modules, _ = script.read_compact(wrapped)
    assert config == graph.packed_config(cfg)
    assert set(modules) == set(script.compact_keys(cfg).values())
    for name, text in modules.items():
        compile(text, name, "exec")
        assert '"""' not in text and "# " not in text.split("'")[0], name


GATED_ALL = ["export.gptq=true", "export.prune=0.02", "reg.prune_sparsity=0.2", "reg.ema_decay=0", "reg.swa_start=0.3",
             "reg.qat_bits=6", "reg.l1=0.0001", "reg.z_loss=0.0001", "model=records_tiny", "ttt=cpu",
             "export.lqer_rank=4", "train.muon_coefficients=polar_express"]


def _top_level_names(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


@pytest.mark.parametrize("overrides", [[], GATED_ALL])
def test_the_compact_script_names_every_module_by_a_short_key_its_imports_resolve_to(overrides):
    """One flat package of one- or two-letter modules (the root `__init__` besides), one per module the walk found
    that ships; every import between them, the bootstrap's included, names a shipped module and, for `from .x
    import y`, a name that module defines (the renaming across modules agrees)."""
    cfg = compose(overrides)
    keys = script.compact_keys(cfg)
    assert set(keys) <= set(graph.bundle_modules(cfg)) and len(set(keys.values())) == len(keys)
    assert {name for name in graph.bundle_modules(cfg) if not name.endswith("__init__")} <= set(keys)
    _, modules, rest = script.read_compact(script.script(cfg))
    assert set(modules) == set(keys.values())
    assert all(re.fullmatch(r"[a-z][a-z0-9_]?", key) for key in modules if key != "__init__"), sorted(modules)
    trees = {key: ast.parse(text) for key, text in modules.items()}
    defined = {key: _top_level_names(tree) for key, tree in trees.items()}
    (entry,) = [n for n in ast.walk(rest) if isinstance(n, ast.ImportFrom) and n.module.startswith("pgolf")]
    assert entry.module == f"pgolf.{keys['ship/standalone']}" and [a.name for a in entry.names] == ["main"]
    imports = [(key, node) for key, tree in trees.items() for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.level]
    assert imports and all(node.level == 1 for _, node in imports)
    assert not [n for tree in trees.values() for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not
                n.level and (n.module or "").startswith("pgolf")]
    gated_out = {flat.flat_keys(keys)[name] for name in flat.flat_keys(keys) if name not in keys}
    for key, node in imports:
        if node.module is None:
            for alias in node.names:
                assert alias.name in modules or alias.name in gated_out, (key, ast.unparse(node))
        elif node.module in modules:
            for alias in node.names:
                assert alias.name in defined[node.module], (key, ast.unparse(node))
        else:
            assert node.module in gated_out and overrides != GATED_ALL, (key, ast.unparse(node))


def test_the_compact_script_unpacks_flat_and_imports_its_entry(tmp_path):
    """Run as a user would, with arguments it refuses: the modules unpack to pgolf/<key>.py and the whole import
    graph of the entry resolves (the usage line comes from the shipped main)."""
    path = tmp_path / "train_gpt.py"
    path.write_bytes(script.script(compose(["model=records_tiny", "export.codec=rans"])))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PGOLF_BUNDLE_DIR": str(tmp_path / "bundle")}
    proc = subprocess.run([sys.executable, "-I", str(path), "--nope"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip() == "usage: train_gpt.py [--eval ARTIFACT]", proc.stderr
    (folder,) = (tmp_path / "bundle").iterdir()
    _, modules, _ = script.read_compact(path.read_bytes())
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*.py")} == {f"pgolf/{k}.py" for k in modules}


def test_the_readable_script_carries_the_modules_verbatim():
    cfg = compose([])
    text = script.script(cfg, "none").decode()
    tree = ast.parse(text)
    assigns = {node.targets[0].id: node.value for node in tree.body if isinstance(node, ast.Assign)}
    assert ast.literal_eval(assigns["MODULES"]) == graph.bundle_modules(cfg)
    assert ast.literal_eval(assigns["CONFIG"]) == graph.packed_config(cfg)


def test_stripping_keeps_behaviour_and_renames_locals_and_unnamed_parameters():
    source = textwrap.dedent('''
        """Module doc."""
        from dataclasses import dataclass
        LIMIT = 3

        @dataclass
        class Point:
            x: int = 1
            """field doc"""
            y: float = 2.0

        def total(values: list[int], scale: int = 2) -> int:
            """Doc."""
            running: int = 0  # a comment
            squares = [value * value for value in values]
            def bump(amount):
                nonlocal running
                running += amount * scale
            for item in squares:
                bump(item)
            try:
                raise ValueError(running)
            except ValueError as problem:
                caught = problem.args[0]
            return caught + LIMIT + Point().x + len(str(Point(y=3.0)))
    ''')
    plain, stripped = {}, {}
    exec(source, plain)
    trees = {"m": minify.prepare(ast.parse(source))}
    compact = minify.minify_module(minify.rename_parameters(trees, positional={"total"}, keywords={"scale"})["m"])
    exec(compact, stripped)
    assert stripped["total"]([1, 2, 3], scale=3) == plain["total"]([1, 2, 3], scale=3)
    assert "Doc" not in compact and "comment" not in compact and "squares" not in compact and "running" not in compact
    assert "values" not in compact  # no call names it: renamed
    assert "scale" in compact and "LIMIT" in compact  # a keyword some call passes, and a global, keep their names


def test_code_bytes_are_measured_unless_a_number_or_files_are_given(tmp_path):
    cfg = compose([])
    assert code_bytes.count_code_bytes(cfg) == len(script.script(cfg, "lzma"))
    assert code_bytes.count_code_bytes(dataclasses.replace(cfg, export=ExportConfig(code_bytes=12345))) == 12345
    assert code_bytes.count_code_bytes(dataclasses.replace(cfg, export=ExportConfig(code_bytes=0))) == 0
    (tmp_path / "train_gpt.py").write_bytes(b"x" * 1234)
    (tmp_path / "extra.py").write_bytes(b"y" * 10)
    files = ExportConfig(code_bytes=99, code_files=[str(tmp_path / "train_gpt.py"), str(tmp_path / "extra.py")])
    assert code_bytes.count_code_bytes(dataclasses.replace(cfg, export=files)) == 1244
    missing = ExportConfig(code_files=[str(tmp_path / "nope.py")])
    with pytest.raises(ConfigError, match="nope.py is not a file"):
        code_bytes.count_code_bytes(dataclasses.replace(cfg, export=missing))


def test_an_edited_checkout_never_serves_a_stale_size(tmp_path, monkeypatch):
    copy = tmp_path / "pgolf"
    shutil.copytree(graph.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(graph, "PACKAGE", copy)
    monkeypatch.setattr(code_bytes, "PACKAGE", copy)
    monkeypatch.setattr(script, "BOOTSTRAP", copy / "ship" / "bootstrap.py")
    cfg = compose([])
    before = code_bytes.measured_code_bytes(cfg)
    path = copy / "ship" / "standalone.py"
    path.write_text(path.read_text().replace("usage: train_gpt.py [--eval ARTIFACT]",
                                             "usage: train_gpt.py [--eval ARTIFACT] " + "0123456789" * 30))
    after = code_bytes.measured_code_bytes(cfg)
    assert after > before
    assert after == len(script.script(cfg, "lzma"))


def test_bad_wrap_is_a_config_error():
    with pytest.raises(ConfigError, match="--wrap"):
        script.script(compose([]), "gzip")


def test_the_script_is_the_same_bytes_in_every_process():
    """Renaming must not depend on set order (string hashes are salted per process): a total measured by train and
    the file pack writes later must agree."""
    code = "import hashlib; from pgolf import config; from pgolf.bundle import script; " \
           "print(hashlib.sha256(script.script(config.compose(" \
           "['reg.qat_bits=6', 'export.gptq=true']))).hexdigest())"
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(digests) == 1


def test_measured_sizes_are_kept_on_disk_by_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("PGOLF_CACHE", str(tmp_path))
    monkeypatch.setattr(code_bytes, "_MEASURED", {})
    cfg = compose([])
    size = code_bytes.measured_code_bytes(cfg)
    (entry,) = (tmp_path / "code-bytes").iterdir()
    assert json.loads(entry.read_text()) == {"bytes": size} == {"bytes": len(script.script(cfg))}
    entry.write_text("not json")  # a damaged entry is measured again, never trusted
    monkeypatch.setattr(code_bytes, "_MEASURED", {})
    assert code_bytes.measured_code_bytes(cfg) == size
    assert json.loads(entry.read_text()) == {"bytes": size}

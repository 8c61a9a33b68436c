"""The import arrows of DESIGN.md, checked by walking every module's imports with ast."""

import ast
from pathlib import Path

import pgolf

PACKAGE = Path(pgolf.__file__).parent

# Lower layers never import higher ones (docs/DESIGN.md, "Imports flow one way").
LAYERS = {
    "errors": 0, "progress": 0, "signals": 0,
    "schema": 1, "runs": 1, "model": 1,
    "config": 2, "data": 2, "tables": 2, "bundle": 2,
    "evaluate": 3, "export": 3, "checkpoint": 3,
    "train": 4,
    "job": 5,
    "experiment": 6, "standalone": 6,
    "fit": 7, "report": 7, "pack": 7,
    "sweep": 8,
    "cli": 9, "__main__": 10, "bootstrap": 10,
}
TERMINAL_LIBS = {"typer": {"cli"}, "rich": {"cli", "tables"}, "click": {"cli"}, "matplotlib": {"tables"}}
CONFIG_LIBS = {"hydra": {"config"}, "omegaconf": {"config"}}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = rel.parts
        if parts == ("__init__",):
            continue
        yield path, parts[0]


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            if node.module == "pgolf":
                for alias in node.names:
                    yield f"pgolf.{alias.name}"


def test_every_module_has_a_layer():
    missing = {top for _, top in _modules() if top not in LAYERS}
    assert not missing, f"modules without a layer in this test: {missing}"


def test_imports_flow_one_way():
    wrong = []
    for path, top in _modules():
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "pgolf" or len(parts) < 2:
                continue
            target = parts[1]
            if target == top:
                continue
            if top == "model":
                wrong.append(f"{path.name}: model/ imports {name}")
            elif LAYERS.get(target, 99) >= LAYERS[top]:
                wrong.append(f"{path.relative_to(PACKAGE)} ({top}) imports {name}")
    assert not wrong, "\n".join(wrong)


def test_only_cli_and_tables_touch_terminal_libs_and_only_config_touches_hydra():
    wrong = []
    for path, top in _modules():
        for name in _imports(path):
            lib = name.split(".")[0]
            allowed = TERMINAL_LIBS.get(lib) or CONFIG_LIBS.get(lib)
            if allowed is not None and top not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {lib}")
    assert not wrong, "\n".join(wrong)


def test_huggingface_hub_is_imported_only_inside_data_fetch_functions():
    """`pgolf data fetch` is the one user of the Hub: no other command pays for (or depends on) importing it."""
    wrong = []
    for path, _ in _modules():
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(name.split(".")[0] == "huggingface_hub" for name in names):
                where = path.relative_to(PACKAGE).as_posix()
                if where != "data/fetch.py" or id(node) in top_level:
                    wrong.append(f"{where}:{node.lineno} imports huggingface_hub")
    assert not wrong, "\n".join(wrong)

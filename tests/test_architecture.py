"""The import arrows of DESIGN.md, checked by walking every module's imports with ast."""

import ast
from pathlib import Path

import pgolf

PACKAGE = Path(pgolf.__file__).parent

# Lower layers never import higher ones, nor others of their own layer (docs/DESIGN.md, "Layers"): a top-level
# module or package per entry.
LAYERS = {
    "errors": 0, "progress": 0, "atomic": 0,
    "runtime": 1, "schema": 1, "model": 1,
    "config": 2, "data": 2, "bundle": 2,
    "evaluate": 3, "export": 3,
    "train": 4, "ttt": 4,
    "jobs": 5,
    "results": 6, "ship": 6,
    "fit": 7, "audit": 7,
    "sweep": 8, "search": 8,
    "cli": 9,
    "__main__": 10,
}
VERB_ENTRIES = {"fit": "pgolf.fit.budget", "sweep": "pgolf.sweep.launch", "ship": "pgolf.ship.pack",
                "search": "pgolf.search.run"}
"""A verb's entry module: all that another verb may import of it (sweep runs fit-budget), never its internals."""
MAX_FLAT_MODULES = 8
TERMINAL_LIBS = {"typer": {"cli"}, "rich": {"cli", "results"}, "click": {"cli"}, "matplotlib": {"results"}}
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
            elif top in VERB_ENTRIES and target in VERB_ENTRIES and ".".join(parts[:3]) != VERB_ENTRIES[target]:
                wrong.append(f"{path.relative_to(PACKAGE)} ({top}) reaches into another verb: {name}")
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


def test_few_modules_stand_flat_and_every_package_has_a_job():
    flat = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(flat) <= MAX_FLAT_MODULES, f"{len(flat)} flat modules: {flat}"


def _module_graph():
    names = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        names[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    graph = {}
    for name, path in names.items():
        targets = set()
        for imported in _imports(path):
            while imported and imported not in names:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_import_circles():
    """No two modules reach each other (depth-first search for a back edge), lazy imports included."""
    graph = _module_graph()
    state, circle = {}, []

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                circle.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circle, "\n".join(circle)

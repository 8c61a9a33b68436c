"""Short flat module names for the compact script: `c` for pgolf/export/coding/rans.py, all in one package.

The compact script unpacks its modules into one flat `pgolf` package (files still: numba caches its kernels beside
them) under one- or two-letter names, lowercase (a case-insensitive disk keeps them apart), and their imports of
each other become relative: `from pgolf.export.coding.rans import x` -> `from .c import x`, `from
pgolf.export.coding import rans` -> `from . import c as rans` (the module keeps the name its code uses). A package
`__init__` is a module like the others, shipped only when some module takes a name from it; only the root's
stays `__init__`, the empty file that makes the folder a package. The readable wrap keeps the real paths.
"""

from __future__ import annotations

import ast
import keyword
import string
from collections.abc import Iterable

from pgolf.bundle import graph


def _short_names():
    letters = string.ascii_lowercase
    for name in [*letters, *(a + b for a in letters for b in letters + string.digits + "_")]:
        if not keyword.iskeyword(name):
            yield name


def flat_keys(bundled: Iterable[str]) -> dict[str, str]:
    """Path in the package without `.py` (`export/coding/rans`) -> the compact script's name for it, for every module
    of the package: the `bundled` ones (sorted) first, so they get the one-letter names; the rest only so that an
    import the config never runs (a gated feature's) still names something."""
    every = {p.relative_to(graph.PACKAGE).with_suffix("").as_posix() for p in graph.PACKAGE.rglob("*.py")}
    order = sorted(set(bundled) - {"__init__"}) + sorted(every - set(bundled) - {"__init__"})
    return {"__init__": "__init__", **dict(zip(order, _short_names()))}


def _module_path(dotted: str, keys: dict[str, str]) -> str | None:
    """`pgolf.export.coding.rans` -> `export/coding/rans`, `pgolf.model` -> `model/__init__` (None: no such file)."""
    rel = dotted.split(".")[1:]
    for candidate in ("/".join(rel), "/".join([*rel, "__init__"])):
        if candidate in keys:
            return candidate
    return None


class _Flatten(ast.NodeTransformer):
    """Imports of pgolf's modules rewritten to name their flat keys: relative inside the package, absolute
    (`from pgolf.a import main`) in the bootstrap, the top of the script, which is no module of it."""

    def __init__(self, keys: dict[str, str], relative: bool) -> None:
        self.keys, self.relative = keys, relative

    def _from(self, key: str | None, names: list[ast.alias]) -> ast.ImportFrom:
        if self.relative:
            return ast.ImportFrom(module=key, names=names, level=1)
        return ast.ImportFrom(module="pgolf" + (f".{key}" if key else ""), names=names, level=0)

    def visit_Import(self, node: ast.Import) -> ast.Import:
        if any(alias.name.split(".")[0] == "pgolf" for alias in node.names):
            raise RuntimeError(f"bundle: `import {node.names[0].name}`: import pgolf's modules with `from ... import`")
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom):
        if node.level or not node.module or node.module.split(".")[0] != "pgolf":
            return node
        modules, names = [], []
        for alias in node.names:
            path = _module_path(f"{node.module}.{alias.name}", self.keys)
            if path is None:
                names.append(alias)
            else:
                key = self.keys[path]
                modules.append(ast.alias(key, alias.asname or (alias.name if key != alias.name else None)))
        out = []
        if modules:
            out.append(self._from(None, modules))
        if names:
            path = _module_path(node.module, self.keys)
            if path is None:
                raise RuntimeError(f"bundle: {node.module} is no pgolf module")
            out.append(self._from(None if path == "__init__" else self.keys[path], names))
        return [ast.copy_location(stmt, node) for stmt in out]


def flatten_imports(tree: ast.Module, keys: dict[str, str], relative: bool = True) -> ast.Module:
    """`tree` with its imports of pgolf's modules naming their `keys`, relative unless `relative` is False."""
    return ast.fix_missing_locations(_Flatten(keys, relative).visit(tree))

"""Minifying the bundle: python-minifier (PyPI `python-minifier`) per module, and what needs the whole bundle,
which pgolf does: unused imports and unreferenced top-level code dropped, globals renamed across modules, and the
parameters no call in the bundle names by keyword renamed.

The order (`script._compact_modules`): `prepare` each module (annotations out, so that `drop_unused_imports` sees
what they used), `drop_unused_imports`, `shake`, `rename_globals`, `rename_parameters`, then `minify_module`:
python-minifier strips docstrings, renames locals and prints the module compactly.
"""

from __future__ import annotations

import ast
import builtins
import keyword

import python_minifier

from pgolf.bundle.graph import _module_file


class _Prepare(ast.NodeTransformer):
    """Annotations out (a class-body one, a dataclass or NamedTuple field, becomes `int`: only its presence counts),
    exception chaining (`raise ... from ...`: it only shapes tracebacks) and `from __future__` imports."""

    def __init__(self) -> None:
        self.in_class = [False]

    def visit_ImportFrom(self, node: ast.ImportFrom):
        return None if node.module == "__future__" else node

    def visit_Raise(self, node: ast.Raise) -> ast.Raise:
        node.cause = None
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        self.in_class.append(True)
        self.generic_visit(node)
        self.in_class.pop()
        return node

    def visit_FunctionDef(self, node):
        self.in_class.append(False)
        self.generic_visit(node)
        self.in_class.pop()
        node.body = node.body or [ast.Pass()]
        node.returns = None
        for arg in _params(node):
            arg.annotation = None
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign):
        if self.in_class[-1]:
            node.annotation = ast.Name("int", ast.Load())
            return node
        if node.value is None:
            return None
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)


def prepare(tree: ast.Module) -> ast.Module:
    """`tree` without annotations, exception chaining and `from __future__` imports (`_Prepare`)."""
    return ast.fix_missing_locations(_Prepare().visit(tree))


_OPTIONS = {"remove_literal_statements": True, "remove_annotations": True, "rename_locals": True,
            "rename_globals": False, "hoist_literals": False, "prefer_single_line": True}
"""python-minifier's settings: docstrings out, locals renamed, statements joined by `;` where that costs nothing,
no literal hoisting (its `A='text'` names cost more bytes after lzma than the repeated literals: bench_minify),
globals left to `rename_globals`, which sees the whole bundle."""


def minify_module(tree: ast.Module) -> str:
    """The module compacted by python-minifier."""
    return python_minifier.minify(ast.unparse(tree), **_OPTIONS)


def _short_names(taken: set[str]):
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for name in [*letters, *(a + b for a in letters for b in letters + "0123456789_")]:
        if name not in taken and not keyword.iskeyword(name):
            yield name


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    a = func.args
    return [x for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if x]


def positional_only_functions(trees: dict[str, ast.Module]) -> set[str]:
    """Top-level functions that are only ever called by name (never passed as a value): their parameters that no
    call in the bundle names as a keyword can be renamed."""
    calls, other = set(), set()
    for tree in trees.values():
        funcs = {id(c.func) for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                (calls if id(node) in funcs else other).add(node.id)
    tops = {n.name for tree in trees.values() for n in tree.body if isinstance(n, (ast.FunctionDef,))}
    return {name for name in tops & calls if name not in other}


def _rebound(func: ast.AST) -> set[str]:
    """Names that a scope nested in `func` binds, or that `func` binds by import, global or nonlocal."""
    names: set[str] = set()
    for node in ast.walk(func):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(x.asname or x.name).split(".")[0] for x in node.names}
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names |= set(node.names)
        elif node is not func and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
                                                     ast.comprehension)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.arg):
                    names.add(inner.arg)
                elif isinstance(inner, ast.Name) and not isinstance(inner.ctx, ast.Load):
                    names.add(inner.id)
                elif isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(inner.name)
    return names


def rename_parameters(trees: dict[str, ast.Module], positional: set[str], keywords: set[str]) -> dict[str, ast.Module]:
    """Give short names to the parameters no caller can name, which python-minifier, seeing one module, keeps:
    `*args`, `**kwargs`, `self`/`cls` of undecorated methods, and the positional parameters no call in the bundle
    names as a keyword (`keywords`) of methods and of the top-level functions in `positional`.

    A parameter that a nested scope, an import, `global` or `nonlocal` rebinds keeps its name; the new names avoid
    every identifier of the module, the builtins and the new names of the enclosing functions."""
    for tree in trees.values():
        _ParameterRenamer(tree, positional, keywords).visit(tree, set())
    return trees


class _ParameterRenamer:
    def __init__(self, tree: ast.Module, positional: set[str], keywords: set[str]) -> None:
        self.taken = set(dir(builtins)).union(*(_identifiers(node) for node in ast.walk(tree)))
        self.methods = {id(f) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body}
        self.top = {id(f) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name in positional}
        self.keywords = keywords

    def _free(self, func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
        a = func.args
        free = [x for x in (a.vararg, a.kwarg) if x]
        named = [*a.posonlyargs, *a.args]
        if id(func) in self.methods and named and named[0].arg in ("self", "cls") and not func.decorator_list:
            free.append(named.pop(0))
        if id(func) in self.methods or id(func) in self.top:
            free += [x for x in named if x.arg not in self.keywords]
        rebound = _rebound(func)
        return [x for x in free if x.arg not in rebound]

    def visit(self, node: ast.AST, outer: set[str]) -> None:
        """Rename in the functions under `node`; `outer`: the new names of the functions around them."""
        for func in ast.iter_child_nodes(node):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.visit(func, outer)
                continue
            free = self._free(func)
            mapping = dict(zip((x.arg for x in free), _short_names(self.taken | outer)))
            for x in free:
                x.arg = mapping[x.arg]
            for stmt in func.body:
                for inner in ast.walk(stmt):
                    if isinstance(inner, ast.Name) and inner.id in mapping:
                        inner.id = mapping[inner.id]
            self.visit(func, outer | set(mapping.values()))


_NAMED_CLASSES = ("errors", "schema")
"""Modules whose class names reach users (`__name__` in messages: config records, error types)."""


def rename_globals(trees: dict[str, ast.Module], keep: set[str]) -> dict[str, ast.Module]:
    """Give the bundle's top-level functions, classes and constants short names, in every module that names them.

    Only names that are never an attribute, a keyword, a parameter, a method or nested name, an `as` name, a
    global/nonlocal or an exception name anywhere in the bundle are renamed (so no call by keyword, attribute
    access or shadowing can miss the rename); `keep` and the classes of _NAMED_CLASSES keep theirs."""
    top: set[str] = set()
    for module, tree in trees.items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
                    isinstance(node, ast.ClassDef) and module not in _NAMED_CLASSES):
                top.add(node.name)
            elif isinstance(node, ast.Assign):
                top |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    unsafe, taken = set(keep) | set(dir(builtins)), set(dir(builtins))
    for tree in trees.values():
        toplevel = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names = _identifiers(node)
            taken |= names
            if isinstance(node, (ast.Attribute, ast.keyword, ast.arg, ast.Global, ast.Nonlocal, ast.ExceptHandler)) \
                    or (isinstance(node, ast.alias) and node.asname):
                unsafe |= names
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and id(node) not in toplevel:
                unsafe.add(node.name)
    counts: dict[str, int] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in top and node.id not in unsafe:
                counts[node.id] = counts.get(node.id, 0) + 1
    mapping = dict(zip(sorted(counts, key=lambda n: (-counts[n] * len(n), n)), _short_names(taken)))
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in mapping:
                node.id = mapping[node.id]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in mapping:
                node.name = mapping[node.name]
            elif isinstance(node, ast.alias) and node.name in mapping:
                node.name = mapping[node.name]
    return trees


def _identifiers(node: ast.AST) -> set[str]:
    """Every identifier a node spells (its own fields, not its children's)."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, ast.keyword):
        return {node.arg} if node.arg else set()
    if isinstance(node, ast.arg):
        return {node.arg}
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return set(node.names)
    if isinstance(node, ast.ExceptHandler):
        return {node.name} if node.name else set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.alias):
        return {node.name.split(".")[0], node.asname or ""} - {""}
    return set()


def _literal(text: str) -> str:
    """`text` as a readable Python literal: a raw triple-quoted string when that round-trips, else repr."""
    for quote in ("'''", '"""'):
        candidate = f"r{quote}{text}{quote}"
        try:
            if ast.literal_eval(candidate) == text:
                return candidate
        except (SyntaxError, ValueError):
            continue
    return repr(text)


def _referenced(trees: dict[str, ast.Module]) -> set[str]:
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add(node.name.split(".")[-1])
    return names


def _package_names_used(modules: dict[str, str]) -> set[str]:
    """Packages (`model/__init__`) some bundled module takes a name from (not a submodule)."""
    used = set()
    for text in modules.values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pgolf"):
                init = "/".join([*node.module.split(".")[1:], "__init__"])
                if init in modules and any(_module_file(f"{node.module}.{a.name}") is None for a in node.names):
                    used.add(init)
    return used


def drop_unused_imports(trees: dict[str, ast.Module]) -> dict[str, ast.Module]:
    """Imports a module no longer names once its annotations are gone (`Callable`, `Tensor`, a type imported for a
    signature); package `__init__`s keep theirs (they re-export)."""
    for name, tree in trees.items():
        if name.endswith("__init__"):
            continue
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}

        def bound(alias: ast.alias) -> str:
            return alias.asname or alias.name.split(".")[0]

        for node in ast.walk(tree):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if not isinstance(block, list):
                    continue
                kept = []
                for stmt in block:
                    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                        stmt.names = [alias for alias in stmt.names if bound(alias) in used]
                        if not stmt.names:
                            continue
                    kept.append(stmt)
                setattr(node, field, kept or ([ast.Pass()] if field == "body" and block else []))
    return trees


def _unused_definition(stmt: ast.stmt, used: set[str]) -> bool:
    """A top-level function, class, or call-free constant (a type alias, a table) that nothing names."""
    if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
        return stmt.name not in used
    return (isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) and t.id not in used for t in stmt.targets)
            and not any(isinstance(n, ast.Call) for n in ast.walk(stmt.value)))


def shake(trees: dict[str, ast.Module]) -> dict[str, ast.Module]:
    """The modules without the top-level functions and classes no bundled code names (repeated until none is
    left): tokenizer training, run folders and the like ride along with modules the script needs."""
    while True:
        used = _referenced(trees) | {"main"}
        dropped = False
        for tree in trees.values():
            kept = [s for s in tree.body if not _unused_definition(s, used)]
            dropped |= len(kept) < len(tree.body)
            tree.body = kept
        if not dropped:
            return trees

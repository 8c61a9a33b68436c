"""pgolf's minifier: docstrings, comments and annotations stripped, unused imports and unreferenced
top-level code dropped, globals renamed across modules and function locals renamed.
"""

from __future__ import annotations

import ast
import builtins
import keyword

from pgolf.bundle.graph import _module_file


class _Strip(ast.NodeTransformer):
    """Drop docstrings and bare strings, function annotations, annotation-only statements and exception chaining
    (`raise ... from ...`); dataclass fields keep an annotation (`int`: only its presence counts)."""

    def __init__(self) -> None:
        self.in_class = [False]

    @staticmethod
    def _body(body: list[ast.stmt]) -> list[ast.stmt]:
        kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                        and isinstance(s.value.value, str))]
        return kept or [ast.Pass()]

    def visit_Module(self, node: ast.Module) -> ast.Module:
        self.generic_visit(node)
        node.body = self._body(node.body) if node.body else []
        return node

    def visit_Raise(self, node: ast.Raise) -> ast.Raise:
        node.cause = None  # `from exc` / `from None` only shape tracebacks; the script prints one line
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom):
        return None if node.module == "__future__" else node  # no annotation is left to postpone

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        self.in_class.append(True)
        self.generic_visit(node)
        self.in_class.pop()
        node.body = self._body(node.body)
        return node

    def visit_FunctionDef(self, node):
        self.in_class.append(False)
        self.generic_visit(node)
        self.in_class.pop()
        node.body = self._body(node.body)
        node.returns = None
        a = node.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is not None:
                arg.annotation = None
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign):
        if self.in_class[-1]:  # a dataclass field needs an annotation, not a meaningful one
            node.annotation = ast.Name("int")
            return node
        if node.value is None:
            return None
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _own_nodes(scope: ast.AST):
    """Nodes of `scope`'s body, not descending into nested functions, lambdas or classes."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (*_SCOPES, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))


def _nested_bindings(scope: ast.AST) -> set[str]:
    """Names bound inside functions, lambdas and classes nested in `scope` (any depth)."""
    names: set[str] = set()
    for node in ast.walk(scope):
        if node is scope:
            continue
        if isinstance(node, (*_SCOPES, ast.ClassDef)):
            if not isinstance(node, ast.Lambda):
                names.add(node.name)
            if not isinstance(node, ast.ClassDef):
                a = node.args
                names |= {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if x}
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name) and not isinstance(inner.ctx, ast.Load):
                    names.add(inner.id)
                elif isinstance(inner, (ast.Global, ast.Nonlocal)):
                    names |= set(inner.names)
    return names


def _short_names(taken: set[str]):
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for name in [*letters, *(a + b for a in letters for b in letters + "0123456789_")]:
        if name not in taken and not keyword.iskeyword(name):
            yield name


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    a = func.args
    return [x for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if x]


def _body_nodes(func: ast.AST):
    """Every node of a function's body and its parameters (not defaults or decorators: they run outside it)."""
    yield from _params(func)
    for stmt in func.body:
        yield from ast.walk(stmt)


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


def rename_locals(tree: ast.Module, positional: set[str] = frozenset(), keywords: set[str] = frozenset()
                  ) -> ast.Module:
    """Give every function's own local variables short names; parameters too where no caller can name them
    (`self`/`cls` of methods; functions in `positional` for parameters not in `keywords`, the bundle's keyword
    arguments).

    A name is renamed only when the function binds it and no nested scope binds it too; the new names avoid every
    identifier of the module and the builtins, so no global, builtin or outer variable is captured."""
    taken = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | set(dir(builtins))
    taken |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    taken |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    methods = {id(f) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body}
    top = {id(f) for f in tree.body}
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        params = _params(func)
        free = set()
        if id(func) in methods and params and params[0].arg in ("self", "cls") and not func.decorator_list:
            free.add(params[0].arg)
        if id(func) in methods:
            free |= {x.arg for x in params[1:] if x.arg not in keywords and x not in func.args.kwonlyargs}
        if id(func) in top and func.name in positional:
            free |= {x.arg for x in params if x.arg not in keywords and x not in func.args.kwonlyargs}
        fixed = ({x.arg for x in params} - free) | _nested_bindings(func)
        counts: dict[str, int] = dict.fromkeys(sorted(free), 0)  # sorted: set order varies by process
        nodes = list(_body_nodes(func))
        for node in nodes:
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                fixed |= set(node.names)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                fixed |= {(x.asname or x.name).split(".")[0] for x in node.names}
            elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                counts.setdefault(node.id, 0)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                counts.setdefault(node.name, 0)
        names = [node for node in nodes if isinstance(node, ast.Name)]
        for node in names:
            if node.id in counts:
                counts[node.id] += 1
        local = sorted((n for n in counts if n not in fixed), key=lambda n: (-counts[n], n))
        mapping = dict(zip(local, _short_names(taken | {node.id for node in names})))
        for node in nodes:
            if isinstance(node, ast.Name) and node.id in mapping:
                node.id = mapping[node.id]
            elif isinstance(node, ast.ExceptHandler) and node.name in mapping:
                node.name = mapping[node.name]
            elif isinstance(node, ast.arg) and node.arg in mapping and node in params:
                node.arg = mapping[node.arg]
    return tree


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


def _unparse(tree: ast.Module) -> str:
    """Source of `tree` with one space per indent level and without the parentheses ast.unparse puts around a
    tuple that is assigned or returned."""
    code = ast.unparse(tree)
    lines = []
    for line in code.splitlines():
        body = line.lstrip(" ")
        lines.append(" " * ((len(line) - len(body)) // 4) + _bare_tuple(body))
    return "\n".join(lines) + "\n"


def _bare_tuple(stmt: str) -> str:
    """`a, b = (x, y)` -> `a, b = x, y` and `return (x, y)` -> `return x, y`, kept only when the statement parses to
    the same tree."""
    if not stmt.endswith(")"):
        return stmt
    for marker in ("= (", "return ("):
        at = stmt.find(marker)
        if at < 0 or (marker == "return (" and at != 0):
            continue
        candidate = stmt[: at + len(marker) - 1] + stmt[at + len(marker): -1]
        try:
            if ast.dump(ast.parse(candidate)) == ast.dump(ast.parse(stmt)):
                return candidate
        except SyntaxError:
            pass
    return stmt


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

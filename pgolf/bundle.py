"""The `train_gpt.py` that `pgolf pack` ships, as bytes, and the code bytes every total counts.

The script carries pgolf's own modules, not a second copy kept by hand: the
import graph is walked (ast, nothing is imported) from `standalone.py`, the
shipped main. Imports listed in GATED are followed only when the packed
config uses them (GPTQ, export pruning, gradual pruning, weight averaging,
loss penalties, the ctx, zstd and brotli codecs), so features a config does not use cost it no
bytes; such a module must be imported where it is used, never at import
time (`bundle_modules` refuses a bundle that would break).

Two forms (`--wrap`):
- `none`: readable. The packed config, the modules verbatim as string
  literals, and `bootstrap.py`, which unpacks them to files and runs them.
- `lzma` (the default, as the top records ship): the same script with
  docstrings, comments and annotations stripped (ast round trip), one-space
  indents, lzma-compressed and base85-encoded inside a one-line `exec`.

The packed config holds only what differs from the schema defaults (the
bundled schema fills the rest), and no run/budget/fit/launcher/device
settings: the script picks CUDA when present. `count_code_bytes` measures the
wrapped script for a config, cached by a hash of the sources and the config
(in-process and in ~/.cache/pgolf), so an edited checkout never serves a stale
size.
"""

from __future__ import annotations

import ast
import base64
import builtins
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import keyword
import lzma
import os
import pprint
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pgolf
from pgolf.errors import ConfigError
from pgolf.model.knobs import RECORD_KNOBS, uses_records
from pgolf.runs import atomic_write_json
from pgolf.schema import Config, ExportConfig

PACKAGE = Path(pgolf.__file__).resolve().parent
ENTRY = "pgolf.standalone"
BOOTSTRAP = PACKAGE / "bootstrap.py"
WRAPS = ("lzma", "none")
PACKED_SECTIONS = ("data", "model", "train", "reg", "export", "seed")
"""Config parts the script needs; run, budget, fit, launcher and device are pgolf's own."""
_NOT_REQUIREMENTS = {"pgolf", "torch", "numpy", "__future__"}

GATED: dict[str, Callable[[Config], bool]] = {
    "pgolf.export.gptq": lambda cfg: cfg.export.gptq,
    "pgolf.model.records": lambda cfg: uses_records({key: getattr(cfg.model, key) for key in RECORD_KNOBS}),
    "pgolf.export.prune": lambda cfg: cfg.export.prune > 0,
    "pgolf.train.pruning": lambda cfg: cfg.reg.prune_sparsity > 0,
    "pgolf.train.averaging": lambda cfg: cfg.reg.ema_decay > 0 or cfg.reg.swa_start > 0,
    "pgolf.train.penalties": lambda cfg: max(cfg.reg.l1, cfg.reg.l2, cfg.reg.z_loss, cfg.reg.qerr_penalty,
                                             cfg.reg.sv_penalty) > 0,
    "pgolf.export.ctx": lambda cfg: cfg.export.codec in ("auto", "ctx"),
    "zstandard": lambda cfg: cfg.export.codec in ("auto", "zstd"),
    "brotli": lambda cfg: cfg.export.codec in ("auto", "brotli"),
}
"""Imports followed only when the config uses them (module or third-party package -> does it)."""


# --------------------------------------------------------------------------- what ships

def packed_config(cfg: Config) -> dict[str, Any]:
    """The config the script trains and exports: PACKED_SECTIONS, only the values that differ from the schema."""
    changed = changed_fields(cfg, Config())
    return {key: changed[key] for key in PACKED_SECTIONS if key in changed}


def changed_fields(record: Any, default: Any) -> dict[str, Any]:
    """Fields of a config record that differ from `default`'s, nested records compared field by field."""
    out = {}
    for f in dataclasses.fields(record):
        value, base = getattr(record, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            nested = changed_fields(value, base)
            if nested:
                out[f.name] = nested
        elif value != base:
            out[f.name] = value
    return out


def _module_file(name: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(imported module, at import time?) for every import in a module; `from pkg import mod` names the module."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, depth: int) -> None:
        for child in ast.iter_child_nodes(node):
            inner = depth + isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, depth == 0) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, depth == 0))
                found.extend((f"{child.module}.{alias.name}", depth == 0) for alias in child.names
                             if child.module.startswith("pgolf") and _module_file(f"{child.module}.{alias.name}"))
            visit(child, inner)

    visit(tree, 0)
    return found


def _gate(name: str, cfg: Config) -> bool | None:
    """Whether a gated import is used by `cfg` (None: not gated)."""
    for key in (name, name.split(".")[0]):
        if key in GATED:
            return GATED[key](cfg)
    return None


def walk(cfg: Config) -> tuple[dict[str, Path], set[str]]:
    """(pgolf module -> file, third-party top-level packages) the script needs for `cfg`."""
    modules: dict[str, Path] = {}
    packages: set[str] = set()
    todo = [ENTRY]
    while todo:
        name = todo.pop()
        if name in modules:
            continue
        path = _module_file(name)
        modules[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) not in modules]
        for target, at_import in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            used = _gate(target, cfg)
            if used is False:
                if at_import:
                    raise RuntimeError(f"bundle: {name} imports the gated {target} at import time; import it where "
                                       "it is used")
                continue
            top = target.split(".")[0]
            if top == "pgolf":
                if _module_file(target) is not None:
                    todo.append(target)
            elif top not in _NOT_REQUIREMENTS and top not in sys.stdlib_module_names:
                packages.add(top)
    return modules, packages


def bundle_modules(cfg: Config) -> dict[str, str]:
    """Path inside the package without `.py` (`export/artifact`, `__init__`) -> source of every pgolf module the
    script for `cfg` runs, sorted by path."""
    modules, _ = walk(cfg)
    files = {path.relative_to(PACKAGE).with_suffix("").as_posix(): path for path in modules.values()}
    return {rel: files[rel].read_text(encoding="utf-8") for rel in sorted(files)}


def requirements(cfg: Config, codecs: set[str] = frozenset()) -> list[str]:
    """`requirements.txt` lines: the packages the script imports beyond torch, numpy and the standard library,
    pinned to the installed versions. `codecs` adds the libraries of the codecs an artifact uses."""
    _, packages = walk(cfg)
    packages |= {lib for codec, lib in (("zstd", "zstandard"), ("brotli", "brotli")) if codec in codecs}
    dists = importlib.metadata.packages_distributions()
    lines = []
    for package in sorted(packages):
        dist = (dists.get(package) or [package])[0]
        try:
            lines.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(f"the packed script imports {package}, which is not installed here") from None
    return lines


# --------------------------------------------------------------------------- stripping and wrapping

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


def _readable(cfg: Config, modules: dict[str, str]) -> str:
    bootstrap = BOOTSTRAP.read_text(encoding="utf-8")
    bootstrap = bootstrap[bootstrap.index('"""', 3) + 3:].lstrip("\n")  # its docstring speaks of pgolf's tree
    entries = "".join(f"    {name!r}: {_literal(text)},\n" for name, text in modules.items())
    return (f'#!/usr/bin/env python3\n"""Parameter Golf script packed by pgolf {pgolf.__version__}.\n\n'
            "torchrun --standalone --nproc_per_node=8 train_gpt.py  train CONFIG, export final_model.pgolf, score it\n"
            "python train_gpt.py --eval final_model.pgolf            score an artifact\n"
            "Environment variables (DATA_PATH, TOKENIZER_PATH, ITERATIONS, MAX_WALLCLOCK_SECONDS, TRAIN_BATCH_TOKENS,\n"
            "TRAIN_SEQ_LEN, SEED, VAL_TOKENS, VAL_PATTERN) override CONFIG, which lists what differs from pgolf's\n"
            'defaults (pgolf/schema.py below). MODULES are pgolf\'s own, unpacked to files and imported.\n"""\n\n'
            f"CONFIG = {pprint.pformat(packed_config(cfg), width=110, sort_dicts=False)}\n\n"
            f"MODULES = {{\n{entries}}}\n\n{bootstrap}\n\nraise SystemExit(run(MODULES, CONFIG))\n")


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


def _compact(cfg: Config, modules: dict[str, str]) -> str:
    """The script's payload: the packed config, the compacted modules and the bootstrap."""
    return f"CONFIG={packed_config(cfg)!r}\n{_compact_modules(tuple(modules.items()), BOOTSTRAP.read_text())}"


@functools.lru_cache(maxsize=8)
def _compact_modules(modules: tuple[tuple[str, str], ...], bootstrap_source: str) -> str:
    """`MODULES={...}` and the bootstrap, compacted: docstrings, comments, annotations and unused imports stripped,
    unreferenced top-level code dropped, globals and locals renamed; a package `__init__` no module takes a name
    from ships empty. It depends on the module set only, so configs that share one share the work (~1 s)."""
    sources = dict(modules)
    needed = _package_names_used(sources)
    trees = {name: _Strip().visit(ast.parse(text if not name.endswith("__init__") or name in needed else ""))
             for name, text in sources.items()}
    trees = rename_globals(shake(drop_unused_imports(trees)), keep={"main", "run"})
    positional = positional_only_functions(trees)
    keywords = {k.arg for tree in trees.values() for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg}
    stripped = "".join(f"{name!r}:{_literal(_unparse(rename_locals(tree, positional, keywords)))},"
                       for name, tree in trees.items())
    bootstrap = rename_locals(_Strip().visit(ast.parse(bootstrap_source)), positional={"run"})
    return f"MODULES={{{stripped}}}\n{_unparse(bootstrap)}raise SystemExit(run(MODULES,CONFIG))\n"


_LZMA_SETTINGS = tuple({"lc": lc, "lp": 0, "pb": 0} for lc in (2, 3))


def _lzma(data: bytes) -> bytes:
    """The smallest .lzma (13-byte header, which `lzma.decompress` reads) over a few literal-context settings."""
    return min((lzma.compress(data, format=lzma.FORMAT_ALONE, filters=[
        {"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 20, **s}])
        for s in _LZMA_SETTINGS), key=len)


def script(cfg: Config, wrap: str = "lzma") -> bytes:
    """The bytes of the `train_gpt.py` that ships `cfg`."""
    if wrap not in WRAPS:
        raise ConfigError(f"--wrap must be one of {', '.join(WRAPS)}, got {wrap!r}")
    modules = bundle_modules(cfg)
    if wrap == "none":
        return _readable(cfg, modules).encode("utf-8")
    packed = base64.b85encode(_lzma(_compact(cfg, modules).encode("utf-8"))).decode("ascii")
    return f'import lzma,base64;exec(lzma.decompress(base64.b85decode("{packed}")))\n'.encode("ascii")


# --------------------------------------------------------------------------- code bytes

_MEASURED: dict[str, int] = {}


def cache_dir() -> Path:
    """Where measured code bytes are kept between processes: $PGOLF_CACHE, else ~/.cache/pgolf."""
    return Path(os.environ.get("PGOLF_CACHE") or Path.home() / ".cache" / "pgolf") / "code-bytes"


def _cache_key(cfg: Config) -> str:
    """A hash of everything the measured size depends on: pgolf's sources, the packed config, the Python that
    unparses them."""
    digest = hashlib.sha256(f"{sys.version}\0{packed_config(cfg)!r}".encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def measured_code_bytes(cfg: Config) -> int:
    """Size of the wrapped script `pgolf pack` would ship for `cfg`; a build takes about a second, so sizes are
    cached by `_cache_key` in this process and in `cache_dir()` (an unwritable cache only costs a rebuild)."""
    key = _cache_key(cfg)
    if key not in _MEASURED:
        path = cache_dir() / f"{key}.json"
        try:
            _MEASURED[key] = int(json.loads(path.read_text())["bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            _MEASURED[key] = len(script(cfg, "lzma"))
            try:
                atomic_write_json(path, {"bytes": _MEASURED[key]})
            except OSError:
                pass
    return _MEASURED[key]


def count_code_bytes(cfg: Config) -> int:
    """Code bytes of `total = artifact + code`: `export.code_files`' sizes when listed, else `export.code_bytes`
    when set (>= 0), else the measured script (docs/bytes.md)."""
    e: ExportConfig = cfg.export
    if e.code_files:
        total = 0
        for name in e.code_files:
            path = Path(name)
            if not path.is_file():
                raise ConfigError(f"export.code_files: {path} is not a file")
            total += path.stat().st_size
        return total
    if e.code_bytes >= 0:
        return e.code_bytes
    return measured_code_bytes(cfg)

"""Static analysis of a records folder's script (ast; nothing is run): which files it runs as code, what it
imports, which environment variables it reads and with what default.

Code bytes are `train_gpt.py` plus every other file of the folder it imports, execs or opens as code, found
from the source and followed into those files:
- `import name` / `from name import ...` where `name.py` (or the package `name/`) is in the folder;
- a string naming a folder file anywhere inside an `exec`, `compile`, `runpy.run_path`,
  `importlib.import_module`, `__import__` or `spec_from_file_location` call (`exec(open(__file__.replace(
  "train_gpt.py", "x.py")).read())` names x.py);
- a string naming a folder `.py` file inside `open`, `Path`, `read_text` or `read_bytes`.
A self-extracting script (`exec(lzma.decompress(base64.b85decode("...")))`, any chain of lzma, zlib, bz2,
gzip and base64 decoders over a literal, keyword arguments included) is decoded statically and its inner
source analysed as well. Not seen: names built at run time from data (a file name read from a file).
"""

from __future__ import annotations

import ast
import base64
import bz2
import gzip
import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path

from pgolf.errors import DataError

_EXEC_CALLS = {"exec", "compile", "run_path", "import_module", "__import__", "spec_from_file_location",
               "SourceFileLoader"}
_OPEN_CALLS = {"open", "Path", "read_text", "read_bytes"}
_DECODERS = {("lzma", "decompress"): lzma.decompress, ("zlib", "decompress"): zlib.decompress,
             ("bz2", "decompress"): bz2.decompress, ("gzip", "decompress"): gzip.decompress,
             ("base64", "b85decode"): base64.b85decode, ("base64", "b64decode"): base64.b64decode,
             ("base64", "a85decode"): base64.a85decode}
_CONSTANT_MODULES = {"lzma": lzma, "zlib": zlib}
NETWORK_MODULES = {"socket", "urllib", "urllib3", "requests", "http", "httpx", "aiohttp", "huggingface_hub"}


@dataclass(frozen=True)
class Source:
    """One piece of analysed source: a folder file, or the code a self-extracting wrapper carries."""

    name: str
    """`train_gpt.py`, or `train_gpt.py:2 (decoded)` for a wrapper's inner code."""
    tree: ast.Module


@dataclass(frozen=True)
class CodeFile:
    path: Path
    reason: str
    """How the script reaches it: `train_gpt.py:3 exec(open(...))`."""


@dataclass
class Analysis:
    sources: list[Source]
    files: list[CodeFile]
    """Every file counted as code, the script first."""

    @property
    def code_bytes(self) -> int:
        return sum(f.path.stat().st_size for f in self.files)


def parse(path: Path, name: str) -> ast.Module:
    try:
        return ast.parse(path.read_bytes(), filename=name)
    except (SyntaxError, ValueError) as exc:
        raise DataError(f"{path} does not parse as Python: {exc}") from None


def analyse(root: Path, script: Path) -> Analysis:
    """Follow the script into every folder file it runs as code."""
    files = [CodeFile(script, "the script")]
    sources: list[Source] = []
    todo = [(script, script.name)]
    while todo:
        path, name = todo.pop(0)
        for source in _with_inner(parse(path, name), name):
            sources.append(source)
            for target, lineno, why in _code_references(source.tree, root):
                if all(f.path != target for f in files):
                    files.append(CodeFile(target, f"{source.name}:{lineno} {why}"))
                    if target.suffix == ".py":
                        todo.append((target, target.relative_to(root).as_posix()))
    return Analysis(sources, files)


def _with_inner(tree: ast.Module, name: str) -> list[Source]:
    """The source and, recursively, the code any static self-extracting exec in it carries."""
    found = [Source(name, tree)]
    aliases = module_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) == "exec" and node.args:
            inner = _decoded(node.args[0], aliases)
            if isinstance(inner, bytes | str):
                try:
                    inner_tree = ast.parse(inner)
                except (SyntaxError, ValueError):
                    continue
                found += _with_inner(inner_tree, f"{name}:{node.lineno} (decoded)")
    return found


def module_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> module for `import x as y` and `import x` (`L` -> `lzma`)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                names[alias.asname or top] = alias.name if alias.asname else top
    return names


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _decoded(node: ast.AST, aliases: dict[str, str]):
    """The value of a literal, a decoder chain over one, or `.decode()` of one; None when not static."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        items = [_decoded(e, aliases) for e in node.elts]
        return None if any(i is None for i in items) else items
    if isinstance(node, ast.Dict):
        keys = [_decoded(k, aliases) for k in node.keys if k is not None]
        values = [_decoded(v, aliases) for v in node.values]
        return None if None in keys or None in values or len(keys) != len(values) else dict(zip(keys, values))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _decoded(node.left, aliases), _decoded(node.right, aliases)
        return left | right if isinstance(left, int) and isinstance(right, int) else None
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        module = _CONSTANT_MODULES.get(aliases.get(node.value.id, ""))
        return getattr(module, node.attr, None) if module is not None and node.attr.isupper() else None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute) or len(node.args) > 1:
        return None
    target = node.func.value
    if node.func.attr == "decode" and not node.args:
        inner = _decoded(target, aliases)
        return inner.decode() if isinstance(inner, bytes) else None
    if not isinstance(target, ast.Name) or not node.args:
        return None
    decoder = _DECODERS.get((aliases.get(target.id, ""), node.func.attr))
    arg = _decoded(node.args[0], aliases)
    kwargs = {k.arg: _decoded(k.value, aliases) for k in node.keywords}
    if decoder is None or arg is None or None in kwargs.values() or None in kwargs:
        return None
    try:
        return decoder(arg.encode() if isinstance(arg, str) else arg, **kwargs)
    except (ValueError, TypeError, lzma.LZMAError, zlib.error, OSError):
        return None


def _folder_file(root: Path, text: str) -> Path | None:
    if not text or len(text) > 200 or "\n" in text:
        return None
    for candidate in (root / text, root / Path(text).name):
        try:
            if candidate.is_file() and candidate.resolve().is_relative_to(root.resolve()):
                return candidate
        except OSError:
            continue
    return None


def _local_module(root: Path, name: str) -> Path | None:
    parts = name.split(".")
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def _code_references(tree: ast.Module, root: Path):
    """(file, line, why) for each folder file this tree imports, execs or opens as code."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (path := _local_module(root, alias.name)) is not None:
                    yield path, node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if (path := _local_module(root, node.module)) is not None:
                yield path, node.lineno, f"from {node.module} import"
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if name not in _EXEC_CALLS and name not in _OPEN_CALLS:
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                    path = _folder_file(root, inner.value)
                    if path is not None and (name in _EXEC_CALLS or path.suffix == ".py"):
                        yield path, node.lineno, f"{name}({inner.value!r})"


def env_defaults(analysis: Analysis) -> dict[str, tuple[str, str, int]]:
    """NAME -> (default as text, source name, line) for `os.environ.get("NAME", default)` and `os.getenv`."""
    found = {}
    for source in analysis.sources:
        for node in ast.walk(source.tree):
            if not (isinstance(node, ast.Call) and _call_name(node) in ("get", "getenv") and len(node.args) == 2):
                continue
            func = node.func
            owner = func.value if isinstance(func, ast.Attribute) else None
            is_env = (isinstance(owner, ast.Attribute) and owner.attr == "environ") or \
                     (isinstance(owner, ast.Name) and owner.id in ("os", "environ"))
            key, default = node.args
            if is_env and isinstance(key, ast.Constant) and isinstance(key.value, str) and \
                    isinstance(default, ast.Constant):
                found.setdefault(key.value, (str(default.value), source.name, node.lineno))
    return found


def imported_modules(analysis: Analysis) -> set[str]:
    """Top-level names of every absolute import in the analysed sources (`triton` for `import triton.language`)."""
    names = set()
    for source in analysis.sources:
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def network_imports(analysis: Analysis):
    """(module, source name, line) for each import of a network library."""
    for source in analysis.sources:
        for node in ast.walk(source.tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.split(".")[0] in NETWORK_MODULES:
                    yield name, source.name, node.lineno


def subprocess_calls(analysis: Analysis):
    """(call text, source name, line) for subprocess.* calls, os.system and os.popen."""
    for source in analysis.sources:
        aliases = module_aliases(source.tree)
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name):
                module = aliases.get(node.func.value.id, node.func.value.id)
                if module == "subprocess" or (module == "os" and node.func.attr in ("system", "popen")):
                    yield f"{module}.{node.func.attr}", source.name, node.lineno


def runs_on_import(analysis: Analysis) -> str | None:
    """Where the script runs its main at import (a top-level `raise`, `main()`, `sys.exit(...)`), else None:
    such a script is not loaded for the LUT check (loading it would train)."""
    for source in analysis.sources:
        if source.name != analysis.sources[0].name and "(decoded)" not in source.name:
            continue
        for node in source.tree.body:
            if isinstance(node, ast.Raise):
                return f"{source.name}:{node.lineno}"
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                    _call_name(node.value) in ("main", "exit"):
                return f"{source.name}:{node.lineno}"
    return None

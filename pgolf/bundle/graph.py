"""Which pgolf modules and third-party packages the shipped script carries for a config: the import graph
walked from the shipped main with ast (nothing is imported), gated imports followed only when the config uses them.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pgolf
from pgolf.errors import ConfigError
from pgolf.model.knobs import RECORD_KNOBS, uses_records
from pgolf.schema import Config

PACKAGE = Path(pgolf.__file__).resolve().parent


ENTRY = "pgolf.ship.standalone"


PACKED_SECTIONS = ("data", "model", "train", "reg", "export", "ttt", "seed")
"""Config parts the script needs; run, budget, fit, launcher and device are pgolf's own."""


_NOT_REQUIREMENTS = {"pgolf", "torch", "numpy", "__future__"}


GATED: dict[str, Callable[[Config], bool]] = {
    "pgolf.export.gptq": lambda cfg: cfg.export.gptq,
    "pgolf.export.lqer": lambda cfg: cfg.export.lqer_rank > 0,
    "pgolf.model.doc_mask": lambda cfg: cfg.model.doc_mask,
    "pgolf.ttt.score": lambda cfg: cfg.ttt.name != "none",
    "pgolf.model.records": lambda cfg: uses_records({key: getattr(cfg.model, key) for key in RECORD_KNOBS}),
    "pgolf.export.prune": lambda cfg: cfg.export.prune > 0,
    "pgolf.train.pruning": lambda cfg: cfg.reg.prune_sparsity > 0,
    "pgolf.train.muon": lambda cfg: cfg.train.muon_coefficients != "standard",
    "pgolf.train.averaging": lambda cfg: cfg.reg.ema_decay > 0 or cfg.reg.swa_start > 0,
    "pgolf.train.penalties": lambda cfg: max(cfg.reg.l1, cfg.reg.l2, cfg.reg.z_loss, cfg.reg.qerr_penalty,
                                             cfg.reg.sv_penalty) > 0,
    "pgolf.export.coding.ctx": lambda cfg: cfg.export.codec in ("auto", "ctx"),
    "zstandard": lambda cfg: cfg.export.codec in ("auto", "zstd"),
    "brotli": lambda cfg: cfg.export.codec in ("auto", "brotli"),
}
"""Imports followed only when the config uses them (module or third-party package -> does it)."""


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
    """(imported module, at import time?) for every import in a module; `from pkg import mod` names the module.
    Imports under `if TYPE_CHECKING:` never run, and are not followed."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, depth: int) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue
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

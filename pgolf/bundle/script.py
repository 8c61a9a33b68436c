"""The bytes of the shipped `train_gpt.py`: readable (`--wrap none`) or compacted, lzma + base85 (`lzma`)."""

from __future__ import annotations

import ast
import base64
import functools
import lzma
import pprint

import pgolf
from pgolf.bundle.graph import PACKAGE, bundle_modules, packed_config
from pgolf.bundle.minify import (
    _literal,
    _package_names_used,
    _Strip,
    _unparse,
    drop_unused_imports,
    positional_only_functions,
    rename_globals,
    rename_locals,
    shake,
)
from pgolf.errors import ConfigError
from pgolf.schema import Config

BOOTSTRAP = PACKAGE / "ship" / "bootstrap.py"


WRAPS = ("lzma", "none")


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

"""The bytes of the shipped `train_gpt.py`: readable (`--wrap none`) or compacted, lzma + base85 (`lzma`)."""

from __future__ import annotations

import ast
import base64
import functools
import lzma
import pprint

import pgolf
from pgolf.bundle.cache import content_key, read_entry, write_entry
from pgolf.bundle.flat import flat_keys, flatten_imports
from pgolf.bundle.graph import PACKAGE, bundle_modules, packed_config
from pgolf.bundle.minify import (
    _literal,
    _package_names_used,
    drop_unused_imports,
    minify_module,
    positional_only_functions,
    prepare,
    rename_globals,
    rename_parameters,
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


def _shipped(modules: dict[str, str]) -> dict[str, str]:
    """Path -> source of the modules the compact script carries: a package `__init__` only when some module takes a
    name from it, and the root's, emptied unless one does (it makes the folder a package)."""
    used = _package_names_used(modules)
    return {name: text if name != "__init__" or name in used else "" for name, text in modules.items()
            if not name.endswith("__init__") or name in used or name == "__init__"}


def compact_keys(cfg: Config) -> dict[str, str]:
    """Path in the package without `.py` (`export/coding/rans`) -> its key in the compact script for `cfg` (`c`),
    for the modules that script carries."""
    shipped = _shipped(bundle_modules(cfg))
    keys = flat_keys(shipped)
    return {name: keys[name] for name in shipped}


@functools.lru_cache(maxsize=8)
def _compact_modules(modules: tuple[tuple[str, str], ...], bootstrap_source: str) -> str:
    """`_compacted`, kept in this process and on disk under a hash of its inputs and of the code that compacts
    them: it depends on the module set only, so the configs of a sweep or a search share the few seconds it takes
    (each cell's own process then measures its code bytes in a fraction of a second)."""
    parts = [part for name, text in (*modules, ("", bootstrap_source)) for part in (name, text)]
    entry = f"{content_key((PACKAGE / 'bundle').glob('*.py'), PACKAGE, parts)}.py"
    compacted = read_entry("compact", entry)
    if compacted is None:
        compacted = _compacted(modules, bootstrap_source)
        write_entry("compact", entry, compacted)
    return compacted


def _compacted(modules: tuple[tuple[str, str], ...], bootstrap_source: str) -> str:
    """`MODULES={...}` and the bootstrap, compacted (`minify`): annotations and unused imports stripped,
    unreferenced top-level code dropped, globals and parameters renamed across the bundle, modules flattened to
    short keys (`flat`), then each module minified by python-minifier."""
    sources = _shipped(dict(modules))
    keys = flat_keys(sources)
    trees = {name: flatten_imports(prepare(ast.parse(text)), keys) for name, text in sources.items()}
    trees = rename_globals(shake(drop_unused_imports(trees)), keep={"main", "run"})
    keywords = {k.arg for tree in trees.values() for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg}
    trees = rename_parameters(trees, positional_only_functions(trees), keywords)
    stripped = "".join(f"{keys[name]!r}:{_literal(minify_module(tree))}," for name, tree in trees.items())
    bootstrap = flatten_imports(prepare(ast.parse(bootstrap_source)), keys, relative=False)
    bootstrap = rename_parameters({"": bootstrap}, {"run"}, set())[""]
    return f"MODULES={{{stripped}}}\n{minify_module(bootstrap)}\nraise SystemExit(run(MODULES,CONFIG))\n"


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
    return wrap_lzma(_compact(cfg, modules))


def wrap_lzma(payload: str) -> bytes:
    """The one-line script that runs `payload`: lzma-compressed, base85-encoded, exec'd."""
    packed = base64.b85encode(_lzma(payload.encode("utf-8"))).decode("ascii")
    return f'import lzma,base64;exec(lzma.decompress(base64.b85decode("{packed}")))\n'.encode("ascii")


def read_compact(data: bytes) -> tuple[dict, dict[str, str], ast.Module]:
    """(CONFIG, MODULES, the rest: the bootstrap and its call) of a compact (`lzma`) script's bytes."""
    payload = lzma.decompress(base64.b85decode(data.decode("ascii").split('"')[1])).decode("utf-8")
    tree = ast.parse(payload)
    config, modules = (ast.literal_eval(stmt.value) for stmt in tree.body[:2])
    return config, modules, ast.Module(body=tree.body[2:], type_ignores=[])

"""pgolf's own minifier against python-minifier, on the script `pgolf pack` ships, both measured in this run.

- own: pgolf's ast minifier as it was before python-minifier replaced it (pgolf/bundle/minify.py at OWN_COMMIT,
  read with `git show`): docstrings, annotations and unused code out, globals renamed across modules, locals
  and unnamed parameters renamed, `ast.unparse` with one-space indents.
- library: the bundle's minifier now (pgolf/bundle/minify.py): pgolf keeps what needs the whole bundle (unused
  imports, unreferenced code, globals and unnamed parameters renamed across modules); python-minifier strips,
  renames locals and prints each module.

Both get the same modules, the same short flat keys (bundle/flat.py) and the same lzma + base85 wrap. For each
config: the payload (the script before the wrap), the wrapped script (the code bytes that count) and the
seconds to compact; then the lines of pgolf code each minifier needs (all lines / lines of code: no blank,
comment or docstring lines).

    python bench/bench_minify.py
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import time
import tokenize
import types
from pathlib import Path

from pgolf.bundle import minify, script
from pgolf.bundle.flat import flat_keys, flatten_imports
from pgolf.bundle.graph import bundle_modules, packed_config
from pgolf.config import compose

OWN_COMMIT = "b2927d7f3ad587036edfcbe1647efb2afc06269d"
"""The last commit with pgolf's own minifier."""

CONFIGS = {"default": [], "records": ["model=records", "reg=records"], "records_tiny": ["model=records_tiny"]}
ROOT = Path(__file__).resolve().parent.parent


def own_minifier() -> tuple[types.ModuleType, str]:
    source = subprocess.run(["git", "show", f"{OWN_COMMIT}:pgolf/bundle/minify.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("own_minify")
    exec(compile(source, "own_minify.py", "exec"), module.__dict__)
    return module, source


def own_compact(own: types.ModuleType, modules: dict[str, str]) -> str:
    """`script._compacted` with pgolf's own minifier (as at OWN_COMMIT) and the flat keys of now."""
    sources = script._shipped(modules)
    keys = flat_keys(sources)
    trees = {name: flatten_imports(own._Strip().visit(ast.parse(text)), keys) for name, text in sources.items()}
    trees = own.rename_globals(own.shake(own.drop_unused_imports(trees)), keep={"main", "run"})
    positional = own.positional_only_functions(trees)
    keywords = {k.arg for tree in trees.values() for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg}
    stripped = "".join(f"{keys[name]!r}:{minify._literal(own._unparse(own.rename_locals(tree, positional, keywords)))},"
                       for name, tree in trees.items())
    bootstrap = flatten_imports(own._Strip().visit(ast.parse(script.BOOTSTRAP.read_text())), keys, relative=False)
    bootstrap = own.rename_locals(bootstrap, positional={"run"})
    return f"MODULES={{{stripped}}}\n{own._unparse(bootstrap)}raise SystemExit(run(MODULES,CONFIG))\n"


def library_compact(modules: dict[str, str]) -> str:
    return script._compacted(tuple(modules.items()), script.BOOTSTRAP.read_text())


def lines(source: str) -> tuple[int, int]:
    """(all lines, lines of code: not blank, not only a comment, not in a docstring or bare string)."""
    strings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            strings |= set(range(node.lineno, node.end_lineno + 1))
    code = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENDMARKER):
            code |= set(range(tok.start[0], tok.end[0] + 1))
    return len(source.splitlines()), len(code - strings)


def main() -> None:
    own, own_source = own_minifier()
    print(f"{'config':14s} {'minifier':8s} {'payload':>9s} {'wrapped':>9s} {'seconds':>8s}")
    diffs = []
    for name, overrides in CONFIGS.items():
        cfg = compose(overrides)
        modules = bundle_modules(cfg)
        config = f"CONFIG={packed_config(cfg)!r}\n"
        sizes = {}
        for label in ("own", "library"):
            start = time.perf_counter()
            payload = config + (own_compact(own, modules) if label == "own" else library_compact(modules))
            seconds = time.perf_counter() - start
            sizes[label] = len(script.wrap_lzma(payload))
            print(f"{name:14s} {label:8s} {len(payload):9,d} {sizes[label]:9,d} {seconds:8.1f}", flush=True)
        diffs.append(sizes["library"] - sizes["own"])
    print(f"library - own, wrapped: {', '.join(f'{d:+,d}' for d in diffs)} bytes")
    for label, source in (("own", own_source), ("library", (ROOT / "pgolf/bundle/minify.py").read_text())):
        total, code = lines(source)
        print(f"pgolf/bundle/minify.py, {label}: {total} lines, {code} lines of code")
    print(f"python-minifier {__import__('importlib.metadata').metadata.version('python-minifier')}, "
          f"Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()

"""The module map in numbers: flat modules, import depth, import circles and the longest functions.

Reads pgolf's sources with ast (nothing is imported), so it runs on any checkout:
`python bench/bench_layout.py [PACKAGE_DIR]` (default: this checkout's pgolf/). Depth is the longest chain of
module-level pgolf imports (imports inside functions count too: they are arrows all the same); a circle is a set
of modules that reach each other (strongly connected component of the module graph).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(package: Path, path: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(tree: ast.Module, known: set[str]) -> set[str]:
    """pgolf modules a module imports (`from pgolf.a import b` names pgolf.a.b when that is a module)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def graph(package: Path) -> tuple[dict[str, set[str]], dict[str, ast.Module]]:
    trees = {module_name(package, p): ast.parse(p.read_text()) for p in sorted(package.rglob("*.py"))}
    known = set(trees)
    edges = {name: imports_of(tree, known) - {name} for name, tree in trees.items()}
    for name in known:  # importing a.b runs a's __init__ first; not an arrow worth counting
        edges[name] = {t for t in edges[name] if not name.startswith(t + ".")}
    return edges, trees


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def depth(edges: dict[str, set[str]]) -> tuple[int, list[str]]:
    """The longest import chain, counting a circle's modules once (edges inside circles are dropped)."""
    comp_of = {}
    for comp in circles(edges):
        for m in comp:
            comp_of[m] = tuple(comp)
    memo: dict[str, list[str]] = {}

    def longest(v: str, seen: frozenset) -> list[str]:
        if v in memo:
            return memo[v]
        best: list[str] = []
        for w in edges[v]:
            if w in seen or (v in comp_of and comp_of.get(w) == comp_of[v]):
                continue
            chain = longest(w, seen | {w})
            if len(chain) > len(best):
                best = chain
        memo[v] = [v, *best]
        return memo[v]

    chain = max((longest(v, frozenset({v})) for v in edges), key=len)
    return len(chain) - 1, chain


def unit_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same arrows between top-level units (a flat module or a package), arrows inside a unit dropped."""
    def unit(name: str) -> str:
        return ".".join(name.split(".")[:2])

    out: dict[str, set[str]] = {}
    for name, targets in edges.items():
        out.setdefault(unit(name), set()).update(unit(t) for t in targets if unit(t) != unit(name))
    return out


def longest_functions(trees: dict[str, ast.Module], n: int = 5) -> list[tuple[int, str]]:
    sizes = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                sizes.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(sizes, reverse=True)[:n]


def main(package: Path) -> None:
    edges, trees = graph(package)
    flat = sorted(p.stem for p in package.glob("*.py"))
    packages = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    lines = sum(len(p.read_text().splitlines()) for p in package.rglob("*.py"))
    d, chain = depth(edges)
    print(f"package:            {package}")
    print(f"lines of code:      {lines:,} in {len(trees)} modules")
    print(f"flat modules:       {len(flat)} ({', '.join(flat)})")
    print(f"packages:           {len(packages)} ({', '.join(packages)})")
    print(f"import depth:       {d} ({' -> '.join(chain)})")
    units = unit_graph(edges)
    ud, uchain = depth(units)
    print(f"unit depth:         {ud} ({' -> '.join(uchain)})   (flat modules and packages as units)")
    print(f"unit circles:       {len(circles(units))}" + "".join(f"\n  {' <-> '.join(c)}" for c in circles(units)))
    found = circles(edges)
    print(f"import circles:     {len(found)}" + "".join(f"\n  {' <-> '.join(c)}" for c in found))
    print("longest functions:")
    for size, name in longest_functions(trees):
        print(f"  {size:4d} lines  {name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "pgolf")

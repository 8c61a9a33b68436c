"""The built-in corpus: English text every Python install carries, no network needed.

Two sources, both from the running interpreter's standard library:
- `pydoc_data.topics.topics`, the language reference topics `help()` shows
  (one document per topic);
- the docstrings of stdlib modules, classes and functions, read from the `.py`
  sources with `ast` (the modules are never imported: importing `turtle` or
  `antigravity` has side effects). One document per module, its docstrings
  joined by blank lines, so that the train/validation split is by module and
  a class docstring and its method docstrings (which repeat each other) never
  straddle the split.
Skipped: site-packages, test suites, and docstrings under `MIN_DOCSTRING_CHARS`
(one-liners like "Return self." teach little). Order is deterministic (topics by
name, then modules by path), so a given Python version always yields the same
text. CPython 3.11 gives 485 documents, 1.8 MB of text.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from pgolf.errors import DataError

MIN_DOCSTRING_CHARS = 200
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_dir() -> Path:
    """The standard library folder of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def module_docstrings(source: bytes) -> list[str]:
    """Docstrings of a module and its classes and functions (at least MIN_DOCSTRING_CHARS), in source order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old stdlib files warn on parse
        tree = ast.parse(source)
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, _DOC_NODES)), key=lambda n: getattr(n, "lineno", 0))
    docs = (ast.get_docstring(node, clean=True) for node in nodes)
    return [doc for doc in docs if doc and len(doc) >= MIN_DOCSTRING_CHARS]


def builtin_documents(max_chars: int = 0) -> list[str]:
    """The built-in corpus as a list of documents; stop once `max_chars` characters are collected (0 = all)."""
    return take_chars(_iter_documents(), max_chars)


def take_chars(documents: Iterable[str], max_chars: int) -> list[str]:
    """Whole documents from the start until at least `max_chars` characters are collected (0 = all)."""
    kept, total_chars = [], 0
    for doc in documents:
        if max_chars > 0 and total_chars >= max_chars:
            break
        kept.append(doc)
        total_chars += len(doc)
    return kept


def _iter_documents() -> Iterator[str]:
    from pydoc_data.topics import topics  # a plain dict of strings; importing it has no side effects

    for name in sorted(topics):
        yield topics[name]
    root = stdlib_dir()
    if not root.is_dir():
        raise DataError(f"Python standard library not found at {root}; pass a text folder to `pgolf data prepare`")
    for path in sorted(root.rglob("*.py")):
        if _SKIP_DIRS.intersection(path.relative_to(root).parts[:-1]):
            continue
        try:
            docstrings = module_docstrings(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue  # a few stdlib files may be unparsable or unreadable; they are not documentation
        if docstrings:
            yield "\n\n".join(docstrings)


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same in every process (unlike `hash()`)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def split_documents(documents: list[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic document-level (train, val) split, both keeping the input order.

    The validation set is the round(n * val_fraction) documents (at least one
    when val_fraction > 0) with the smallest seeded stable hash of their text, so
    membership depends on content, not on position or the process.
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    num_val = round(len(documents) * val_fraction)
    if val_fraction > 0:
        num_val = max(1, num_val)
    ranked = sorted(range(len(documents)), key=lambda i: (stable_hash(f"{seed}\0{documents[i]}"), i))
    val_ids = set(ranked[:num_val])
    train = [doc for i, doc in enumerate(documents) if i not in val_ids]
    val = [doc for i, doc in enumerate(documents) if i in val_ids]
    return train, val

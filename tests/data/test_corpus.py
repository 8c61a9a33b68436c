import hashlib
import os
import subprocess
import sys

import pytest

from pgolf.data.corpus import MIN_DOCSTRING_CHARS, builtin_documents, module_docstrings, split_documents, take_chars
from pgolf.errors import DataError


@pytest.fixture(scope="module")
def corpus_and_imports():
    before = set(sys.modules)
    docs = builtin_documents()
    return docs, set(sys.modules) - before


def _digest(docs):
    return hashlib.sha256("\0".join(docs).encode()).hexdigest()


def test_builtin_corpus_imports_no_stdlib_module(corpus_and_imports):
    docs, imported = corpus_and_imports
    assert len(docs) > 100 and sum(map(len, docs)) > 1_000_000
    assert not imported & {"tkinter", "turtle", "antigravity", "this", "idlelib", "smtplib"}
    assert len(imported) < 30  # a few helpers (ast, inspect, pydoc_data), not the hundreds of modules read


def test_builtin_corpus_is_the_same_in_another_process(corpus_and_imports):
    code = "import hashlib; from pgolf.data.corpus import builtin_documents as b; " \
           "print(hashlib.sha256(chr(0).join(b()).encode()).hexdigest())"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert other.stdout.strip() == _digest(corpus_and_imports[0])


def test_module_docstrings_reads_source_without_running_it():
    source = b'''"""%s"""
raise SystemExit("executed!")
class A:
    """short"""
    def f(self):
        """%s"""
''' % (b"m" * MIN_DOCSTRING_CHARS, b"f" * MIN_DOCSTRING_CHARS)
    docs = module_docstrings(source)
    assert docs == ["m" * MIN_DOCSTRING_CHARS, "f" * MIN_DOCSTRING_CHARS]


def test_max_chars_keeps_whole_leading_documents(corpus_and_imports):
    docs = builtin_documents(max_chars=50_000)
    assert 50_000 <= sum(map(len, docs)) < 50_000 + max(map(len, docs))
    assert docs == corpus_and_imports[0][:len(docs)]
    assert take_chars(["ab", "cd", "ef"], 3) == ["ab", "cd"]
    assert take_chars(["ab", "cd"], 0) == ["ab", "cd"]


def test_split_is_deterministic_disjoint_and_order_independent():
    docs = [f"document number {i} " * (i % 7 + 1) for i in range(200)]
    train, val = split_documents(docs, val_fraction=0.1)
    assert len(val) == 20 and len(train) == 180
    assert set(train).isdisjoint(val) and sorted(train + val) == sorted(docs)
    assert [d for d in docs if d in set(val)] == val  # input order kept
    _, val_reversed = split_documents(docs[::-1], val_fraction=0.1)
    assert set(val_reversed) == set(val)
    _, val_other_seed = split_documents(docs, val_fraction=0.1, seed=1)
    assert set(val_other_seed) != set(val)


def test_split_always_has_a_validation_document():
    train, val = split_documents(["a", "b", "c"], val_fraction=0.01)
    assert len(val) == 1 and len(train) == 2


def test_split_rejects_bad_fraction():
    with pytest.raises(DataError, match="val_fraction"):
        split_documents(["a"], val_fraction=1.0)

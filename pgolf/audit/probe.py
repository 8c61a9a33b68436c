"""`python -m pgolf.audit.probe REQUEST.json RESULT.json`: load a records folder's script, call its byte LUT
builder on a tokenizer and a text, and write the counts as one JSON object (RESULT.json). Run by
pgolf/audit/lut.py in a subprocess: a foreign script runs arbitrary module-level code (it may read data,
start CUDA or hang), so it gets its own process, its own sys.modules and a timeout.

Loading: the script is imported under a fresh module name (never `__main__`, so its main does not run),
with the folder first on sys.path and as the working directory. Each module the script imports (the
request lists them, from the static analysis) that is not installed (flash-attn, triton and other GPU-only
packages on a CPU machine) is a stub when the folder's code asks for it (a library probing for it, as
torch does for triton, still finds it missing): every attribute is a stub
class, calling one returns it, and calling one on a single function returns the function (so `@triton.jit`
and `@triton.autotune(...)` leave the decorated function as it is). The stubs leave sys.modules afterwards.

The builder is `build_sentencepiece_luts`, else the first function of the script whose code asks a
SentencePiece model `is_byte` and `id_to_piece`; it is called with the model, the vocabulary size and a CPU
device by parameter name. Of the three tables it returns, the integer one is the base bytes and the two
boolean ones are, in order, "has a leading ▁" and "is a boundary", as the reference returns them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import json
import os
import sys
import types
import uuid
from pathlib import Path

import numpy as np

from pgolf.atomic import atomic_write_json

BUILDER = "build_sentencepiece_luts"


class _StubMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub(f"{cls.__name__}.{name}")

    def __call__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and inspect.isfunction(args[0]):
            return args[0]
        return cls

    def __getitem__(cls, key):
        return cls

    def __or__(cls, other):
        return cls

    __ror__ = __or__


def _asked_by_folder_code() -> bool:
    """Whether the import comes from the folder's code (a file under the working directory, which is the
    folder, or exec'd source) rather than a library: torch asks for triton itself and must see it missing."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith("<frozen"):
        frame = frame.f_back
    if frame is None:
        return False
    filename = frame.f_code.co_filename
    return filename.startswith("<") or Path(filename).resolve().is_relative_to(Path.cwd())


def _stub(name: str) -> type:
    return _StubMeta(name, (), {})


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub(f"{self.__name__}.{name}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on sys.meta_path: a module the script imports that no real finder found (with its submodules)
    becomes a stub. Only those: stubbing every missing name would also answer the standard library's own
    probes (`import _winapi` means Windows to multiprocessing)."""

    def __init__(self, roots: set[str]) -> None:
        self.roots = roots
        self.stubbed: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in self.roots or not _asked_by_folder_code():
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0"  # version checks compare it
        self.stubbed.append(spec.name)
        return module

    def exec_module(self, module):
        pass


def missing(names: list[str]) -> set[str]:
    """The names among `names` that no installed module answers to."""
    return {name for name in names if importlib.util.find_spec(name) is None}


def _prime_torch() -> None:
    """Import what `torch.compile` imports while the stubs are not there: with a stub triton in sys.modules,
    torch's inductor would take it for the real one (a module-level `@torch.compile` imports it)."""
    import torch

    torch.compile(lambda x: x)


def load_script(path: Path, stub: set[str]) -> tuple[types.ModuleType, list[str]]:
    """Import `path` with the modules in `stub` stubbed; returns the module and the names that were stubbed."""
    if stub:
        _prime_torch()
    finder = _StubFinder(stub)
    sys.meta_path.append(finder)
    try:
        spec = importlib.util.spec_from_file_location(f"_pgolf_audit_{uuid.uuid4().hex}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.meta_path.remove(finder)
        for name in finder.stubbed:
            sys.modules.pop(name, None)
    return module, finder.stubbed


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def find_builder(module: types.ModuleType):
    found = getattr(module, BUILDER, None)
    if inspect.isfunction(found):
        return found
    for value in vars(module).values():
        if inspect.isfunction(value) and {"is_byte", "id_to_piece"} <= _code_names(value.__code__):
            return value
    return None


def _as_array(table) -> np.ndarray:
    return np.asarray(table.detach().cpu().numpy() if hasattr(table, "detach") else table)


def call_builder(builder, sp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch

    args = []
    for i, (name, param) in enumerate(inspect.signature(builder).parameters.items()):
        if i == 0:
            args.append(sp)
        elif "vocab" in name:
            args.append(sp.get_piece_size())
        elif "device" in name:
            args.append(torch.device("cpu"))
        elif param.default is inspect.Parameter.empty:
            raise TypeError(f"{builder.__name__} takes {name!r}, which the audit cannot supply")
    tables = [_as_array(t) for t in builder(*args)]
    if len(tables) != 3:
        raise TypeError(f"{builder.__name__} returned {len(tables)} tables, not (base bytes, leading space, boundary)")
    base_at = next((i for i, t in enumerate(tables) if t.dtype != np.bool_), 0)
    lead, boundary = (t.astype(bool) for i, t in enumerate(tables) if i != base_at)
    return tables[base_at].astype(np.int64), lead, boundary


def lut_counts(sp, documents: list[str], tables) -> dict:
    """The LUT's bytes and the decoded text's UTF-8 bytes, with the first token whose count differs from the
    canonical count (pgolf's own tables, checked against the decoded text by its tests)."""
    from pgolf.data.tokenizer import build_byte_luts

    canonical = build_byte_luts(sp)
    c_base, c_lead, c_boundary = (t.numpy() for t in (canonical.base_bytes, canonical.has_leading_space,
                                                       canonical.is_boundary))
    base, lead, boundary = tables
    bos = sp.bos_id()
    lut_total = utf8_total = canonical_total = tokens = differing = 0
    first = None
    for doc in documents:
        ids = sp.encode(doc)
        utf8_total += len(sp.decode(ids).encode("utf-8"))
        prev = np.array([bos if bos >= 0 else -1, *ids[:-1]])
        cur = np.array(ids, dtype=np.int64)
        if cur.size == 0:
            continue
        after_boundary = np.where(prev < 0, True, boundary[np.clip(prev, 0, None)])
        c_after = np.where(prev < 0, True, c_boundary[np.clip(prev, 0, None)])
        counts = base[cur] + (lead[cur] & ~after_boundary)
        c_counts = c_base[cur] + (c_lead[cur] & ~c_after)
        lut_total += int(counts.sum())
        canonical_total += int(c_counts.sum())
        tokens += cur.size
        wrong = np.nonzero(counts != c_counts)[0]
        differing += wrong.size
        if first is None and wrong.size:
            i = int(wrong[0])
            first = {"piece": sp.id_to_piece(int(cur[i])), "id": int(cur[i]), "lut": int(counts[i]),
                     "canonical": int(c_counts[i])}
    return {"lut_bytes": lut_total, "utf8_bytes": utf8_total, "canonical_bytes": canonical_total, "tokens": tokens,
            "differing_tokens": differing, "first_difference": first}


def sidecar_counts(sp, documents: list[str], module_path: Path, counter_name: str, transform_name: str,
                   stub: set[str]) -> dict:
    """Bytes a byte sidecar counts for the transformed text, against the original text's UTF-8 bytes."""
    module, _ = load_script(module_path, stub)
    counter, transform = getattr(module, counter_name), getattr(module, transform_name)
    counted = original = 0
    for doc in documents:
        counted += int(np.asarray(counter(sp, doc, transform(doc))).sum())
        original += len(doc.encode("utf-8"))
    return {"sidecar_bytes": counted, "original_bytes": original}


DOC_CHARS = 4000
"""Documents are cut into pieces of at most this many characters (FineWeb documents are a few KB): some
sidecar counters decode every token's prefix, quadratic in the document's length."""


def _documents(text_path: str | None, max_chars: int) -> list[str]:
    if text_path:
        texts = [Path(text_path).read_text(encoding="utf-8")]
    else:
        from pgolf.data.corpus import builtin_documents

        texts = builtin_documents(max_chars)
    return [text[i:i + DOC_CHARS] for text in texts for i in range(0, len(text), DOC_CHARS)]


def probe(request: dict) -> dict:
    import sentencepiece as spm

    folder = Path(request["folder"])
    sys.path.insert(0, str(folder))
    os.chdir(folder)
    sp = spm.SentencePieceProcessor(model_file=request["tokenizer"])
    documents = _documents(request.get("text"), request["max_chars"])
    stub = missing(request["imports"])
    result: dict = {}
    if request.get("sidecar"):
        path, counter, transform = request["sidecar"]
        try:
            result["sidecar"] = sidecar_counts(sp, documents, Path(path), counter, transform, stub)
        except BaseException as exc:  # foreign code, as the script below
            result["sidecar"] = {"reason": _one_line(exc)}
    try:
        module, stubbed = load_script(Path(request["script"]), stub)
    except BaseException as exc:  # a foreign script may raise anything, SystemExit included, while it loads
        return {**result, "status": "load_error", "reason": _one_line(exc)}
    builder = find_builder(module)
    if builder is None:
        return {**result, "status": "no_builder", "stubbed": stubbed}
    where = f"{Path(builder.__code__.co_filename).name}:{builder.__code__.co_firstlineno} {builder.__name__}"
    try:
        tables = call_builder(builder, sp)
    except Exception as exc:  # the builder is foreign code: any failure is the check's "unknown"
        return {**result, "status": "builder_error", "builder": where, "reason": _one_line(exc)}
    return {**result, "status": "ok", "builder": where, "stubbed": stubbed, **lut_counts(sp, documents, tables)}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


if __name__ == "__main__":
    request_path, result_path = (Path(p).resolve() for p in sys.argv[1:3])
    atomic_write_json(result_path, probe(json.loads(request_path.read_text())))

"""`pgolf data prepare`: any text -> a tokenizer and challenge-format shards.

Sources: None (the built-in corpus), a `.txt` file or a folder of them (one
document per file), or a `.jsonl` file or a folder of them (one document per
line, field `text`, as FineWeb ships); a folder may mix both and is read
recursively in sorted path order. The documents are split into train and
validation by content hash, the tokenizer is trained on the train documents
only, and every document is encoded with BOS (id 1) before it and no EOS.

The output folder is built beside `out_dir` and renamed into place at the end,
so an interrupted prepare leaves no half-made folder and an existing good one
survives until the new one is complete. `meta.json` records a fingerprint of
the inputs (file names, sizes and mtimes, or the Python build for the built-in
corpus) and the settings; a later call with the same fingerprint returns at
once.

Without `--out`, the built-in corpus goes to `data/builtin` at the default 1024
pieces (`data=builtin`) and to `data/builtin_sp<V>` at any other vocabulary size
V (`data=builtin_sp8192` reads the 8192 one), so preparations at different sizes
never overwrite each other; a user source goes to `data/builtin` as before (pass
`--out`). The shard prefix stays `builtin` in every folder: it names the corpus,
the folder names the tokenization, as the challenge's `fineweb10B_sp8192/` holds
`fineweb_train_*.bin`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pgolf.atomic import atomic_write_json
from pgolf.data.corpus import builtin_documents, split_documents, stdlib_dir, take_chars
from pgolf.data.shards import write_shard
from pgolf.data.tokenizer import BOS_ID, load_tokenizer, train_tokenizer
from pgolf.errors import DataError
from pgolf.progress import ProgressFn, no_progress

SHARD_TOKENS = 100_000_000
"""Tokens per shard, as in the challenge's FineWeb shards."""
PREPARE_FORMAT = 1
"""Bumped when the output of this module changes for the same input, so old caches are rebuilt."""
DEFAULT_VOCAB_SIZE = 1024
"""Vocabulary of `pgolf data prepare` when none is given (the challenge's sp1024)."""
_ENCODE_BATCH_DOCS = 512


@dataclass(frozen=True)
class PreparedData:
    """What `prepare_data` made (or found cached)."""

    dir: Path
    tokenizer: Path
    train_files: list[Path]
    val_files: list[Path]
    train_tokens: int
    val_tokens: int
    documents: int
    cached: bool
    """True when an existing folder with the same fingerprint was returned without work."""


def source_files(source: Path) -> list[Path]:
    """The `.txt`/`.jsonl` files of a source file or folder, sorted."""
    if not source.exists():
        raise DataError(f"source {source} not found")
    if source.is_file():
        files = [source]
    else:
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix in (".txt", ".jsonl"))
        if not files:
            raise DataError(f"source folder {source} has no .txt or .jsonl files")
    for path in files:
        if path.suffix not in (".txt", ".jsonl"):
            raise DataError(f"source {path} is neither .txt (one document) nor .jsonl (one document per line)")
    return files


def read_documents(files: list[Path]) -> Iterator[str]:
    """Documents of `.txt` files (whole file) and `.jsonl` files (the `text` field of each line)."""
    for path in files:
        if path.suffix == ".txt":
            try:
                yield path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
            continue
        with open(path, "rb") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise DataError(f"{path}:{line_no}: not a JSON line ({exc})") from exc
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise DataError(f"{path}:{line_no}: no string field 'text'")
                yield record["text"]


def default_out_dir(source: Path | str | None, vocab_size: int) -> Path:
    """Where `pgolf data prepare` writes without `--out` (see the module docstring)."""
    if source is None and vocab_size != DEFAULT_VOCAB_SIZE:
        return Path(f"data/builtin_sp{vocab_size}")
    return Path("data/builtin")


def _fingerprint(source: Path | None, files: list[Path], settings: dict) -> str:
    if source is None:
        inputs = {"builtin": sys.version, "stdlib": str(stdlib_dir())}
    else:
        inputs = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    data = {"format": PREPARE_FORMAT, "sentencepiece": spm.__version__, "inputs": inputs, **settings}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _cached(out_dir: Path, fingerprint: str) -> PreparedData | None:
    """The prepared folder described by out_dir/meta.json when its fingerprint matches and its files are intact."""
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
        if meta.get("fingerprint") != fingerprint:
            return None
        train = [out_dir / name for name in meta["train_files"]]
        val = [out_dir / name for name in meta["val_files"]]
        for path, size in zip(train + val, meta["train_bytes"] + meta["val_bytes"], strict=True):
            if path.stat().st_size != size:
                return None
        tokenizer = out_dir / meta["tokenizer"]
        if not tokenizer.is_file():
            return None
        return PreparedData(out_dir, tokenizer, train, val, meta["train_tokens"], meta["val_tokens"],
                            meta["documents"], cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _encode_split(sp: spm.SentencePieceProcessor, docs: list[str], done: int, total: int,
                  progress: ProgressFn) -> tuple[np.ndarray, int]:
    """All documents of a split as one uint16 token array, each led by BOS."""
    pieces: list[np.ndarray] = []
    for start in range(0, len(docs), _ENCODE_BATCH_DOCS):
        batch = docs[start:start + _ENCODE_BATCH_DOCS]
        for ids in sp.encode(batch, num_threads=os.cpu_count() or 1):
            pieces.append(np.array([BOS_ID, *ids], dtype=np.uint16))
        done += len(batch)
        progress("tokenize", done, total)
    return np.concatenate(pieces), done


def _write_split(tokens: np.ndarray, folder: Path, name: str, split: str) -> list[Path]:
    files = []
    for index, start in enumerate(range(0, tokens.size, SHARD_TOKENS)):
        path = folder / f"{name}_{split}_{index:06d}.bin"
        write_shard(path, tokens[start:start + SHARD_TOKENS])
        files.append(path)
    return files


def _swap_into_place(built: Path, out_dir: Path) -> None:
    """Replace out_dir by `built`; the old folder is removed only once the new one is in place."""
    if not out_dir.exists():
        os.replace(built, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    os.replace(out_dir, old / out_dir.name)
    os.replace(built, out_dir)
    shutil.rmtree(old)


def prepare_data(source: Path | str | None, out_dir: Path | str, vocab_size: int = DEFAULT_VOCAB_SIZE,
                 val_fraction: float = 0.1, name: str = "builtin", progress: ProgressFn = no_progress,
                 force: bool = False, max_chars: int = 0) -> PreparedData:
    """Train a tokenizer and write train/val shards from `source` into `out_dir` (cached by fingerprint).

    `max_chars` > 0 keeps only the first documents up to about that many characters (for quick runs).
    """
    source = None if source is None else Path(source)
    out_dir = Path(out_dir)
    files = [] if source is None else source_files(source)
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0 < vocab_size <= 65536:
        raise DataError(f"vocab_size must be in 1..65536 (shards store uint16 ids), got {vocab_size}")
    settings = {"vocab_size": vocab_size, "val_fraction": val_fraction, "name": name, "max_chars": max_chars,
                "shard_tokens": SHARD_TOKENS}
    fingerprint = _fingerprint(source, files, settings)
    if not force and (found := _cached(out_dir, fingerprint)):
        return found
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "meta.json").is_file():
        raise DataError(f"{out_dir} exists and is not a pgolf data folder (no meta.json); choose another output")

    documents = builtin_documents(max_chars) if source is None else take_chars(read_documents(files), max_chars)
    documents = [doc for doc in documents if doc]
    described = "built-in corpus (Python standard library docs)" if source is None else str(source)
    if len(documents) < 2:
        raise DataError(f"{described} has {len(documents)} non-empty documents; need at least 2 (train and val)")
    train_docs, val_docs = split_documents(documents, val_fraction)
    if not train_docs:
        raise DataError(f"{described}: val_fraction={val_fraction} leaves no training documents")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    build.chmod(0o755)  # mkdtemp makes it private; the data folder is not
    try:
        progress("tokenizer", 0, 1)
        tokenizer = train_tokenizer(train_docs, build / "tokenizer.model", vocab_size)
        progress("tokenizer", 1, 1)
        sp = load_tokenizer(tokenizer)
        train_tokens, done = _encode_split(sp, train_docs, 0, len(documents), progress)
        val_tokens, _ = _encode_split(sp, val_docs, done, len(documents), progress)
        train_files = _write_split(train_tokens, build, name, "train")
        val_files = _write_split(val_tokens, build, name, "val")
        atomic_write_json(build / "meta.json", {
            "fingerprint": fingerprint,
            "source": described,
            **settings,
            "documents": len(documents),
            "train_documents": len(train_docs),
            "val_documents": len(val_docs),
            "train_tokens": int(train_tokens.size),
            "val_tokens": int(val_tokens.size),
            "tokenizer": tokenizer.name,
            "train_files": [f.name for f in train_files],
            "val_files": [f.name for f in val_files],
            "train_bytes": [f.stat().st_size for f in train_files],
            "val_bytes": [f.stat().st_size for f in val_files],
        })
        _swap_into_place(build, out_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return PreparedData(out_dir, out_dir / tokenizer.name, [out_dir / f.name for f in train_files],
                        [out_dir / f.name for f in val_files], int(train_tokens.size), int(val_tokens.size),
                        len(documents), cached=False)

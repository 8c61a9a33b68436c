import dataclasses
import json

import numpy as np
import pytest
import torch

from pgolf.data import prepare as prepare_module
from pgolf.data.corpus import builtin_documents
from pgolf.data.prepare import prepare_data
from pgolf.data.shards import read_shard
from pgolf.data.tokenizer import BOS_ID, build_byte_luts, load_tokenizer, target_bytes
from pgolf.errors import DataError

VOCAB = 512


@pytest.fixture(scope="module")
def documents():
    return builtin_documents(max_chars=150_000)


@pytest.fixture
def txt_folder(tmp_path, documents):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for index, doc in enumerate(documents):
        (folder / ("sub" if index % 2 else "") / f"{index:03d}.txt").write_text(doc, encoding="utf-8")
    return folder


def _decoded_documents(prepared, splits=("train", "val")):
    sp = load_tokenizer(prepared.tokenizer)
    docs = []
    for path in [f for split in splits for f in getattr(prepared, f"{split}_files")]:
        tokens = read_shard(path)
        assert tokens[0] == BOS_ID
        starts = np.flatnonzero(tokens == BOS_ID).tolist() + [tokens.size]
        docs += [sp.decode(tokens[a + 1:b].tolist()) for a, b in zip(starts, starts[1:], strict=False)]
    return docs


def test_prepare_from_txt_folder(tmp_path, txt_folder, documents):
    calls = []
    prepared = prepare_data(txt_folder, tmp_path / "out", vocab_size=VOCAB, name="mine",
                            progress=lambda task, done, total, **_: calls.append((task, done, total)))
    assert not prepared.cached and prepared.documents == len(documents)
    assert [p.name for p in prepared.train_files] == ["mine_train_000000.bin"]
    assert [p.name for p in prepared.val_files] == ["mine_val_000000.bin"]
    assert prepared.train_tokens == read_shard(prepared.train_files[0]).size
    assert prepared.val_tokens == read_shard(prepared.val_files[0]).size
    assert load_tokenizer(prepared.tokenizer).get_piece_size() == VOCAB
    assert sorted(_decoded_documents(prepared)) == sorted(documents)  # every document, BOS-led, exact text
    tokenize = [c for c in calls if c[0] == "tokenize"]
    assert tokenize[-1] == ("tokenize", len(documents), len(documents))
    meta = json.loads((prepared.dir / "meta.json").read_text())
    assert meta["vocab_size"] == VOCAB and meta["documents"] == len(documents)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "out"]  # no build leftovers


def test_second_call_is_cached_and_changes_invalidate(tmp_path, txt_folder):
    out = tmp_path / "out"
    first = prepare_data(txt_folder, out, vocab_size=VOCAB)
    model_mtime = first.tokenizer.stat().st_mtime_ns
    second = prepare_data(txt_folder, out, vocab_size=VOCAB)
    assert second.cached and second == dataclasses.replace(first, cached=True)
    assert first.tokenizer.stat().st_mtime_ns == model_mtime
    assert not prepare_data(txt_folder, out, vocab_size=VOCAB, force=True).cached
    (txt_folder / "new.txt").write_text("A new document arrives. " * 20)
    third = prepare_data(txt_folder, out, vocab_size=VOCAB)
    assert not third.cached and third.documents == first.documents + 1
    first.val_files[0].write_bytes(b"")  # a damaged cache is rebuilt, not trusted
    assert not prepare_data(txt_folder, out, vocab_size=VOCAB).cached


def test_prepare_from_jsonl(tmp_path, documents):
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": doc, "id": i}) for i, doc in enumerate(documents)]
    path.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n")
    prepared = prepare_data(path, tmp_path / "out", vocab_size=VOCAB, name="fw")
    assert prepared.documents == len(documents)
    assert sorted(_decoded_documents(prepared)) == sorted(documents)


def test_max_chars_and_multiple_shards(tmp_path, txt_folder, monkeypatch):
    monkeypatch.setattr(prepare_module, "SHARD_TOKENS", 10_000)
    prepared = prepare_data(txt_folder, tmp_path / "out", vocab_size=VOCAB, max_chars=60_000)
    assert len(prepared.train_files) > 1
    assert [f.name for f in prepared.train_files] == [f"builtin_train_{i:06d}.bin"
                                                      for i in range(len(prepared.train_files))]
    sizes = [read_shard(f).size for f in prepared.train_files]
    assert all(size == 10_000 for size in sizes[:-1]) and sum(sizes) == prepared.train_tokens
    assert prepared.documents < len(list(txt_folder.rglob("*.txt")))


@pytest.mark.parametrize("content, message", [
    ('{"text": "fine"}\n{"text": \n', r"bad\.jsonl:2: not a JSON line"),
    ('{"text": "fine"}\n{"body": "x"}\n', r"bad\.jsonl:2: no string field 'text'"),
    ('["text"]\n', r"bad\.jsonl:1: no string field 'text'"),
])
def test_bad_jsonl(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        prepare_data(tmp_path / "bad.jsonl", tmp_path / "out", vocab_size=VOCAB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_bad_sources(tmp_path):
    with pytest.raises(DataError, match="not found"):
        prepare_data(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt or .jsonl files"):
        prepare_data(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.txt").write_text("just one document")
    with pytest.raises(DataError, match="need at least 2"):
        prepare_data(tmp_path / "one", tmp_path / "out")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt: not UTF-8"):
        prepare_data(tmp_path / "latin1.txt", tmp_path / "out")


def test_failed_prepare_keeps_the_existing_folder(tmp_path, txt_folder, monkeypatch):
    out = tmp_path / "out"
    good = prepare_data(txt_folder, out, vocab_size=VOCAB)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "_write_split", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(txt_folder, out, vocab_size=VOCAB, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "out"]
    assert good.dir == out


def test_refuses_to_replace_a_foreign_folder(tmp_path, txt_folder):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a pgolf data folder"):
        prepare_data(txt_folder, tmp_path / "out", vocab_size=VOCAB)
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


def test_corpus_too_small_for_vocab_is_a_data_error(tmp_path):
    (tmp_path / "src").mkdir()
    for index in range(3):
        (tmp_path / "src" / f"{index}.txt").write_text(f"tiny document {index}")
    with pytest.raises(DataError, match="corpus too small for vocab_size=1024"):
        prepare_data(tmp_path / "src", tmp_path / "out", vocab_size=1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_prepare_builtin_corpus_counts_validation_bytes_exactly(tmp_path):
    """The issue's check on real data: LUT bytes of the validation shard == UTF-8 bytes of its decoded text."""
    prepared = prepare_data(None, tmp_path / "builtin")
    assert prepared.documents == len(builtin_documents())
    assert prepared.train_tokens > prepared.val_tokens > 0
    sp = load_tokenizer(prepared.tokenizer)
    assert sp.get_piece_size() == 1024
    tokens = torch.from_numpy(read_shard(prepared.val_files[0]).astype(np.int64))
    lut_bytes = int(target_bytes(tokens[:-1], tokens[1:], build_byte_luts(sp)).sum())
    text_bytes = sum(len(doc.encode("utf-8")) for doc in _decoded_documents(prepared, splits=("val",)))
    assert lut_bytes == text_bytes
    assert prepare_data(None, tmp_path / "builtin").cached

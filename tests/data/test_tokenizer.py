import pytest
import torch

from pgolf.data.corpus import builtin_documents, split_documents
from pgolf.data.tokenizer import (
    BOS_ID,
    BYTE_OFFSET,
    ByteLUTs,
    build_byte_luts,
    byte_luts,
    load_tokenizer,
    target_bytes,
    train_tokenizer,
)
from pgolf.errors import DataError

VOCAB = 512


@pytest.fixture(scope="module")
def corpus():
    docs = builtin_documents(max_chars=200_000)
    docs.append("Unicode: naïve café, 日本語, emoji 🙂, tabs\tand  double  spaces,\n\n  leading and trailing  ")
    return split_documents(docs, val_fraction=0.2)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, corpus):
    train, _ = corpus
    return train_tokenizer(train, tmp_path_factory.mktemp("tok") / "tokenizer.model", vocab_size=VOCAB)


def _stream(sp, docs):
    """Token stream as prepare writes it: BOS before every document."""
    ids = []
    for doc in docs:
        ids += [BOS_ID, *sp.encode(doc)]
    return torch.tensor(ids)


def _lut_bytes(stream, luts):
    # Every token after the first is a target whose previous token is the one before it in the stream.
    return int(target_bytes(stream[:-1], stream[1:], luts).sum())


def test_ids_layout_and_round_trip(model_path, corpus):
    sp = load_tokenizer(model_path)
    assert sp.get_piece_size() == VOCAB
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sp.id_to_piece(BYTE_OFFSET) == "<0x00>" and sp.id_to_piece(BYTE_OFFSET + 255) == "<0xFF>"
    _, val = corpus
    for doc in val:
        assert sp.decode(sp.encode(doc)) == doc


def test_training_is_deterministic_and_leaves_no_files(model_path, corpus, tmp_path):
    again = train_tokenizer(corpus[0], tmp_path / "again.model", vocab_size=VOCAB)
    assert again.read_bytes() == model_path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again.model"]


def test_lut_byte_total_equals_utf8_bytes_of_decoded_validation_text(model_path, corpus):
    sp = load_tokenizer(model_path)
    _, val = corpus
    stream = _stream(sp, val)
    luts = build_byte_luts(sp)
    decoded_bytes = sum(len(sp.decode(sp.encode(doc)).encode("utf-8")) for doc in val)
    assert _lut_bytes(stream, luts) == decoded_bytes
    assert decoded_bytes == sum(len(doc.encode("utf-8")) for doc in val)


def test_counting_the_space_twice_is_caught(model_path, corpus):
    """The check above can fail: the known bug (keeping "▁" in the base bytes) inflates the count."""
    sp = load_tokenizer(model_path)
    _, val = corpus
    stream = _stream(sp, val)
    luts = build_byte_luts(sp)
    buggy = ByteLUTs(luts.base_bytes + luts.has_leading_space.to(torch.int16), luts.has_leading_space,
                     luts.is_boundary)
    assert _lut_bytes(stream, buggy) > _lut_bytes(stream, luts)


def test_lut_rules_per_piece_kind(model_path):
    sp = load_tokenizer(model_path)
    luts = build_byte_luts(sp, vocab_size=VOCAB + 8)
    assert luts.vocab_size == VOCAB + 8
    for special in (0, 1, 2, 3, VOCAB, VOCAB + 7):
        assert luts.base_bytes[special] == 0 and luts.is_boundary[special]
    assert luts.base_bytes[BYTE_OFFSET + 65] == 1 and not luts.is_boundary[BYTE_OFFSET + 65]
    space_id = next(i for i in range(VOCAB) if sp.id_to_piece(i).startswith("▁") and len(sp.id_to_piece(i)) > 2)
    piece = sp.id_to_piece(space_id)
    assert luts.has_leading_space[space_id]
    assert luts.base_bytes[space_id] == len(piece[1:].encode("utf-8"))
    # The leading space counts only after a non-boundary token.
    prev = torch.tensor([BOS_ID, space_id])
    assert target_bytes(prev, torch.tensor([space_id, space_id]), luts).tolist() == [
        len(piece) - 1, len(piece)]


def test_byte_level_luts_count_bytes_exactly():
    text = "héllo wörld 🙂"
    ids = torch.tensor([BOS_ID, *(b + BYTE_OFFSET for b in text.encode("utf-8"))])
    luts = byte_luts(300)
    assert luts.vocab_size == 300
    assert int(target_bytes(ids[:-1], ids[1:], luts).sum()) == len(text.encode("utf-8"))
    with pytest.raises(DataError, match="needs a vocabulary of 260"):
        byte_luts(256)


def test_luts_smaller_than_tokenizer_rejected(model_path):
    with pytest.raises(DataError, match=f"needs a vocabulary of {VOCAB} but model.vocab_size is 256"):
        build_byte_luts(load_tokenizer(model_path), vocab_size=256)


def test_corpus_too_small_for_vocab(tmp_path):
    with pytest.raises(DataError, match="corpus too small for vocab_size=1024"):
        train_tokenizer(["a tiny corpus of a few words"] * 3, tmp_path / "t.model", vocab_size=1024)
    with pytest.raises(DataError, match="vocab_size=100 is too small"):
        train_tokenizer(["a tiny corpus"], tmp_path / "t.model", vocab_size=100)
    with pytest.raises(DataError, match="no text"):
        train_tokenizer([], tmp_path / "t.model", vocab_size=300)
    assert not list(tmp_path.iterdir())


def test_load_missing_or_corrupt(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_tokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(DataError, match="bad.model is not a SentencePiece model"):
        load_tokenizer(bad)

import numpy as np
import pytest
import torch

from pgolf.data.loader import TokenStream, TrainBatches, check_vocab, load_val_tokens
from pgolf.data.shards import write_shard
from pgolf.errors import ConfigError, DataError


@pytest.fixture
def shards(tmp_path):
    """Three shards holding the tokens 0..99 in order, split unevenly."""
    bounds = [0, 30, 35, 100]
    files = []
    for index, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        files.append(tmp_path / f"t_train_{index:06d}.bin")
        write_shard(files[-1], np.arange(lo, hi))
    return files


def test_stream_reads_across_shards_and_wraps(shards):
    stream = TokenStream(shards)
    np.testing.assert_array_equal(stream.take(25), np.arange(25))
    np.testing.assert_array_equal(stream.take(50), np.arange(25, 75))
    np.testing.assert_array_equal(stream.take(40), np.r_[np.arange(75, 100), np.arange(15)])
    np.testing.assert_array_equal(stream.take(250), np.r_[np.arange(15, 100), np.arange(100), np.arange(65)])


def test_stream_skips_empty_shards_and_rejects_all_empty(tmp_path, shards):
    empty = tmp_path / "empty.bin"
    write_shard(empty, [])
    np.testing.assert_array_equal(TokenStream([empty, shards[1]]).take(7), [30, 31, 32, 33, 34, 30, 31])
    with pytest.raises(DataError, match="hold no tokens"):
        TokenStream([empty, empty])


def test_batch_shapes_and_shift(shards):
    batches = TrainBatches(shards, batch_tokens=16, seq_len=4, grad_accum=2)
    x, y = batches.next_batch()
    assert x.shape == y.shape == (2, 4) and x.dtype == y.dtype == torch.int64
    assert x.flatten().tolist() == list(range(8))
    assert y.flatten().tolist() == list(range(1, 9))
    x2, _ = batches.next_batch()
    assert x2.flatten().tolist() == list(range(9, 17))  # each micro-batch takes local_tokens + 1


def test_ranks_get_disjoint_slices_of_the_same_step(shards):
    world = 3
    loaders = [TrainBatches(shards, batch_tokens=24, seq_len=4, grad_accum=1, rank=r, world_size=world)
               for r in range(world)]
    for _ in range(6):  # past the wrap-around at token 100
        batches = [loader.next_batch() for loader in loaders]
        inputs = [set(x.flatten().tolist()) for x, _ in batches]
        for a in range(world):
            for b in range(a + 1, world):
                assert inputs[a].isdisjoint(inputs[b])
        for x, y in batches:
            assert torch.equal((x + 1) % 100, y)  # the stream is 0..99 repeated, so y is x shifted by one


def test_batch_tokens_must_divide(shards):
    with pytest.raises(ConfigError, match=r"batch_tokens \(100\).*2 \* 1 \* 8 = 16"):
        TrainBatches(shards, batch_tokens=100, seq_len=8, grad_accum=1, world_size=2)


def test_val_tokens_whole_sequences_plus_one(shards):
    tokens = load_val_tokens(shards, seq_len=8)
    assert tokens.dtype == torch.int64 and tokens.tolist() == list(range(97))  # 12 sequences of 8, plus one
    assert load_val_tokens(shards, seq_len=8, max_tokens=20).tolist() == list(range(17))
    assert load_val_tokens(shards, seq_len=10, max_tokens=20).tolist() == list(range(21))
    with pytest.raises(DataError, match="need at least seq_len"):
        load_val_tokens(shards, seq_len=100)


def test_check_vocab():
    check_vocab(1024, 1024, "tokenizer t.model")
    with pytest.raises(DataError, match="tokenizer t.model needs a vocabulary of 4096 but model.vocab_size is 1024"):
        check_vocab(4096, 1024, "tokenizer t.model")

import json

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


def _random_batches(shards, seed=0, rank=0, world_size=1):
    return TrainBatches(shards, batch_tokens=16 * world_size, seq_len=4, grad_accum=1, rank=rank,
                        world_size=world_size, sampling="random", seed=seed)


def test_random_sampling_draws_contiguous_windows_within_a_shard(shards):
    batches = _random_batches(shards)
    for _ in range(20):
        x, y = batches.next_batch()
        assert x.shape == y.shape == (4, 4) and x.dtype == torch.int64
        windows = torch.cat([x, y[:, -1:]], dim=1)  # (B, T + 1)
        assert torch.equal(windows[:, 1:] - windows[:, :-1], torch.ones(4, 4, dtype=torch.int64))
        assert not ((windows[:, 0] < 30) & (windows[:, -1] >= 30)).any()  # never across a shard boundary
        in_short = (windows[:, 0] >= 30) & (windows[:, 0] < 35)
        assert (windows[in_short, 0] == 30).all()  # the 5-token shard holds exactly one window


def test_random_sampling_changes_per_step_and_repeats_per_seed(shards):
    def steps(seed):
        loader = _random_batches(shards, seed=seed)
        return [loader.next_batch()[0] for _ in range(5)]

    first, again, other = steps(0), steps(0), steps(1)
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))
    assert len({tuple(x.flatten().tolist()) for x in first}) == 5
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("sampling", ["stream", "random"])
@pytest.mark.parametrize("world, accum", [(2, 1), (2, 2), (3, 2)])
def test_ranks_together_read_step_by_step_what_one_process_reads(shards, sampling, world, accum):
    """The same global batch (6 sequences of 4 per rank and micro-batch) read by `world` ranks x `accum`
    micro-batches and by 1 process x (world * accum) micro-batches: each step, one process's micro-batches in order
    are the ranks' in the order (micro-batch, rank), so the union is the same and training does not depend on
    the world size. Enough steps to wrap around the 100-token stream."""
    batch_tokens, seq_len = 6 * 4 * world * accum, 4

    def loader(rank, world_size, grad_accum):
        return TrainBatches(shards, batch_tokens, seq_len, grad_accum, rank=rank, world_size=world_size,
                            sampling=sampling, seed=5)

    ranks = [loader(r, world, accum) for r in range(world)]
    single = loader(0, 1, world * accum)
    for _ in range(4):
        together = [ranks[r].next_batch() for _ in range(accum) for r in range(world)]  # micro-batch major
        alone = [single.next_batch() for _ in range(world * accum)]
        assert torch.cat([x for x, _ in together]).tolist() == torch.cat([x for x, _ in alone]).tolist()
        assert torch.cat([y for _, y in together]).tolist() == torch.cat([y for _, y in alone]).tolist()
    if sampling == "random":  # and one micro-batch of the whole step draws the same windows
        whole = loader(0, 1, 1)
        again = [loader(r, world, accum) for r in range(world)]
        for _ in range(4):
            x = torch.cat([again[r].next_batch()[0] for _ in range(accum) for r in range(world)])
            assert whole.next_batch()[0].tolist() == x.tolist()


def test_random_windows_of_a_step_differ_between_ranks(shards):
    ranks = [_random_batches(shards, rank=r, world_size=2) for r in range(2)]
    x0, x1 = (loader.next_batch()[0] for loader in ranks)
    assert x0.shape == x1.shape == (4, 4) and not torch.equal(x0, x1)


def test_random_sampling_rejects_bad_mode_and_short_shards(shards):
    with pytest.raises(ConfigError, match="train.sampling must be one of stream, random"):
        TrainBatches(shards, batch_tokens=16, seq_len=4, grad_accum=1, sampling="shuffle")
    with pytest.raises(DataError, match="no shard with a whole window of 101 tokens"):
        TrainBatches(shards, batch_tokens=100, seq_len=100, grad_accum=1, sampling="random")


def test_per_rank_split_is_the_reference_loaders(shards):
    """The reference's DistributedTokenLoader: each micro-batch takes world * (local + 1) tokens of the stream and
    rank r keeps tokens [r * (local + 1), (r + 1) * (local + 1)) of them; written out here on the raw stream."""
    world, accum, seq_len, batch_tokens = 2, 2, 4, 32
    local = batch_tokens // (world * accum)
    stream = np.tile(np.arange(100), 10)
    loaders = [TrainBatches(shards, batch_tokens, seq_len, accum, rank=r, world_size=world) for r in range(world)]
    offset = 0
    for _ in range(5 * accum):  # micro-batches, past the wrap-around
        chunk = stream[offset:offset + world * (local + 1)]
        offset += world * (local + 1)
        for rank, loader in enumerate(loaders):
            mine = chunk[rank * (local + 1):(rank + 1) * (local + 1)]
            x, y = loader.next_batch()
            assert x.flatten().tolist() == mine[:-1].tolist() and y.flatten().tolist() == mine[1:].tolist()


@pytest.mark.parametrize("sampling", ["stream", "random"])
@pytest.mark.parametrize("accum, rank, world", [(1, 0, 1), (2, 1, 2)])
def test_a_restored_position_replays_the_same_batches(shards, sampling, accum, rank, world):
    def loader():
        return TrainBatches(shards, batch_tokens=16 * accum * world, seq_len=4, grad_accum=accum, rank=rank,
                            world_size=world, sampling=sampling, seed=3)

    batches = loader()
    for _ in range(7):  # into the second shard; with 2 micro-batches a step, in the middle of a step
        batches.next_batch()
    state = batches.state_dict()
    ahead = [batches.next_batch()[0] for _ in range(5)]
    fresh = loader()
    fresh.load_state_dict(json.loads(json.dumps(state)))  # as a checkpoint stores it
    assert all(torch.equal(a, fresh.next_batch()[0]) for a in ahead)


def test_a_stream_position_outside_the_shards_is_a_data_error(shards):
    with pytest.raises(DataError, match="names shard 5 of 3"):
        TokenStream(shards).seek(5, 0)

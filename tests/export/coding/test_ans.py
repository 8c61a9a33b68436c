"""The compiled rANS coder: exact round trips, code length at the model's entropy, clean errors on damage."""

import numpy as np
import pytest

from pgolf.errors import ArtifactError
from pgolf.export.coding import ans


def laplace_levels(n: int, width: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.laplace(0, width, n)), -31, 31).astype(np.int8)


def model_of(symbols: np.ndarray) -> tuple[int, np.ndarray]:
    low = int(symbols.min())
    return low, ans.frequencies(np.bincount(symbols.astype(np.int64) - low))


def ideal_bits(symbols: np.ndarray, low: int, freq: np.ndarray) -> float:
    """The code length of `symbols` under the model `freq`: sum of -log2 q(symbol)."""
    q = freq[symbols.astype(np.int64) - low] / ans.TOTAL
    return float(-np.log2(q).sum())


def test_frequencies_sum_to_the_total_keep_every_present_value_and_follow_the_weights():
    weights = np.array([0, 1, 3, 1_000_000, 250_000, 0, 7])
    freq = ans.frequencies(weights)
    assert freq.sum() == ans.TOTAL
    assert (freq[weights == 0] == 0).all() and (freq[weights > 0] >= 1).all()
    assert freq[3] / freq[4] == pytest.approx(4.0, rel=1e-3)


@pytest.mark.parametrize("weights", [[], [0, 0], [-1, 5], [2**45, 2**45]])
def test_weights_that_cannot_form_a_model_are_artifact_errors(weights):
    with pytest.raises(ArtifactError, match="cannot form a model"):
        ans.frequencies(np.array(weights, dtype=np.int64))


def test_segments_round_trip_in_order_whatever_their_lengths_and_tables():
    segments = [laplace_levels(n, width, seed) for seed, (n, width) in
                enumerate([(1, 2.0), (2, 0.5), (1001, 4.0), (7, 9.0), (50_000, 1.5), (3, 0.1)])]
    models = [model_of(s) for s in segments]
    blob = ans.encode([(s, low, freq) for s, (low, freq) in zip(segments, models)])
    decoder = ans.Decoder(blob)
    for s, (low, freq) in zip(segments, models):
        out = np.empty(s.size, dtype=np.int8)
        decoder.decode(low, freq, out)
        assert np.array_equal(out, s)
    decoder.finish()


def test_code_length_is_the_models_entropy_plus_the_flushed_states():
    symbols = laplace_levels(400_000, 3.0, seed=1)
    low, freq = model_of(symbols)
    blob = ans.encode([(symbols, low, freq)])
    ideal_bytes = ideal_bits(symbols, low, freq) / 8
    assert ideal_bytes < len(blob) <= 1.0002 * ideal_bytes + 16 + 4  # 16: two 64-bit states; 4: the last word


def test_bytes_are_deterministic():
    symbols = laplace_levels(10_000, 2.0, seed=2)
    low, freq = model_of(symbols)
    assert ans.encode([(symbols, low, freq)]) == ans.encode([(symbols.copy(), low, freq.copy())])


def test_a_damaged_stream_is_an_artifact_error_never_a_wrong_length():
    symbols = laplace_levels(5_000, 2.0, seed=3)
    low, freq = model_of(symbols)
    blob = ans.encode([(symbols, low, freq)])
    for bad in (blob[:-4], blob[:12], blob + b"\0\0\0\0", blob[:-1]):
        with pytest.raises(ArtifactError):
            decoder = ans.Decoder(bad)
            decoder.decode(low, freq, np.empty(symbols.size, dtype=np.int8))
            decoder.finish()

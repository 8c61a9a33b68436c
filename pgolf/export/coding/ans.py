"""Static-model rANS, compiled with numba: the `rans` codec's coder.

Why our own: constriction's decoder spent ~20 ns per symbol behind the GIL,
which kept `rans` 3x, not 10x, faster than zstd-22 on a baseline-sized model;
this coder spends ~3.5 ns decoding and ~3.5 ns encoding.

- States are 64-bit, kept in [2^32, 2^64); renormalization moves 32-bit
  words. Probabilities have 16 bits (`PRECISION`): at 2^16 the rounding
  costs ~5 bytes on 17M int6 levels, and the decode table (one byte per
  slot) stays in the core's L2.
- Two states interleave (symbol i of a segment uses state i & 1): their
  divisions and table lookups are independent chains the core overlaps,
  ~2x faster than one state for 8 more flushed bytes per stream.
- Segments share the states. Encode them last-first, decode first-first.
- Stream layout (uint32 little-endian words): the two final states as
  (low, high) word pairs, then the renormalization words in decode order.
  The decoder ends where it began, both states at 2^32, with every word
  read; anything else is a corrupt stream.
"""

from __future__ import annotations

import numba
import numpy as np

from pgolf.errors import ArtifactError

PRECISION = 16
TOTAL = 1 << PRECISION
_LOW = 1 << 32
_U64 = np.uint64
_MAX_WEIGHT_SUM = 1 << 46  # keeps weight << 17 inside int64; real streams stay under 2^41


@numba.njit(cache=True)
def _frequencies(weights):  # pragma: no cover - compiled
    total = weights.sum()
    freq = np.zeros(weights.size, dtype=np.int64)
    for v in range(weights.size):
        if weights[v]:
            freq[v] = max(1, ((weights[v] << (PRECISION + 1)) + total) // (2 * total))  # rounded share
    top = np.argmax(freq)
    freq[top] += TOTAL - freq.sum()
    return freq


def frequencies(weights: np.ndarray) -> np.ndarray:
    """uint32 frequencies summing to TOTAL, proportional to non-negative integer `weights` (rounded; every
    positive weight gets at least 1, the largest absorbs the rest). Integer arithmetic: every machine gets
    the same table."""
    weights = np.ascontiguousarray(weights, dtype=np.int64)
    if not 0 < weights.size <= 256 or weights.min() < 0 or not 0 < weights.sum() < _MAX_WEIGHT_SUM:
        raise ArtifactError("corrupt rans stream (histogram cannot form a model)")
    freq = _frequencies(weights)
    if (freq[weights > 0] < 1).any():
        raise ArtifactError("corrupt rans stream (histogram cannot form a model)")
    return freq.astype(np.uint32)


def _cumulative(freq: np.ndarray) -> np.ndarray:
    cum = np.zeros(len(freq), dtype=np.uint32)
    np.cumsum(freq[:-1], out=cum[1:])
    return cum


# The two states' steps are written out twice in each kernel, not shared through a helper: numba's call
# boundary (even inline="always") made the encoder 5x slower (18 ns against 3.2 ns per symbol).

@numba.njit(cache=True, nogil=True)
def _encode_kernel(symbols, low, freq, cum, states, out, pos):  # pragma: no cover - compiled
    """Push `symbols` (last first; symbol i onto state i & 1) as indices symbol - low into freq/cum;
    renormalization words go to out[pos-1], out[pos-2], ... Returns the new write position."""
    top = _U64(64 - PRECISION)
    x0, x1 = states[0], states[1]
    i = symbols.size - 1
    if i & 1:  # an even count of symbols is left for the pair loop
        s = symbols[i] - low
        f = _U64(freq[s])
        if x1 >> top >= f:  # x >= f * 2^48, without overflow when f = TOTAL
            pos -= 1
            out[pos] = np.uint32(x1 & _U64(0xFFFFFFFF))
            x1 >>= _U64(32)
        q = x1 // f
        x1 = (q << _U64(PRECISION)) + (x1 - q * f) + _U64(cum[s])
        i -= 1
    while i >= 0:
        s = symbols[i] - low
        f = _U64(freq[s])
        if x0 >> top >= f:
            pos -= 1
            out[pos] = np.uint32(x0 & _U64(0xFFFFFFFF))
            x0 >>= _U64(32)
        q = x0 // f
        x0 = (q << _U64(PRECISION)) + (x0 - q * f) + _U64(cum[s])
        if i == 0:
            break
        s = symbols[i - 1] - low
        f = _U64(freq[s])
        if x1 >> top >= f:
            pos -= 1
            out[pos] = np.uint32(x1 & _U64(0xFFFFFFFF))
            x1 >>= _U64(32)
        q = x1 // f
        x1 = (q << _U64(PRECISION)) + (x1 - q * f) + _U64(cum[s])
        i -= 2
    states[0], states[1] = x0, x1
    return pos


@numba.njit(cache=True, nogil=True)
def _decode_kernel(words, pos, states, freq, cum, low, out):  # pragma: no cover - compiled
    """Pop out.size symbols (symbol i from state i & 1, stored as low + its index); the new read position,
    or -1 when the words run out."""
    slots = np.empty(TOTAL, dtype=np.uint8)
    for s in range(freq.size):
        slots[cum[s] : cum[s] + freq[s]] = s
    mask, floor = _U64(TOTAL - 1), _U64(_LOW)
    x0, x1 = states[0], states[1]
    for i in range(0, out.size, 2):
        slot = x0 & mask
        s = slots[slot]
        x0 = _U64(freq[s]) * (x0 >> _U64(PRECISION)) + slot - _U64(cum[s])
        if x0 < floor:
            if pos >= words.size:
                return -1
            x0 = (x0 << _U64(32)) | _U64(words[pos])
            pos += 1
        out[i] = low + s
        if i + 1 == out.size:
            break
        slot = x1 & mask
        s = slots[slot]
        x1 = _U64(freq[s]) * (x1 >> _U64(PRECISION)) + slot - _U64(cum[s])
        if x1 < floor:
            if pos >= words.size:
                return -1
            x1 = (x1 << _U64(32)) | _U64(words[pos])
            pos += 1
        out[i + 1] = low + s
    states[0], states[1] = x0, x1
    return pos


class Encoder:
    """Codes segments into one word stream, last segment first: the Decoder reads them first to last."""

    def __init__(self, n_symbols: int):
        self.out = np.empty(n_symbols + 4, dtype=np.uint32)  # at most one word per symbol, then the two states
        self.states = np.full(2, _LOW, dtype=np.uint64)
        self.pos = self.out.size

    def push(self, symbols: np.ndarray, low: int, freq: np.ndarray) -> None:
        """Code int8 `symbols` under `freq` (a `frequencies` table of the values low, low + 1, ...)."""
        self.pos = _encode_kernel(symbols, low, freq, _cumulative(freq), self.states, self.out, self.pos)

    def finish(self) -> bytes:
        self.pos -= 4
        self.out[self.pos : self.pos + 4] = [int(x) >> shift & 0xFFFFFFFF for x in self.states for shift in (0, 32)]
        return self.out[self.pos :].astype("<u4", copy=False).tobytes()


def encode(segments: list[tuple[np.ndarray, int, np.ndarray]]) -> bytes:
    """Code (int8 symbols, low, frequencies of the values low, low + 1, ...) segments into one word stream."""
    encoder = Encoder(sum(symbols.size for symbols, _, _ in segments))
    for symbols, low, freq in reversed(segments):
        encoder.push(symbols, low, freq)
    return encoder.finish()


class Decoder:
    """Decodes the segments of one `encode` stream, in order."""

    def __init__(self, blob: bytes):
        if len(blob) < 16 or len(blob) % 4:
            raise ArtifactError(f"corrupt rans stream ({len(blob)} payload bytes do not hold the coder states)")
        self.words = np.frombuffer(blob, dtype="<u4").astype(np.uint32, copy=False)
        flushed = [int(w) for w in self.words[:4]]
        self.states = np.array([flushed[0] | flushed[1] << 32, flushed[2] | flushed[3] << 32], dtype=np.uint64)
        if int(self.states.min()) < _LOW:
            raise ArtifactError("corrupt rans stream (coder state out of range)")
        self.pos = 4

    def decode(self, low: int, freq: np.ndarray, out: np.ndarray) -> None:
        """Fill int8 `out` with the next symbols, coded under `freq` (a `frequencies` table of low, low + 1, ...)."""
        self.pos = _decode_kernel(self.words, self.pos, self.states, freq, _cumulative(freq), low, out)
        if self.pos < 0:
            raise ArtifactError("corrupt rans stream (coded words run out)")

    def finish(self) -> None:
        """ArtifactError unless the stream was used up exactly."""
        if self.pos != self.words.size or int(self.states.min()) != _LOW or int(self.states.max()) != _LOW:
            raise ArtifactError("corrupt rans stream (coder did not end where the encoder began)")

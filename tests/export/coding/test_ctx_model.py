"""What a level's context is in the ctx codec (ctx_model): the structures the fixtures name, and hand-built streams
whose reference rows, classes, offsets and differences decode as the layout says."""

import numpy as np
import pytest

from pgolf.errors import ArtifactError
from pgolf.export.coding import ans, codecs, rans

from .conftest import (
    ABOVE,
    CHOSEN,
    CODED,
    CONTEXT_MARK,
    NATURAL,
    PLANS,
    decode,
    head_of,
    offsets_head,
    parse,
    with_structure,
)


def test_the_fixtures_are_context_streams_of_the_structures_they_name():
    for name, (levels, _, n_col, shapes, reference, order) in PLANS.items():
        header = parse(CODED[name])  # parse asserts the mark and the value ranges
        assert (header.n_col, header.shapes, header.reference, header.order) == (n_col, shapes, reference, order)
        assert (header.row_ids is not None, header.col_ids is not None) == (len(shapes) > 1, n_col > 1)
        assert (header.offsets is not None) == (reference == CHOSEN)
        assert decode(CODED[name], levels) == levels.tobytes()
    assert any(CODED["level above"][start] == 0 for start, _ in parse(CODED["level above"]).contexts)  # unused
    assert offsets_head(CODED["chosen rows"])[1] > 1  # rows further back than the row above
    assert offsets_head(CODED["three row groups"])[1] > 1


# --------------------------------------------------------------------------- hand-built streams

TABLE = rans.fit_model(-1, np.array([1, 2, 3]))
"""One histogram of the symbols -1, 0, 1; its head is head_of(-1, [1, 2, 3])."""


def hand_built(structure: bytes, heads: bytes, symbols: np.ndarray | None) -> bytes:
    """A context stream of one row group and one column group: CONTEXT_MARK, K = L = 1, `structure` (reference
    and order bytes, the group's shape), `heads` (offsets and contexts), then `symbols` coded under TABLE (None:
    no words but the coder states, as when every head is of one value)."""
    encoder = ans.Encoder(0 if symbols is None else symbols.size)
    if symbols is not None:
        encoder.push(symbols.reshape(-1), TABLE.low, ans.frequencies(TABLE.weights))
    return bytes([CONTEXT_MARK, 1, 1]) + structure + heads + encoder.finish()




def test_a_hand_built_context_stream_decodes_and_an_unused_class_is_an_error():
    """The row above, 3 reference classes, 1 match class: class -1 unused, classes 0 and +1 one table. Row 0
    (above: 0) decodes; row 1 sits under row 0's levels, and a -1 there sends it to the unused class."""
    table = head_of(-1, [1, 2, 3])
    structure, heads = bytes([ABOVE, NATURAL, 1, 3, 1, 0]), b"\x00" + table + table
    good = np.array([[0, 1], [1, 0]], dtype=np.int8)
    assert decode(hand_built(structure, heads, good), good) == good.tobytes()
    bad = np.array([[-1, 1], [1, 0]], dtype=np.int8)
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(a level falls in a context without a table\\)"):
        decode(hand_built(structure, heads, bad), bad)


def test_a_hand_built_difference_stream_adds_the_row_above():
    """Difference flag 1: each symbol is the level minus the level above (0 above the first row)."""
    symbols = np.array([[0, 1, -1], [1, 0, 0], [1, 1, 1]], dtype=np.int8)
    blob = hand_built(bytes([ABOVE, NATURAL, 1, 1, 1, 1]), head_of(-1, [1, 2, 3]), symbols)
    assert decode(blob, symbols) == np.cumsum(symbols, axis=0, dtype=np.int8).tobytes()
    assert decode(blob, symbols) != decode(with_structure(blob, shapes=((1, 1, 1, 0),)), symbols)


@pytest.mark.parametrize("value", [127, -128, 100])
def test_differences_add_back_modulo_256(value):
    """One context of one value: every symbol is `value`, so row 0 holds it and row 1 twice it, modulo 256 as
    int8 (the encoder wraps differences of int8 levels the same way, so every difference fits)."""
    blob = hand_built(bytes([ABOVE, NATURAL, 1, 1, 1, 1]), head_of(value, [1]), None)
    one_row = np.zeros((1, 2), dtype=np.int8)
    assert decode(blob, one_row) == bytes([value & 0xFF] * 2)
    assert decode(blob, np.zeros((2, 2), dtype=np.int8)) == bytes([value & 0xFF] * 2 + [2 * value & 0xFF] * 2)


def test_levels_whose_differences_wrap_round_trip():
    """int8 levels spanning more than 127 (differences up to +-254) round-trip through difference coding."""
    rng = np.random.default_rng(3)
    base = rng.integers(-127, 128, 64)
    rows = np.array([np.where(rng.random(64) < 0.9, base, rng.integers(-127, 128, 64)) for _ in range(48)])
    levels = rows.astype(np.int8)
    blob = codecs.encode("ctx", levels, -1, 1, 64)
    assert blob[0] == CONTEXT_MARK and any(shape[3] for shape in parse(blob).shapes)
    assert codecs.decode("ctx", blob, levels.size, 1, 64) == levels.tobytes()


@pytest.mark.parametrize("shape", [(1, 3, 1, 0), (1, 1, 2, 0), (1, 1, 1, 1)])
def test_a_hand_built_chosen_reference_stream_stores_offsets_only_when_a_group_reads_its_reference(shape):
    """CHOSEN with no classes and no differences: no offsets head, the context head follows the structure. With
    reference classes, match classes or differences, an offsets head (one value: none in the words); offset 0,
    a row of zeros, puts every level in the middle reference class and adds nothing to a difference."""
    levels = np.array([[0, 1, -1], [1, 0, 0]], dtype=np.int8)
    table = head_of(-1, [1, 2, 3])
    plain = hand_built(bytes([CHOSEN, NATURAL, 1, 1, 1, 0]), table, levels)
    assert parse(plain).offsets is None
    assert decode(plain, levels) == levels.tobytes()
    contexts = {3: b"\x00" + table + b"\x00", 2: table + table, 1: table}[shape[1] * shape[2]]
    structure = bytes([CHOSEN, NATURAL, *shape])
    reading = hand_built(structure, head_of(0, [1]) + contexts, levels)
    assert offsets_head(reading) == (0, 0)
    assert decode(reading, levels) == levels.tobytes()
    with pytest.raises(ArtifactError, match="corrupt ctx stream \\(a reference row before the first row\\)"):
        decode(hand_built(structure, head_of(1, [1]) + contexts, levels), levels)  # row 0, 1 row back

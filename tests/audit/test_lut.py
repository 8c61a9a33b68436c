"""The byte-LUT check on synthetic scripts: each is loaded by the probe subprocess (slow: it imports torch)."""

import pytest

from pgolf.audit.code import analyse
from pgolf.audit.folder import read_folder
from pgolf.audit.lut import lut_rows

from .conftest import make_folder

pytestmark = pytest.mark.slow

TEXT = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.\n" * 20
LUT_SCRIPT = '''
import numpy as np
from flash_attn_interface import flash_attn_func  # GPU-only, not installed: the audit stubs it
import triton


@triton.jit
def kernel(x):
    return x


def build_sentencepiece_luts(sp, vocab_size, device):
    base = np.zeros(vocab_size, np.int16)
    lead = np.zeros(vocab_size, np.bool_)
    boundary = np.ones(vocab_size, np.bool_)
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\\u2581"):
            lead[i] = True
            PIECE_WITHOUT_SPACE
        base[i] = len(piece.encode("utf-8"))
    return base, lead, boundary


if __name__ == "__main__":
    raise SystemExit("training would start here")
'''


def _lut(tmp_path, tokenizer, script, files=None):
    root = make_folder(tmp_path / "r", script, files=files)
    (tmp_path / "text.txt").write_text(TEXT)
    folder = read_folder(root)
    return lut_rows(folder, analyse(root, folder.script), tokenizer, tmp_path / "text.txt")


def test_a_canonical_lut_counts_the_decoded_bytes_exactly(tmp_path, tokenizer):
    [row] = _lut(tmp_path, tokenizer, LUT_SCRIPT.replace("PIECE_WITHOUT_SPACE", "piece = piece[1:]"))
    assert row.verdict == "pass", row.detail
    assert row.detail.startswith(f"LUT {len(TEXT.encode()):,} bytes vs decoded text {len(TEXT.encode()):,}")
    assert row.evidence.startswith("train_gpt.py:") and row.evidence.endswith("build_sentencepiece_luts")


def test_a_space_counted_twice_is_caught_with_the_first_token_it_breaks(tmp_path, tokenizer):
    """Every "▁" counts one byte in the base and one more as the leading space: one extra byte per space in the
    text, plus the dummy prefix SentencePiece puts before the first word."""
    [row] = _lut(tmp_path, tokenizer, LUT_SCRIPT.replace("PIECE_WITHOUT_SPACE", 'piece = " " + piece[1:]'))
    utf8 = len(TEXT.encode())
    lut = utf8 + TEXT.count(" ") + 1
    assert row.verdict == "fail"
    assert f"LUT {lut:,} bytes vs decoded text {utf8:,}" in row.detail
    assert f"relative error {(lut - utf8) / utf8:+.4%}" in row.detail
    assert "first '▁" in row.detail


def test_a_sidecar_that_inflates_the_bytes_fails_against_the_original_text(tmp_path, tokenizer):
    sidecar = '''
def encode_marked(text):
    """Lower-case each capital behind a private-use marker (3 UTF-8 bytes), as case transforms do."""
    return "".join("\\ue001" + c.lower() if c.isupper() else c for c in text)


def token_original_byte_counts(sp, original_text, transformed_text):
    return [len(transformed_text.encode("utf-8"))]  # wrong: the transformed text's bytes, markers included


def prepare(text):
    return token_original_byte_counts(None, text, encode_marked(text))
'''
    script = LUT_SCRIPT.replace("PIECE_WITHOUT_SPACE", "piece = piece[1:]")
    lut, side = _lut(tmp_path, tokenizer, script, files={"prepare_case.py": sidecar})
    original = len(TEXT.encode())
    counted = original + 3 * sum(c.isupper() for c in TEXT)
    assert lut.verdict == "pass"
    assert (side.check, side.item, side.verdict) == ("sidecar", "prepare_case.py token_original_byte_counts", "fail")
    assert side.detail.startswith(f"{counted:,} bytes counted for the encode_marked-transformed text vs {original:,}")


def test_a_script_that_raises_while_loading_leaves_the_check_unknown_with_the_reason(tmp_path, tokenizer):
    [row] = _lut(tmp_path, tokenizer, "import os\nSHARDS = open('/nonexistent/fineweb_val_000000.bin').read()\n")
    assert row.verdict == "unknown"
    assert row.detail.startswith("the script raised while loading: FileNotFoundError")

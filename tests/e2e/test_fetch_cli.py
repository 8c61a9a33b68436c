"""byte260 end to end as a user runs it: `pgolf data fetch` from a fake Hub on 127.0.0.1, then train and eval.

No SentencePiece anywhere: the tokenizer is the challenge's pure-byte JSON, and val_bpb must count exactly
the UTF-8 bytes of the validation texts.
"""

import json
import os

import pytest

from pgolf.data.corpus import builtin_documents

from ..data.test_fetch import BYTE_DIR, BYTE_TOKENIZER, REPO_ID, FakeHub, byte260_export
from .conftest import exited, run_pgolf, run_pgolf_each

pytestmark = pytest.mark.slow

SEQ_LEN = 64
QUICK_BYTES = [f"train.seq_len={SEQ_LEN}", "train.batch_tokens=512", "train.iterations=8", "train.val_every=0",
               "train.log_every=4", "train.val_tokens=0", "data.val_tokens=0"]


def validation_texts() -> list[str]:
    """A few documents whose byte260 tokens (BOS + bytes each) are whole sequences plus one, so every byte is scored."""
    texts = ["Parameter golf: the smallest model that still predicts bytes well.", "naïve café, 日本語 and 🙂.",
             "Line one\nline two\n\ttabbed"]
    tokens = sum(len(text.encode()) + 1 for text in texts)
    filler_tokens = (1 - tokens) % SEQ_LEN + SEQ_LEN  # its BOS and bytes: the total is 1 mod SEQ_LEN
    return texts + ["z" * (filler_tokens - 1)]


def hub_env(hub: FakeHub, tmp_path) -> dict[str, str]:
    """The Hub is the fake one (HF_ENDPOINT), its cache and token live in tmp_path, and nothing goes via a proxy."""
    env = {name: "" for name in os.environ if name.upper() in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
           or name.startswith(("HF_", "HUGGING_FACE_"))}
    return {**env, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_PROXY": "127.0.0.1", "MATCHED_FINEWEB_REPO_ID": REPO_ID,
            "MATCHED_FINEWEB_REMOTE_ROOT_PREFIX": "datasets"}


def test_byte260_fetch_train_and_eval_count_the_utf8_bytes(tmp_path):
    val = validation_texts()
    train = [builtin_documents(max_chars=40_000), ["a second shard nobody asked for"]]
    hub = FakeHub(REPO_ID, byte260_export(val, train))
    data = [f"data.dir=D/{BYTE_DIR}", f"data.tokenizer=D/{BYTE_TOKENIZER}"]
    try:  # fetch, train, eval: one interpreter, one after the other
        fetched, trained, evaluated = run_pgolf_each([
            (["data", "fetch", "byte260", "--train-shards", "1", "--out", "D"], tmp_path),
            (["train", "data=fineweb_byte260", *data, "model.vocab_size=260", *QUICK_BYTES, "run.name=byte260",
              "--json"], tmp_path),
            (["eval", "runs/latest", "--json"], tmp_path)], env=hub_env(hub, tmp_path))
    finally:
        hub.close()
    exited(fetched)
    assert [path for method, path in hub.files_requested() if method == "GET"] == [
        "datasets/manifest.json", f"datasets/{BYTE_DIR}/fineweb_val_000000.bin",
        f"datasets/{BYTE_DIR}/fineweb_train_000000.bin", f"datasets/{BYTE_TOKENIZER}"]

    summary = json.loads(exited(trained).stdout)
    utf8_bytes = sum(len(text.encode("utf-8")) for text in val)
    assert summary["val_bytes"] == utf8_bytes
    assert summary["val_tokens"] == utf8_bytes + len(val) - 1  # every token after the first BOS is scored

    scored = json.loads(exited(evaluated).stdout)
    assert scored["val_bytes"] == utf8_bytes
    assert scored["val_bpb"] == pytest.approx(summary["val_bpb_roundtrip"], rel=1e-6)


def test_training_on_missing_fineweb_data_names_the_fetch_command(tmp_path):
    proc = run_pgolf("train", "data=fineweb_sp1024", cwd=tmp_path, check_code=1)
    assert "data folder data/datasets/fineweb10B_sp1024 not found (run `pgolf data fetch sp1024`)" in proc.stderr

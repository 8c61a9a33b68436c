"""Synthetic records folders, one per failure kind, built file by file so every byte count is known."""

import json
from pathlib import Path

import pytest

SCORED = "final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}"


def train_log(bpb: float, loss: float | None = None, train_ms: int = 590_000, artifact: int = 1_000_000,
              total: int | None = None, extra: tuple[str, ...] = ()) -> str:
    """A log in the reference script's format: steps, the wallclock stop, sizes, the scored line."""
    lines = [f"step:1000/20000 train_loss:2.5 train_time:{train_ms - 10_000}ms step_avg:50.00ms",
             f"step:1010/20000 val_loss:2.4 val_bpb:1.4 train_time:{train_ms}ms step_avg:50.00ms",
             f"stopping_early: wallclock_cap train_time:{train_ms}ms step:1010/20000",
             *extra,
             f"Serialized model int8+zlib: {artifact} bytes",
             *([f"Total submission size int8+zlib: {total} bytes"] if total is not None else []),
             "final_int8_zlib_roundtrip val_loss:2.0 val_bpb:1.2 eval_time:1500ms",
             SCORED.format(loss=2 * bpb if loss is None else loss, bpb=bpb)]
    return "\n".join(lines) + "\n"


def make_folder(root: Path, script: str = "print('hi')\n", logs: dict[str, str] | None = None,
                submission: dict | str | None = None, files: dict[str, str | bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train_gpt.py").write_text(script)
    for name, text in (logs if logs is not None else {"train_seed1.log": train_log(1.2)}).items():
        (root / name).write_text(text)
    if submission is not None:
        (root / "submission.json").write_text(submission if isinstance(submission, str) else json.dumps(submission))
    for name, data in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return root


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """A small BPE SentencePiece model trained on the built-in corpus (byte fallback, identity normalization)."""
    from pgolf.data.corpus import builtin_documents
    from pgolf.data.tokenizer import train_tokenizer

    return train_tokenizer(builtin_documents(60_000), tmp_path_factory.mktemp("tok") / "sp.model", vocab_size=512)

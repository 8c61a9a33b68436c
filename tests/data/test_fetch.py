"""`pgolf data fetch` against a fake Hub on 127.0.0.1: layout, resumability, checks, errors; the byte260 tokenizer.

`FakeHub` serves just what `hf_hub_download` asks of the Hub: HEAD and GET on
`/datasets/<repo>/resolve/<revision>/<path>`, with the headers huggingface_hub checks (ETag,
X-Repo-Commit, Content-Length) and 404s carrying `X-Error-Code: RepoNotFound` / `EntryNotFound`.
It counts the requests, so resumability is measured on the wire. tests/e2e/test_fetch_cli.py reuses it.
"""

import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from pgolf import cli
from pgolf.data.corpus import builtin_documents
from pgolf.data.fetch import MARKER, STAGING, fetch_data
from pgolf.data.shards import HEADER_INTS, SHARD_MAGIC, SHARD_VERSION, find_shards
from pgolf.data.tokenizer import (
    BOS_ID,
    PURE_BYTE_CONFIG,
    PureByteTokenizer,
    build_byte_luts,
    load_pure_byte_tokenizer,
    load_scoring_tokenizer,
    load_tokenizer,
    tokenizer_size,
    train_tokenizer,
)
from pgolf.errors import DataError

REPO_ID = "test-org/fake-golf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BYTE_DIR = "datasets/fineweb10B_byte260"
BYTE_TOKENIZER = "tokenizers/fineweb_pure_byte_260.json"


# ----------------------------------------------------------------------------------------- the fake Hub

class FakeHub:
    """A loopback stand-in for the Hub's file endpoint (one dataset repo, revision ignored)."""

    def __init__(self, repo_id: str, files: dict[str, bytes]):
        self.repo_id, self.files, self.requests = repo_id, dict(files), []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                hub.answer(self, send_body=False)

            def do_GET(self):
                hub.answer(self, send_body=True)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files_requested(self) -> list[tuple[str, str]]:
        """(method, path in the repo) of every file request, in order."""
        return [(method, path.split("/resolve/", 1)[1].split("/", 1)[1]) for method, path in self.requests
                if "/resolve/" in path]

    def gets(self, suffix: str = "") -> int:
        return sum(method == "GET" and path.endswith(suffix) for method, path in self.files_requested())

    def answer(self, handler: BaseHTTPRequestHandler, send_body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append((handler.command, path))
        match = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match is None or match[1] != self.repo_id:
            return self.send(handler, 404, {"X-Error-Code": "RepoNotFound"}, b"Repository not found", send_body)
        data = self.files.get(match[3])
        if data is None:
            return self.send(handler, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT},
                             b"Entry not found", send_body)
        headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": COMMIT,
                   "Content-Type": "application/octet-stream"}
        self.send(handler, 200, headers, data, send_body)

    @staticmethod
    def send(handler, status: int, headers: dict[str, str], data: bytes, send_body: bool) -> None:
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if send_body:
            handler.wfile.write(data)


def shard_bytes(tokens) -> bytes:
    tokens = np.asarray(tokens, dtype="<u2")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    return header.tobytes() + tokens.tobytes()


def byte260_tokens(texts: list[str]) -> list[int]:
    """As the challenge's exporter writes them: BOS (1) at each document start, then its UTF-8 bytes + 4."""
    tokenizer = PureByteTokenizer()
    return [token for text in texts for token in (BOS_ID, *tokenizer.encode(text))]


def pure_byte_json() -> bytes:
    payload = {"tokenizer_type": "pure_byte", "config": PURE_BYTE_CONFIG, "vocab_size": 260}
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


def dataset_entry(variant: str, tokenizer_name: str, files_train: int, files_val: int) -> dict:
    return {"name": f"fineweb10B_{variant}", "tokenizer_name": tokenizer_name, "path": f"datasets/fineweb10B_{variant}",
            "stats": {"files_train": files_train, "files_val": files_val}}


def byte260_export(val_texts: list[str], train_texts: list[list[str]], prefix: str = "datasets") -> dict[str, bytes]:
    """The files of a byte260 export under `prefix`, as the challenge's repo lays them out."""
    manifest = {"version": "10B",
                "datasets": [dataset_entry("byte260", "pure_byte_260", len(train_texts), 1)],
                "tokenizers": [{"name": "pure_byte_260", "kind": "byte", "vocab_size": 260, "bos_id": 1, "eos_id": 2,
                                "path": BYTE_TOKENIZER, "pad_id": 0, "unk_id": 3}]}
    files = {"manifest.json": json.dumps(manifest, indent=2).encode(), BYTE_TOKENIZER: pure_byte_json(),
             f"{BYTE_DIR}/fineweb_val_000000.bin": shard_bytes(byte260_tokens(val_texts))}
    for index, texts in enumerate(train_texts):
        files[f"{BYTE_DIR}/fineweb_train_{index:06d}.bin"] = shard_bytes(byte260_tokens(texts))
    return {f"{prefix}/{path}": data for path, data in files.items()}


@pytest.fixture
def hub_files():
    return byte260_export(["Validation text, naïve café 🙂.", "second doc"],
                          [[f"train shard {i}: " + "some words " * (i + 3)] for i in range(3)])


@pytest.fixture
def hub(monkeypatch, tmp_path, hub_files):
    """A FakeHub that huggingface_hub (already imported, so its constants are patched) talks to, and only it."""
    from huggingface_hub import constants

    fake = FakeHub(REPO_ID, hub_files)
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    home = constants.HF_HOME
    for name, value in list(vars(constants).items()):  # cache, token, agent registry...: in tmp_path, as HF_HOME does
        if isinstance(value, str) and value.startswith(home):
            monkeypatch.setattr(constants, name, str(tmp_path / "hf") + value[len(home):])
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MATCHED_FINEWEB_REMOTE_ROOT_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", REPO_ID)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield fake
    fake.close()


def fetch_cli(args, capsys):
    """`pgolf data fetch ARGS` in-process, expected to fail: (exit code, its one-line error)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "fetch", *map(str, args)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return exit_info.value.code, lines[0]


# ----------------------------------------------------------------------------------------- layout and resuming

def test_fetch_lays_files_out_as_the_challenge_downloader(hub, hub_files, tmp_path):
    calls = []
    fetched = fetch_data("byte260", 2, tmp_path / "data", progress=lambda *a, **k: calls.append((a, k)))
    root = tmp_path / "data"
    assert (root / "manifest.json").read_bytes() == hub_files["datasets/manifest.json"]
    for name in ("fineweb_val_000000.bin", "fineweb_train_000000.bin", "fineweb_train_000001.bin"):
        assert (root / BYTE_DIR / name).read_bytes() == hub_files[f"datasets/{BYTE_DIR}/{name}"]
    assert not (root / BYTE_DIR / "fineweb_train_000002.bin").exists()
    assert (root / BYTE_TOKENIZER).read_bytes() == pure_byte_json()
    assert sorted(p.name for p in root.iterdir()) == ["datasets", "manifest.json", "tokenizers"]  # no staging left
    assert fetched.dir == root / BYTE_DIR and fetched.tokenizer == root / BYTE_TOKENIZER
    assert [p.name for p in fetched.train_files] == ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]
    assert fetched.val_tokens == len(byte260_tokens(["Validation text, naïve café 🙂.", "second doc"]))
    assert fetched.downloaded == 5
    marker = json.loads((root / BYTE_DIR / MARKER).read_text())
    assert (marker["repo_id"], marker["remote_prefix"], marker["variant"]) == (REPO_ID, "datasets", "byte260")
    assert marker["files"][f"{BYTE_DIR}/fineweb_val_000000.bin"] == len(hub_files[f"datasets/{BYTE_DIR}/"
                                                                                  "fineweb_val_000000.bin"])
    assert calls[-1][0][:3] == ("fetch", 4, 4)
    assert find_shards(fetched.dir, "fineweb_val_*.bin") == fetched.val_files


def test_a_second_run_makes_no_request_and_more_shards_fetch_only_those(hub, tmp_path):
    fetch_data("byte260", 1, tmp_path / "data")
    before = len(hub.requests)
    again = fetch_data("byte260", 1, tmp_path / "data")
    assert again.downloaded == 0 and len(hub.requests) == before
    more = fetch_data("byte260", 3, tmp_path / "data")
    assert more.downloaded == 2
    assert [path for method, path in hub.files_requested()[-4:] if method == "GET"] == [
        f"datasets/{BYTE_DIR}/fineweb_train_000001.bin", f"datasets/{BYTE_DIR}/fineweb_train_000002.bin"]
    assert hub.gets() == 4 + 2


def test_a_truncated_or_replaced_local_shard_is_fetched_again(hub, hub_files, tmp_path):
    root = tmp_path / "data"
    fetch_data("byte260", 2, root)
    val, train = root / BYTE_DIR / "fineweb_val_000000.bin", root / BYTE_DIR / "fineweb_train_000001.bin"
    val.write_bytes(val.read_bytes()[:-7])  # header and size disagree
    train.write_bytes(shard_bytes([BOS_ID, 5, 6]))  # a sound shard, but not the one fetched (size recorded)
    gets = hub.gets()
    assert fetch_data("byte260", 2, root).downloaded == 2 and hub.gets() == gets + 2
    assert val.read_bytes() == hub_files[f"datasets/{BYTE_DIR}/fineweb_val_000000.bin"]
    assert train.read_bytes() == hub_files[f"datasets/{BYTE_DIR}/fineweb_train_000001.bin"]


def test_a_corrupt_download_is_an_error_naming_the_file_and_lands_nothing(hub, tmp_path, capsys):
    name = f"datasets/{BYTE_DIR}/fineweb_train_000001.bin"
    hub.files[name] = hub.files[name][:-4]
    root = tmp_path / "data"
    code, message = fetch_cli(["byte260", "--train-shards", "2", "--out", root], capsys)
    assert code == 1 and name in message and "truncated shard" in message
    assert not (root / BYTE_DIR / "fineweb_train_000001.bin").exists()
    assert not (root / STAGING).exists() and not list(root.rglob("*.incomplete"))
    assert (root / BYTE_DIR / "fineweb_train_000000.bin").is_file()  # what landed before stays, for the re-run
    hub.files[f"datasets/{BYTE_TOKENIZER}"] = json.dumps({"tokenizer_type": "byte_level"}).encode()
    (root / BYTE_TOKENIZER).unlink(missing_ok=True)
    code, message = fetch_cli(["byte260", "--train-shards", "1", "--out", root], capsys)
    assert code == 1 and BYTE_TOKENIZER in message and "tokenizer_type 'byte_level'" in message
    assert not (root / BYTE_TOKENIZER).exists()


def test_sentencepiece_variant_fetches_model_and_vocab(hub, tmp_path):
    model = tmp_path / "sp.model"
    train_tokenizer(builtin_documents(max_chars=30_000), model, vocab_size=400)
    tokenizer = {"name": "sp_bpe_1024", "kind": "sentencepiece_bpe", "model_path": "tokenizers/fineweb_1024_bpe.model",
                 "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"}
    manifest = {"datasets": [dataset_entry("sp1024", "sp_bpe_1024", 1, 1)], "tokenizers": [tokenizer]}
    shard = shard_bytes([BOS_ID, *load_tokenizer(model).encode("hello world")])
    hub.files = {"datasets/manifest.json": json.dumps(manifest).encode(),
                 "datasets/tokenizers/fineweb_1024_bpe.model": model.read_bytes(),
                 "datasets/tokenizers/fineweb_1024_bpe.vocab": b"<pad>\t0\n",
                 "datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin": shard,
                 "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin": shard}
    fetched = fetch_data("sp1024", 1, tmp_path / "data")
    assert fetched.tokenizer == tmp_path / "data/tokenizers/fineweb_1024_bpe.model"
    assert (tmp_path / "data/tokenizers/fineweb_1024_bpe.vocab").read_bytes() == b"<pad>\t0\n"
    assert load_tokenizer(fetched.tokenizer).get_piece_size() == 400
    hub.files["datasets/tokenizers/fineweb_1024_bpe.model"] = b"not a model"
    fetched.tokenizer.write_bytes(b"damaged")
    with pytest.raises(DataError, match="fineweb_1024_bpe.model downloaded from .* is not a SentencePiece model"):
        fetch_data("sp1024", 1, tmp_path / "data")


# ----------------------------------------------------------------------------------------- errors

def test_bad_requests_are_one_line_errors(hub, tmp_path, capsys):
    out = tmp_path / "data"
    code, message = fetch_cli(["sp2048", "--out", out], capsys)
    assert code == 2 and "unknown variant 'sp2048'" in message and "sp1024, sp4096, sp8192, byte260" in message
    code, message = fetch_cli(["byte260", "--train-shards", "-1", "--out", out], capsys)
    assert code == 2 and "--train-shards must be >= 0" in message
    assert not out.exists() and hub.requests == []
    code, message = fetch_cli(["byte260", "--train-shards", "4", "--out", out], capsys)
    assert code == 1 and "byte260 has 3 training shards on test-org/fake-golf, asked for 4" in message
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    code, message = fetch_cli(["sp4096", "--out", out], capsys)
    assert code == 1 and "does not list fineweb10B_sp4096" in message


def test_wrong_repo_or_prefix_names_the_setting_and_writes_nothing(hub, tmp_path, monkeypatch, capsys):
    out = tmp_path / "data"
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", "test-org/no-such-repo")
    code, message = fetch_cli(["byte260", "--out", out], capsys)
    assert code == 1 and "test-org/no-such-repo not found" in message and "MATCHED_FINEWEB_REPO_ID" in message
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", REPO_ID)
    monkeypatch.setenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", "exports")
    code, message = fetch_cli(["byte260", "--out", out], capsys)
    assert code == 1 and "has no file exports/manifest.json" in message
    assert "MATCHED_FINEWEB_REMOTE_ROOT_PREFIX" in message
    assert not out.exists()


def test_an_unreachable_endpoint_is_one_line(hub, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # huggingface_hub's retry back-off
    code, message = fetch_cli(["byte260", "--out", tmp_path / "data"], capsys)
    assert code == 1 and f"cannot download datasets/manifest.json from {REPO_ID} on {dead}" in message
    assert "check the network" in message and not (tmp_path / "data").exists()


def test_folders_that_fetch_did_not_make_are_refused(hub, tmp_path, monkeypatch, capsys):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "meta.json").write_text("{}")
    code, message = fetch_cli(["byte260", "--out", prepared], capsys)
    assert code == 1 and "is a data folder (it holds meta.json), not a data root" in message
    foreign = tmp_path / "foreign"
    (foreign / BYTE_DIR).mkdir(parents=True)
    (foreign / BYTE_DIR / "tokenizer.model").write_bytes(b"x")
    code, message = fetch_cli(["byte260", "--out", foreign], capsys)
    assert code == 1 and "was not made by `pgolf data fetch` (it holds tokenizer.model" in message
    fetch_data("byte260", 1, tmp_path / "data")
    monkeypatch.setenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", "other_export")
    code, message = fetch_cli(["sp1024", "--out", tmp_path / "data"], capsys)
    assert code == 1 and "holds fineweb10B_byte260 fetched from test-org/fake-golf (prefix 'datasets')" in message
    assert hub.gets("other_export/manifest.json") == 0


def test_a_folder_of_challenge_shards_is_adopted_and_checked(hub, hub_files, tmp_path):
    root = tmp_path / "data"
    (root / BYTE_DIR).mkdir(parents=True)
    for name in ("fineweb_val_000000.bin", "fineweb_train_000000.bin"):
        (root / BYTE_DIR / name).write_bytes(hub_files[f"datasets/{BYTE_DIR}/{name}"])
    (root / BYTE_DIR / "fineweb_train_000000.bin").write_bytes(b"junk")
    fetched = fetch_data("byte260", 1, root)
    assert hub.gets(".bin") == 1 and hub.gets("fineweb_train_000000.bin") == 1
    assert fetched.downloaded == 3  # manifest, the junk shard, the tokenizer


# ----------------------------------------------------------------------------------------- hints and the byte tokenizer

def test_missing_fineweb_data_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"run `pgolf data fetch sp1024`\)"):
        find_shards(Path("data/datasets/fineweb10B_sp1024"), "fineweb_train_*.bin")
    with pytest.raises(DataError, match=rf"run `pgolf data fetch byte260 --out {tmp_path}/d`\)"):
        find_shards(tmp_path / "d/datasets/fineweb10B_byte260", "fineweb_val_*.bin")
    with pytest.raises(DataError, match=r"run `pgolf data fetch sp8192`\)"):
        load_tokenizer(Path("data/tokenizers/fineweb_8192_bpe.model"))
    with pytest.raises(DataError, match=r"run `pgolf data fetch byte260`\)"):
        load_scoring_tokenizer(Path("data/tokenizers/fineweb_pure_byte_260.json"))
    with pytest.raises(DataError, match=r"run `pgolf data prepare`\)"):
        find_shards(Path("data/builtin"), "*_train_*.bin")


def test_pure_byte_json_loads_and_counts_bytes(tmp_path):
    path = tmp_path / "fineweb_pure_byte_260.json"
    path.write_bytes(pure_byte_json())
    tokenizer = load_scoring_tokenizer(path)
    assert isinstance(tokenizer, PureByteTokenizer) and tokenizer_size(tokenizer) == 260
    text = "naïve café 🙂"
    ids = byte260_tokens([text])
    assert tokenizer.decode(ids) == text
    luts = build_byte_luts(tokenizer, 264)
    assert luts.vocab_size == 264 and int(luts.base_bytes[ids[1:]].sum()) == len(text.encode())


@pytest.mark.parametrize("content, words", [
    (b"\x0a\x0bnot json", "is not a JSON file"),
    (b'{"model": {"type": "BPE"}}', "tokenizer_type None"),
    (b'{"tokenizer_type": "sentencepiece"}', "tokenizer_type 'sentencepiece'"),
    (json.dumps({"tokenizer_type": "pure_byte", "config": {**PURE_BYTE_CONFIG, "byte_offset": 3},
                 "vocab_size": 259}).encode(), "config.byte_offset is 3, expected 4; vocab_size is 259, expected 260"),
])
def test_a_wrong_tokenizer_json_is_a_one_line_error(tmp_path, content, words):
    path = tmp_path / "tok.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(words)) as info:
        load_pure_byte_tokenizer(path)
    assert "\n" not in str(info.value)

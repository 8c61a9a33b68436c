"""`pgolf data prepare --vocab-size V`: each size of the built-in corpus in its own folder, with a preset to match."""

import json
from pathlib import Path

import pytest

from pgolf import cli
from pgolf import config as C
from pgolf.data import prepare as prepare_module
from pgolf.data.corpus import builtin_documents
from pgolf.data.prepare import default_out_dir
from pgolf.data.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def small_corpus():
    return builtin_documents(max_chars=150_000)


@pytest.fixture
def workdir(tmp_path, monkeypatch, small_corpus):
    """A fresh working directory where `pgolf data prepare` without a source reads a small slice of the corpus."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(prepare_module, "builtin_documents", lambda max_chars=0: small_corpus)
    return tmp_path


def _pgolf(capfd, *args) -> tuple[int, str]:
    """pgolf's main run in-process: (exit code, stderr). capfd, not capsys: SentencePiece training needs
    sys.stderr to have a file descriptor."""
    capfd.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in args])
    return info.value.code, capfd.readouterr().err


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def test_default_out_dir_per_vocab():
    assert default_out_dir(None, 1024) == Path("data/builtin")
    assert default_out_dir(None, 8192) == Path("data/builtin_sp8192")
    assert default_out_dir(None, 512) == Path("data/builtin_sp512")
    assert default_out_dir("docs", 8192) == Path("data/builtin")  # a user source: as before, --out names its place


def test_each_vocab_gets_its_own_folder_and_reruns_are_cached(workdir, capfd):
    assert _pgolf(capfd, "data", "prepare")[0] == 0
    builtin = workdir / "data/builtin"
    before = _snapshot(builtin)
    assert _pgolf(capfd, "data", "prepare", "--vocab-size", "512")[0] == 0
    sp512 = workdir / "data/builtin_sp512"
    assert _snapshot(builtin) == before  # the 1024 folder is untouched
    assert sorted(p.name for p in (workdir / "data").iterdir()) == ["builtin", "builtin_sp512"]  # no leftovers
    assert load_tokenizer(builtin / "tokenizer.model").get_piece_size() == 1024
    assert load_tokenizer(sp512 / "tokenizer.model").get_piece_size() == 512
    meta = json.loads((sp512 / "meta.json").read_text())
    assert meta["vocab_size"] == 512
    assert meta["train_files"] == ["builtin_train_000000.bin"] and meta["val_files"] == ["builtin_val_000000.bin"]

    made_512 = _snapshot(sp512)
    assert _pgolf(capfd, "data", "prepare", "--vocab-size", "512")[0] == 0
    assert _pgolf(capfd, "data", "prepare")[0] == 0
    assert _snapshot(sp512) == made_512 and _snapshot(builtin) == before  # same arguments: nothing redone


def test_builtin_sp8192_preset_matches_the_folder_prepare_writes():
    cfg = C.compose(["data=builtin_sp8192"])
    folder = default_out_dir(None, 8192)
    assert (cfg.data.name, cfg.data.dir, cfg.data.tokenizer) == (
        "builtin_sp8192", str(folder), str(folder / "tokenizer.model"))
    assert cfg.data.vocab_size == cfg.model.vocab_size == 8192
    assert C.compose(["data=builtin_sp8192", "model=baseline"]).model.vocab_size == 8192  # a model preset keeps it
    assert C.compose(["data=builtin_sp8192", "model.vocab_size=1024"]).model.vocab_size == 1024


def test_model_bigger_than_the_tokenizer_is_a_one_line_error(workdir, capfd):
    assert _pgolf(capfd, "data", "prepare")[0] == 0
    code, err = _pgolf(capfd, "train", "model.vocab_size=8192")
    assert code == 1 and err.strip().count("\n") == 0, err
    assert "data/builtin/tokenizer.model has 1024 pieces but model.vocab_size is 8192" in err
    assert not (workdir / "runs").exists()


@pytest.mark.slow
def test_builtin_corpus_supports_8192_pieces_and_a_smaller_model_is_a_one_line_error(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    assert _pgolf(capfd, "data", "prepare", "--vocab-size", "8192")[0] == 0  # the whole built-in corpus
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["builtin_sp8192"]
    assert load_tokenizer(tmp_path / "data/builtin_sp8192/tokenizer.model").get_piece_size() == 8192
    code, err = _pgolf(capfd, "train", "data=builtin_sp8192", "model.vocab_size=1024")
    assert code == 1 and err.strip().count("\n") == 0, err
    assert "data/builtin_sp8192/tokenizer.model has 8192 pieces but model.vocab_size is 1024" in err


def test_a_missing_built_in_folder_of_another_vocab_names_the_command_that_makes_it():
    from pgolf.data.shards import command_that_makes

    assert command_that_makes("data/builtin_sp8192") == "pgolf data prepare --vocab-size 8192"
    assert command_that_makes("data/builtin_sp8192/tokenizer.model") == "pgolf data prepare --vocab-size 8192"
    assert command_that_makes("data/builtin") == "pgolf data prepare"

"""`pgolf train` / `pgolf eval` as a user runs them: outputs, contracts, bad input, interruption."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from pgolf.audit.logs import parse_log
from pgolf.data.shards import read_shard
from pgolf.model.gpt import GPT
from pgolf.results.tables import summary_table

from .conftest import QUICK, exited, interruptible, one_line_error, run_pgolf, run_pgolf_each

pytestmark = pytest.mark.slow


def test_train_writes_the_run_directory_contract(trained_run):
    cwd, summary, proc = trained_run
    run_dir = cwd / summary["run_dir"]
    for name in ("config.yaml", "metrics.jsonl", "train.log", "model.safetensors", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert (cwd / "runs" / "latest").resolve() == run_dir.resolve()
    artifact = cwd / summary["artifact"]
    assert artifact.parent == run_dir / "artifacts" and artifact.suffix == ".pgolf"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    for key in ("params", "val_loss", "val_bpb", "val_bpb_roundtrip", "val_tokens", "val_bytes"):
        assert isinstance(summary[key], (int, float)), key
    assert summary["bytes"]["model"] == artifact.stat().st_size
    assert summary["bytes"]["total"] == summary["bytes"]["model"] + summary["bytes"]["code"]
    assert summary["steps"] == 30
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("val_bpb" in m for m in metrics) and any("train_loss" in m for m in metrics)
    # the log's last score is the round trip's, and it says how long training took (what `pgolf audit` reads)
    log = parse_log(run_dir / "train.log")
    assert (log.val_bpb.value, log.val_loss.value) == (round(summary["val_bpb_roundtrip"], 8),
                                                        round(summary["val_loss_roundtrip"], 8))
    assert log.train_s.value == round(summary["train_time_s"], 1)


def test_json_output_is_only_json(trained_run):
    _, summary, proc = trained_run
    assert json.loads(proc.stdout) == summary
    assert "val_bpb" in proc.stderr  # the human log went to stderr


BAD_INPUTS = [
    (["data.dir=/nonexistent/place"], "/nonexistent/place"),
    (["model.vocab_size=512"], "vocab_size"),
    (["model.no_such=1"], "model.no_such"),
    (["train.seq_len=abc"], "train.seq_len"),
]


@pytest.fixture(scope="module")
def cli_runs(trained_run, builtin_data, tmp_path_factory):
    """The evals and failing trainings below, each in the folder its test names, run in turn in one interpreter:
    name -> (CompletedProcess, its cwd)."""
    cwd, summary, _ = trained_run
    data = [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]
    commands = {  # name -> (args, cwd); the files they read are written here first
        "artifact": (["eval", summary["artifact"], *data, "data.val_tokens=16384", "--json"], cwd),
        "checkpoint": (["eval", cwd / summary["run_dir"] / "model.safetensors", *data, "data.val_tokens=16384",
                        "--json"], cwd),
    }

    # A plain torch.save'd state dict (as the reference script writes), bf16 matrices.
    here = tmp_path_factory.mktemp("final_model_pt")
    state = load_file(str(cwd / summary["run_dir"] / "model.safetensors"))
    torch.save({k: v.bfloat16() if v.ndim == 2 else v for k, v in state.items()}, here / "final_model.pt")
    commands["final_model.pt"] = (["eval", here / "final_model.pt", *data, "data.val_tokens=16384", "--json"], cwd)

    here = tmp_path_factory.mktemp("reference")
    torch.manual_seed(0)
    torch.save(GPT().state_dict(), here / "final_model.pt")  # 9x512, the reference shapes and keys
    commands["reference"] = (["eval", here / "final_model.pt", *data, "data.val_tokens=2048", "--json"], here)

    for i, (overrides, _) in enumerate(BAD_INPUTS):
        commands[f"bad{i}"] = (["train", *data, *QUICK, *overrides], tmp_path_factory.mktemp("bad"))

    here = tmp_path_factory.mktemp("corrupt_shard")
    shards = here / "data"
    shards.mkdir()
    for f in builtin_data.iterdir():
        (shards / f.name).write_bytes(f.read_bytes())
    val = next(shards.glob("*_val_*.bin"))
    val.write_bytes(val.read_bytes()[:-10])
    commands["corrupt shard"] = (["train", f"data.dir={shards}", f"data.tokenizer={shards / 'tokenizer.model'}",
                                  *QUICK], here)

    here = tmp_path_factory.mktemp("corrupt_artifact")
    blob = bytearray((cwd / summary["artifact"]).read_bytes())
    blob[len(blob) // 2] ^= 0x40
    (here / "bad.pgolf").write_bytes(bytes(blob))
    commands["corrupt artifact"] = (["eval", here / "bad.pgolf", *data], here)

    # data=fineweb_sp1024 finds data/datasets/fineweb10B_sp1024/ and data/tokenizers/fineweb_1024_bpe.model.
    here = tmp_path_factory.mktemp("fineweb")
    layout = here / "data" / "datasets" / "fineweb10B_sp1024"
    layout.mkdir(parents=True)
    (here / "data" / "tokenizers").mkdir()
    (layout / "fineweb_train_000000.bin").write_bytes(next(builtin_data.glob("*_train_*.bin")).read_bytes())
    (layout / "fineweb_val_000000.bin").write_bytes(next(builtin_data.glob("*_val_*.bin")).read_bytes())
    (here / "data" / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(
        (builtin_data / "tokenizer.model").read_bytes())
    commands["fineweb"] = (["eval", cwd / summary["artifact"], "data=fineweb_sp1024", "data.val_tokens=16384",
                            "--json"], here)

    procs = run_pgolf_each(list(commands.values()))
    return {name: (proc, run_cwd) for (name, (_, run_cwd)), proc in zip(commands.items(), procs, strict=True)}


def succeeded(cli_runs, name):
    return json.loads(exited(cli_runs[name][0]).stdout)


def test_eval_of_the_artifact_reproduces_the_round_trip_score(trained_run, cli_runs):
    _, summary, _ = trained_run
    assert succeeded(cli_runs, "artifact")["val_bpb"] == pytest.approx(summary["val_bpb_roundtrip"], rel=1e-9)


def test_eval_of_the_checkpoint_reproduces_the_float_score(trained_run, cli_runs):
    _, summary, _ = trained_run
    assert succeeded(cli_runs, "checkpoint")["val_bpb"] == pytest.approx(summary["val_bpb"], rel=1e-9)


def test_eval_of_a_reference_style_final_model_pt(trained_run, cli_runs):
    """A plain torch.save'd state dict (as the reference script writes) loads with weights_only and scores."""
    _, summary, _ = trained_run
    result = succeeded(cli_runs, "final_model.pt")
    assert result["val_bpb"] == pytest.approx(summary["val_bpb"], abs=0.02)  # bf16 weights: close, not equal


def test_reference_baseline_state_dict_loads_into_model_baseline(cli_runs):
    assert succeeded(cli_runs, "reference")["params"] == 17_059_912


def test_help_lists_every_verb(tmp_path):
    proc = run_pgolf("--help", cwd=tmp_path, check_code=0)
    for verb in ("train", "sweep", "fit-budget", "data", "export", "eval", "report"):
        assert verb in proc.stdout


@pytest.mark.parametrize("overrides,fragment", BAD_INPUTS)
def test_bad_input_is_one_line_error_and_writes_nothing(cli_runs, overrides, fragment):
    proc, cwd = cli_runs[f"bad{BAD_INPUTS.index((overrides, fragment))}"]
    assert proc.returncode == 1
    assert fragment in one_line_error(proc)
    assert not (cwd / "runs").exists()


def test_corrupt_shard_is_one_line_error(cli_runs):
    proc, cwd = cli_runs["corrupt shard"]
    val = next((cwd / "data").glob("*_val_*.bin"))
    assert proc.returncode == 1 and val.name in one_line_error(proc)


def test_corrupt_artifact_is_one_line_error(cli_runs):
    proc, _ = cli_runs["corrupt artifact"]
    assert proc.returncode == 1 and "bad.pgolf" in one_line_error(proc)


def test_nan_loss_stops_keeps_weights_and_says_the_step(tmp_path, data_overrides):
    proc = run_pgolf("train", *data_overrides, *QUICK, "train.embed_lr=1e38", "train.scalar_lr=1e38",
                     "reg.grad_clip=0", cwd=tmp_path)
    assert proc.returncode == 1
    message = one_line_error(proc)
    assert "at step" in message and "kept the weights" in message
    run_dir = (tmp_path / "runs" / "latest").resolve()
    weights = load_file(str(run_dir / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_ctrl_c_saves_what_was_trained_and_exits_130(tmp_path, data_overrides):
    cmd = [sys.executable, "-m", "pgolf", "train", *data_overrides, "train.iterations=100000", "train.val_every=0"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline:
        found = list((tmp_path / "runs").glob("*/*/metrics.jsonl")) if (tmp_path / "runs").exists() else []
        if found and found[0].stat().st_size > 0:
            metrics = found[0]
            break
        time.sleep(0.5)
    assert metrics is not None, "training never logged a step"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    run_dir = metrics.parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and summary["steps"] > 0
    assert (run_dir / "model.safetensors").is_file()


def _wait_for_steps(tmp_path, proc, steps: int):
    """The run directory once its metrics log holds `steps` lines (the training is under way)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "runs").glob("*/*/metrics.jsonl")) if (tmp_path / "runs").exists() else []
        if found and len(found[0].read_text().splitlines()) >= steps:
            return found[0].parent
        time.sleep(0.2)
    raise AssertionError(f"training never logged {steps} steps: {proc.communicate()[1][-2000:]}")


def _cli_error(capsys, *args) -> str:
    """pgolf's main run here on `args`, which must fail with exit 1: its one-line error."""
    from pgolf import cli

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in args])
    stderr = capsys.readouterr().err
    assert info.value.code == 1, stderr
    return one_line_error(subprocess.CompletedProcess([], 1, "", stderr))


def test_sigterm_saves_a_checkpoint_exits_143_and_the_run_resumes_to_the_end(tmp_path, data_overrides, capsys):
    iters = 16
    args = [*data_overrides, f"train.iterations={iters}", "train.log_every=1", "train.val_every=0",
            "data.val_tokens=16384"]
    proc = subprocess.Popen([sys.executable, "-m", "pgolf", "train", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    run_dir = _wait_for_steps(tmp_path, proc, 2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    message = one_line_error(subprocess.CompletedProcess([], 143, "", stderr))
    summary = json.loads((run_dir / "summary.json").read_text())
    stopped = summary["steps"]
    assert summary["stop_reason"] == "terminated" and 0 < stopped < iters
    assert f"terminated after {stopped} steps" in message
    assert f"pgolf train --resume {run_dir.relative_to(tmp_path)}`" in message
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "interrupted" and state["checkpoint_step"] == stopped
    assert (run_dir / "model.safetensors").is_file() and (tmp_path / "runs" / "latest").resolve() == run_dir

    # Bad resumes (in this process, as the CLI's main runs them): one line, exit 1, the run left as it was.
    state_before = (run_dir / "state.json").read_text()
    for extra, fragment in ([["model.num_layers=3"], "only train.iterations and train.wallclock_s may be raised"],
                            [["train.iterations=5"], "may raise train.iterations, not lower it"]):
        assert fragment in _cli_error(capsys, "train", "--resume", run_dir, *extra)
    assert "not a pgolf run directory" in _cli_error(capsys, "train", "--resume", tmp_path)
    assert (run_dir / "state.json").read_text() == state_before
    train_state = next((run_dir / "checkpoints").glob("step-*/train_state.pt"))
    whole = train_state.read_bytes()
    train_state.write_bytes(whole[: len(whole) // 3])
    assert "checkpoint is truncated or corrupt" in _cli_error(capsys, "train", "--resume", run_dir)
    train_state.write_bytes(whole)

    done = run_pgolf("train", "--resume", run_dir, "--json", cwd=tmp_path, check_code=0)
    summary = json.loads(done.stdout)
    assert summary["steps"] == iters and summary["stop_reason"] == "completed" and summary["run_dir"] == str(run_dir)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, iters + 1))  # each step logged once: the resumed run redid none, skipped none
    assert f"resumed at step {stopped}" in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "state.json").read_text())["state"] == "completed"
    assert "raise one of them to train on" in _cli_error(capsys, "train", "--resume", run_dir)


def test_prepared_shards_are_challenge_format(builtin_data):
    for shard in builtin_data.glob("*.bin"):
        tokens = read_shard(shard)
        assert tokens[0] == 1  # each document starts with BOS


def test_fineweb_preset_reads_the_challenge_layout_as_is(trained_run, cli_runs):
    """data=fineweb_sp1024 finds data/datasets/fineweb10B_sp1024/ and data/tokenizers/fineweb_1024_bpe.model."""
    _, summary, _ = trained_run
    assert succeeded(cli_runs, "fineweb")["val_bpb"] == pytest.approx(summary["val_bpb_roundtrip"], rel=1e-9)


def test_summary_headroom_is_against_the_configured_budget():
    summary = {"params": 1000, "val_loss": 2.0, "val_bpb": 1.2, "val_bpb_roundtrip": 1.21,
               "bytes": {"model": 15_000_000, "code": 60_000, "total": 15_060_000}}
    console = Console(width=200, record=True)
    console.print(summary_table(summary, "pgolf train", "15.5MB"))
    text = console.export_text()
    assert "headroom to 15.5MB" in text and "16MB" not in text
    assert "440,000" in text  # 15,500,000 - 15,060,000, not 940,000 against 16MB

"""Shared fixtures for end-to-end tests: the CLI run as a user runs it, on the built-in corpus.

What costs time here is training and starting interpreters (each `python -m pgolf` imports torch), so:
- what many tests read is made once per session: the prepared corpus (builtin_data), one short training
  (trained_run), one small sweep (grid_sweep), one fresh virtual environment per set of requirements (fresh_venv);
  a test that changes a shared run works on a copy (copy_of);
- commands that only need to fail (bad input) or that run one after another on the same files go through
  run_pgolf_each: one interpreter runs them in turn, each as `pgolf ARGS` runs (`pgolf.cli.main`, its own cwd,
  stdout and stderr), instead of one interpreter each.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest


def _env(env):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PGOLF_DEBUG", None)
    return full_env


def exited(proc, code=0):
    """`proc` (a CompletedProcess), once it is asserted to have exited with `code`."""
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    return proc


def run_pgolf(*args, cwd, check_code=None, env=None, timeout=600):
    """Run `python -m pgolf ARGS` in `cwd`; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "pgolf", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=_env(env), timeout=timeout)
    return proc if check_code is None else exited(proc, check_code)


# One interpreter runs each command as the `pgolf` entry point does: pgolf.cli.main(ARGS) in the command's cwd, its
# exit code from SystemExit, stdout and stderr captured apart; an exception main lets through is printed as the
# interpreter prints it (a traceback, exit 1), so one_line_error still catches it.
_EACH = r"""
import contextlib, io, json, os, sys, traceback
from pgolf import cli

todo, done = sys.argv[1:3]
commands, results = json.load(open(todo)), []
for command in commands:
    os.chdir(command["cwd"])
    sys.argv = ["pgolf", *command["args"]]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(command["args"])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
json.dump(results, open(done, "w"))
"""


def run_pgolf_each(commands, env=None, timeout=600) -> list[subprocess.CompletedProcess]:
    """Run each of `commands` ((args, cwd) pairs) as `pgolf ARGS` in its cwd, in turn, in one new interpreter;
    returns one CompletedProcess per command (the args, exit code, stdout, stderr), as run_pgolf would."""
    with tempfile.TemporaryDirectory() as tmp:
        todo, done = Path(tmp) / "commands.json", Path(tmp) / "results.json"
        todo.write_text(json.dumps([{"args": [str(a) for a in args], "cwd": str(cwd)} for args, cwd in commands]))
        proc = subprocess.run([sys.executable, "-c", _EACH, todo, done], cwd=tmp, capture_output=True, text=True,
                              env=_env(env), timeout=timeout)
        assert proc.returncode == 0 and done.is_file(), f"exit {proc.returncode}\nstderr:{proc.stderr[-3000:]}"
        results = json.loads(done.read_text())
    return [subprocess.CompletedProcess(["pgolf", *map(str, args)], r["returncode"], r["stdout"], r["stderr"])
            for (args, _), r in zip(commands, results, strict=True)]


def interruptible():
    """Popen's preexec_fn for tests that press Ctrl-C: a shell's background job starts with SIGINT ignored, which
    Python then keeps, so the child gets the default disposition back (as in a terminal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def copy_of(tmp_path: Path, src: Path, name: str = "copy") -> Path:
    """A private copy of a shared run or folder (symlinks kept as links), for a test that changes it."""
    dst = tmp_path / name
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture(scope="session")
def builtin_data(tmp_path_factory):
    """The built-in corpus prepared once per test session (tokenizer + shards)."""
    root = tmp_path_factory.mktemp("data")
    run_pgolf("data", "prepare", "--out", root / "builtin", cwd=root, check_code=0)
    return root / "builtin"


@pytest.fixture
def data_overrides(builtin_data):
    return [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]


QUICK = ["train.iterations=30", "train.batch_tokens=1024", "train.val_every=15", "train.log_every=5",
         "data.val_tokens=16384", "train.val_tokens=8192"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, builtin_data):
    """One short training run through the CLI (--json), shared by the tests that inspect its outputs: (cwd, summary,
    CompletedProcess). Tests may add artifacts to its run directory; one that needs it as trained copies it."""
    cwd = tmp_path_factory.mktemp("work")
    proc = run_pgolf("train", f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}",
                     *QUICK, "run.name=e2e", "--json", cwd=cwd, check_code=0)
    return cwd, json.loads(proc.stdout), proc


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the shared trained run with only the training's own artifact (other tests add
    artifacts to the original, in whichever order a worker runs them)."""
    cwd, summary, _ = trained_run
    run_dir = tmp_path / "run"
    shutil.copytree(Path(cwd) / summary["run_dir"], run_dir)
    for extra in [p for p in (run_dir / "artifacts").iterdir() if Path(summary["artifact"]).stem not in p.name]:
        extra.unlink()
    return run_dir, summary


NARROW_FIT = ["fit.clips=[]", "fit.gptq=[]", "fit.control_dtypes=[]"]
"""fit-budget's space of one clip, rounding only and fp32 control tensors: for tests whose subject is not the space
(tests/fit and test_fit_cli search the default one)."""

# A grid of tiny trainings: 2 weight decays (2 trainings) x 2 prune fractions (export points), and a fit-budget each.
TINY = ["train.iterations=12", "train.batch_tokens=1024", "train.val_every=0", "train.log_every=4",
        "data.val_tokens=8192", "fit.val_tokens=2048", "fit.evals=1", "fit.bits=[4,5]", "fit.embed_bits=[6,7]",
        "fit.max_prune=0.1", *NARROW_FIT]


@pytest.fixture(scope="session")
def grid_sweep(tmp_path_factory, builtin_data):
    """`pgolf sweep` of that grid with --max-bytes 420KB, once per session: (cwd, its args, CompletedProcess of the
    --json run). The tests that re-run it may only leave it as it was; one that changes it works on a copy."""
    cwd = tmp_path_factory.mktemp("sweep")
    data = [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]
    args = ["sweep", "reg.weight_decay=0,0.04", "export.prune=0,0.05", *data, *TINY, "--max-bytes", "420KB"]
    proc = run_pgolf(*args, "--json", cwd=cwd, check_code=0)
    return cwd, args, proc


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory):
    """fresh_venv(requirements.txt) -> the python of a virtual environment with torch (this one's version) and those
    requirements, nothing else; made once per session for each distinct requirements file, then shared."""
    import torch

    made: dict[str, Path] = {}

    def make(requirements: Path) -> Path:
        wanted = Path(requirements).read_text()
        if wanted not in made:
            root = tmp_path_factory.mktemp("venv")
            (root / "requirements.txt").write_text(wanted)
            subprocess.run([sys.executable, "-m", "venv", root / "env"], check=True)
            python = root / "env" / "bin" / "python"
            version = torch.__version__.split("+")[0]
            # --no-compile: no .pyc for all of torch up front (two thirds of the install time); imports compile theirs
            proc = subprocess.run([python, "-m", "pip", "install", "-q", "--no-compile", f"torch=={version}", "-r",
                                   root / "requirements.txt"], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            made[wanted] = python
        return made[wanted]

    return make


def sweep_folder(cwd):
    """The one sweep folder under cwd/runs/sweeps."""
    folders = list((cwd / "runs" / "sweeps").iterdir())
    assert len(folders) == 1, folders
    return folders[0]


def results(folder):
    """A sweep folder's results.csv, its grid's values as written."""
    return pd.read_csv(folder / "results.csv", dtype={"reg.weight_decay": str, "export.prune": str})


def one_line_error(proc):
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines, "no error message"
    assert lines[-1].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


__all__ = ["run_pgolf", "run_pgolf_each", "exited", "one_line_error", "interruptible", "copy_of", "sweep_folder",
           "results", "QUICK", "TINY", "Path"]

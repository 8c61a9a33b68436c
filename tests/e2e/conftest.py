"""Shared fixtures for end-to-end tests: the CLI run as a user runs it, on the built-in corpus."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def run_pgolf(*args, cwd, check_code=None, env=None, timeout=600):
    """Run `python -m pgolf ARGS` in `cwd`; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PGOLF_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "pgolf", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    if check_code is not None:
        assert proc.returncode == check_code, f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    return proc


def interruptible():
    """Popen's preexec_fn for tests that press Ctrl-C: a shell's background job starts with SIGINT ignored, which
    Python then keeps, so the child gets the default disposition back (as in a terminal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def builtin_data(tmp_path_factory):
    """The built-in corpus prepared once per test session (tokenizer + shards)."""
    root = tmp_path_factory.mktemp("data")
    run_pgolf("data", "prepare", "--out", root / "builtin", cwd=root, check_code=0)
    return root / "builtin"


@pytest.fixture
def data_overrides(builtin_data):
    return [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]


QUICK = ["train.iterations=30", "train.val_every=15", "train.log_every=5", "data.val_tokens=16384",
         "train.val_tokens=8192"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, builtin_data):
    """One short training run through the CLI (--json), shared by the tests that inspect its outputs."""
    cwd = tmp_path_factory.mktemp("work")
    proc = run_pgolf("train", f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}",
                     *QUICK, "run.name=e2e", "--json", cwd=cwd, check_code=0)
    return cwd, json.loads(proc.stdout), proc


def one_line_error(proc):
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines, "no error message"
    assert lines[-1].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


__all__ = ["run_pgolf", "one_line_error", "interruptible", "QUICK", "Path"]

"""Atomic writes (pgolf/atomic.py): readers see the old file or the new one, never a part; nothing is left behind."""

import json
import os
import stat
import subprocess
import sys

import pytest

from pgolf import atomic


def test_writes_replace_the_file_whole(tmp_path):
    path = tmp_path / "deep" / "er" / "summary.json"
    atomic.atomic_write_json(path, {"a": 1, "b": [1, 2]})
    assert json.loads(path.read_text()) == {"a": 1, "b": [1, 2]} and path.read_text().endswith("\n")
    atomic.atomic_write_text(path, "é\n")
    assert path.read_bytes() == "é\n".encode()
    atomic.atomic_write_bytes(path, b"")
    assert path.read_bytes() == b""
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, where, error):
    path = tmp_path / "results.csv"
    path.write_bytes(b"old contents\n")
    if where == "write":
        class Payload(bytes):
            """Bytes whose write fails after the first half reached the temporary file."""

        data = Payload(b"new" * 1000)
        real_fdopen = os.fdopen

        def fdopen(fd, *args, **kwargs):
            fh = real_fdopen(fd, *args, **kwargs)
            real_write = fh.write

            class Half:
                def __getattr__(self, name):
                    return getattr(fh, name)

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    return fh.__exit__(*exc)

                def write(self, chunk):
                    real_write(chunk[: len(chunk) // 2])
                    fh.flush()
                    raise error

            return Half()

        monkeypatch.setattr(atomic.os, "fdopen", fdopen)
    else:
        data = b"new" * 1000

        def fail(*args, **kwargs):
            raise error

        monkeypatch.setattr(atomic.os, where, fail)
    with pytest.raises(type(error)):
        atomic.atomic_write_bytes(path, data)
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", fail)
    with pytest.raises(OSError):
        atomic.atomic_write_text(tmp_path / "state.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_permissions_follow_the_umask(tmp_path):
    current = os.umask(0)
    os.umask(current)
    path = tmp_path / "config.yaml"
    atomic.atomic_write_text(path, "x: 1\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current  # not mkstemp's 0600


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_permissions_follow_the_umask_of_the_process(tmp_path, umask, mode):
    """As a shell or a Slurm job sets it before pgolf starts."""
    path = tmp_path / "summary.json"
    code = (f"import os; os.umask({umask}); from pgolf.atomic import atomic_write_json; "
            f"atomic_write_json({str(path)!r}, 1)")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert stat.S_IMODE(path.stat().st_mode) == mode

"""The progress callback stages report through; the CLI renders it as a rich bar.

A stage calls `progress(task, done, total, **fields)`: `task` names the phase
("train", "tokenize", "export"...), `done`/`total` count its units (total may be
None when unknown) and `fields` are short figures to show (loss=3.21, tok_s=...).
Stages never import rich; tests pass `no_progress` or a recorder.
"""

from typing import Protocol


class ProgressFn(Protocol):
    def __call__(self, task: str, done: float, total: float | None, **fields: float | str) -> None: ...


def no_progress(task: str, done: float, total: float | None, **fields: float | str) -> None:
    """A progress callback that shows nothing."""

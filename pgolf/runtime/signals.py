"""Ctrl-C and SIGTERM as a request to stop, so what was trained is kept.

SIGTERM is what Slurm, `timeout`, container runtimes and torchrun send; it is
treated like Ctrl-C. Inside `StopSignals.deferred()` (the training loop) a
first signal only records the request: the loop finishes its step, agrees with
the other ranks, saves and returns. A second Ctrl-C, or any signal outside
the deferred block, raises KeyboardInterrupt at once. `reason` says which
signal came ("interrupted" for SIGINT, "terminated" for SIGTERM), so callers
exit 130 or 143.
"""

from __future__ import annotations

import contextlib
import signal
import threading

REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class StopSignals:
    """Install with `with StopSignals() as signals:`; a no-op off the main thread (signals only reach that one)."""

    def __init__(self) -> None:
        self.reason = ""
        self._deferring = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return bool(self.reason)

    def _handle(self, signum, frame) -> None:
        first = not self.reason
        if first or signum == signal.SIGTERM:
            self.reason = REASONS[signum]
        if not (self._deferring and first):
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in REASONS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. sweep workers leave Ctrl-C to the parent
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def deferred(self):
        """Within the block a first signal is recorded, not raised."""
        self._deferring = True
        try:
            yield self
        finally:
            self._deferring = False

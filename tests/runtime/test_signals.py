"""Ctrl-C and SIGTERM as a stop request (runtime/signals.py): real signals sent to this process, in its main thread.

Every test first installs recording handlers of its own (`previous`), so a StopSignals that failed to install
its handler turns a signal into a recorded call (a clean failure), never a dead test process, and restoring the
handlers on exit is checked against them.
"""

import os
import signal
import threading
import time

import pytest

from pgolf.runtime.signals import StopSignals


def send(signum: int) -> None:
    """Deliver `signum` to this process; its Python handler has run when this returns."""
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # the handler runs at the latest while this sleep is interrupted


def send_expecting_no_raise(signum: int) -> None:
    try:
        send(signum)
    except KeyboardInterrupt:
        pytest.fail(f"{signal.Signals(signum).name} raised KeyboardInterrupt where it should only be recorded")


@pytest.fixture
def previous():
    """Recording handlers for SIGINT and SIGTERM while the test runs (the originals restored after)."""
    received: list[int] = []

    def record(signum, frame):
        received.append(signum)

    originals = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield record, received
    finally:
        for signum, handler in originals.items():
            signal.signal(signum, handler)


def test_a_first_ctrl_c_in_the_loop_is_recorded_and_a_second_interrupts_at_once(previous):
    record, received = previous
    with StopSignals() as signals:
        assert not signals.requested and signals.reason == ""
        with signals.deferred():
            send_expecting_no_raise(signal.SIGINT)
            assert signals.requested and signals.reason == "interrupted"
            with pytest.raises(KeyboardInterrupt):
                send(signal.SIGINT)
        assert signals.reason == "interrupted"
    assert received == []  # StopSignals took both, not the handlers it replaced


def test_sigterm_in_the_loop_is_a_terminated_request(previous):
    _, received = previous
    with StopSignals() as signals, signals.deferred():
        send_expecting_no_raise(signal.SIGTERM)
        assert signals.requested and signals.reason == "terminated"
    assert received == []


def test_a_sigterm_after_a_ctrl_c_interrupts_and_says_terminated(previous):
    with StopSignals() as signals, signals.deferred():
        send_expecting_no_raise(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            send(signal.SIGTERM)
        assert signals.reason == "terminated"


@pytest.mark.parametrize("signum, reason", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")])
def test_outside_the_loop_a_signal_interrupts_at_once(previous, signum, reason):
    with StopSignals() as signals:
        with pytest.raises(KeyboardInterrupt):
            send(signum)
        assert signals.reason == reason
        with signals.deferred():
            pass
        signals.reason = ""  # a fresh request: after the deferred block ends, signals raise again
        with pytest.raises(KeyboardInterrupt):
            send(signum)


def test_the_handlers_are_restored_on_exit_even_after_an_interrupt(previous):
    record, received = previous
    with StopSignals():
        assert signal.getsignal(signal.SIGINT) is not record and signal.getsignal(signal.SIGTERM) is not record
    assert signal.getsignal(signal.SIGINT) is record and signal.getsignal(signal.SIGTERM) is record

    with pytest.raises(KeyboardInterrupt), StopSignals() as signals, signals.deferred():
        send(signal.SIGINT)
        send(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is record and signal.getsignal(signal.SIGTERM) is record
    send(signal.SIGINT)
    send(signal.SIGTERM)
    assert received == [signal.SIGINT, signal.SIGTERM]  # after exit, signals reach the old handlers again


def test_an_ignored_ctrl_c_stays_ignored(previous):
    """Sweep workers ignore SIGINT (the parent stops them): StopSignals must not take it back."""
    record, received = previous
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with StopSignals() as signals, signals.deferred():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        send_expecting_no_raise(signal.SIGINT)
        assert not signals.requested
        send_expecting_no_raise(signal.SIGTERM)
        assert signals.reason == "terminated"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is record


def test_off_the_main_thread_it_installs_nothing(previous):
    record, _ = previous
    errors: list[BaseException] = []

    def body():
        try:
            with StopSignals() as signals, signals.deferred():
                assert not signals.requested
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert errors == []
    assert signal.getsignal(signal.SIGINT) is record and signal.getsignal(signal.SIGTERM) is record

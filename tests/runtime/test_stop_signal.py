"""StopSignal: what `actorcast serve` and each worker wait on until SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from actors.stop_signal import StopSignal


@pytest.fixture
def stop():
    flag = StopSignal()
    yield flag
    flag.close()


def test_wait_times_out_unset(stop):
    started = time.monotonic()
    assert stop.wait(0.05) is False
    assert time.monotonic() - started >= 0.04
    assert not stop.is_set()


def test_set_from_another_thread_wakes_a_long_wait(stop):
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert stop.wait(10) is True
    assert time.monotonic() - started < 5


def test_a_signal_wakes_a_long_wait_at_once(stop):
    previous = signal.getsignal(signal.SIGUSR1)
    stop.install((signal.SIGUSR1,))
    try:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        assert stop.wait(10) is True
        assert time.monotonic() - started < 5
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_signals_landing_anywhere_in_a_polling_loop_never_wedge_it(stop):
    # The bug this replaced: Event.set() in a handler that interrupted Event.wait
    # while it held the event's own lock hung the process for good. Signals land
    # here at every point of a fast polling loop; each must end its wait.
    previous = signal.getsignal(signal.SIGUSR1)
    stop.install((signal.SIGUSR1,))
    try:
        for _ in range(200):
            stop._set = False  # re-arm (the loop below is what a second SIGTERM meets)
            threading.Timer(0.001, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            deadline = time.monotonic() + 5
            while not stop.wait(0.0002):
                assert time.monotonic() < deadline, "a signal was lost"
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_set_after_close_touches_no_descriptor():
    flag = StopSignal()
    flag.close()
    reused = os.open(os.devnull, os.O_WRONLY)  # may take the pipe's old number
    try:
        flag.set()  # must not write into whatever holds that number now
        assert flag.is_set() and flag.wait(0) is True
    finally:
        os.close(reused)

"""SIGTERM/SIGINT as a flag the main thread can wait on.

Why not ``threading.Event``: a Python signal handler runs in the main thread
between two bytecodes, and ``Event.wait`` holds the event's (non-reentrant)
lock for a few bytecodes on each wake-up. A handler calling ``Event.set``
then waits for a lock its own thread holds: the process never stops. With a
loop that wakes ten times a second, that was a SIGTERM ignored now and then.

The handler here only sets a boolean and writes one byte to a non-blocking
pipe; ``wait`` sleeps in ``select`` on that pipe, so a signal wakes it at once
and nothing is ever locked.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from gevent import monkey

__all__ = ["StopSignal"]

# The OS select even in a monkey-patched process (the CLI's is not, an embedder's may be).
_select = monkey.get_original("select", "select")


class StopSignal:
    """Set by SIGINT/SIGTERM (once ``install``\\ ed) or by ``set``; ``wait`` until it is."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._set = False

    def install(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> StopSignal:
        """Handle ``signals`` by setting this flag (main thread only, as ``signal.signal``)."""
        for sig in signals:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.set()

    def set(self) -> None:
        """Set the flag and wake a ``wait``; safe from a signal handler or any thread."""
        self._set = True
        if self._write < 0:  # closed: the number may be another file's now
            return
        try:
            os.write(self._write, b"!")
        except OSError:  # the pipe is full: a wait is woken already
            pass

    def is_set(self) -> bool:
        """True once a signal came (or ``set`` was called)."""
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until the flag is set or ``timeout`` seconds pass; the flag."""
        if not self._set and self._read >= 0:
            _select([self._read], [], [], timeout)
        return self._set

    def close(self) -> None:
        """Close the pipe (the handlers stay: a late signal only sets the flag)."""
        fds, self._read, self._write = (self._read, self._write), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

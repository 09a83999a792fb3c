"""The OS thread whose gevent hub runs a node (see :class:`HubThread`).

Everything a node runs lives on one hub; embedding code is plain threaded
Python, so the hub gets a thread of its own and other threads reach it only
through :meth:`HubThread.call` / :meth:`HubThread.post`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import gevent.event
import pykka
from gevent import monkey

__all__ = ["HubThread"]

_T = TypeVar("_T")


class HubThread:
    """The OS thread whose gevent hub runs a node's actors and sockets.

    Embedding code is usually plain threaded Python, so the node gets a hub
    of its own in a background thread, and :meth:`call` carries work into it
    from any thread (``loop.run_callback_threadsafe`` is gevent's one
    thread-safe door into a hub). When the process is monkey-patched, a
    "thread" is a greenlet, so the node simply shares the caller's hub.
    """

    def __init__(self, name: str = "actorcast-node") -> None:
        self.name = name
        self.hub: Any = None  # the gevent Hub once started (gevent is untyped: Any, not an Optional to assert on)
        self.ident: int | None = None
        self._stop_event: gevent.event.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self, setup: Callable[[], _T]) -> _T:
        """Start the hub and run ``setup()`` in a greenlet on it; return its result."""
        if monkey.is_module_patched("threading"):
            self._adopt_current_hub()
            return self.call(setup)
        started = _OsEvent()
        box: list[tuple[bool, Any]] = []  # (True, setup's result) or (False, what it raised)

        def main() -> None:
            self._adopt_current_hub()
            self._stop_event = gevent.event.Event()
            try:
                box.append((True, setup()))
            except BaseException as exc:  # handed to the starting thread, raised there
                box.append((False, exc))
            started.set()
            if box[0][0]:
                # A timed wait keeps a timer on the loop, so an idle hub keeps
                # serving calls from other threads instead of running dry.
                while not self._stop_event.wait(1.0):
                    pass
            # The loop's descriptors (epoll, eventfd) go with the thread: a process that starts
            # and stops many nodes (an embedder, the test suite) would run out of them.
            self.hub.destroy(destroy_loop=True)

        self._thread = _OsThread(target=main, name=self.name, daemon=True)
        self._thread.start()
        started.wait()
        ok, value = box[0]
        if not ok:
            self._thread.join()
            raise value
        return value

    @staticmethod
    def os_event() -> threading.Event:
        """A real ``threading.Event``, even in a monkey-patched process."""
        return _OsEvent()

    def _adopt_current_hub(self) -> None:
        self.hub = gevent.get_hub()
        self.ident = _os_get_ident()

    def in_hub(self) -> bool:
        """True when the caller already runs on this hub's OS thread."""
        return _os_get_ident() == self.ident

    def call(self, func: Callable[..., _T], *args: object, timeout: float | None = None) -> _T:
        """Run ``func(*args)`` in a greenlet on the hub; wait for and return its result."""
        if self.in_hub():
            return func(*args)
        done = _OsEvent()
        box: list[tuple[bool, Any]] = []  # as in start

        def run() -> None:
            try:
                box.append((True, func(*args)))
            except BaseException as exc:  # re-raised in the calling thread
                box.append((False, exc))
            finally:
                done.set()

        self.hub.loop.run_callback_threadsafe(gevent.spawn, run)
        if not done.wait(timeout):
            raise pykka.Timeout(f"{func!r} did not finish in {timeout} seconds")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def post(self, func: Callable[..., object], *args: object) -> None:
        """Run ``func(*args)`` on the hub soon, without waiting (it must not block)."""
        if self.in_hub():
            func(*args)
        elif (loop := self.hub.loop) is not None:  # None once stopped: nothing runs there any more
            loop.run_callback_threadsafe(func, *args)

    def stop(self, timeout: float = 10.0) -> None:
        """Let the hub thread end (after the node closed everything on it)."""
        if self._thread is None:
            return
        event = self._stop_event
        assert event is not None  # set before the thread was started
        self.post(event.set)
        if not self.in_hub():
            self._thread.join(timeout)
        self._thread = None


_OsThread = monkey.get_original("threading", "Thread")
_OsEvent = monkey.get_original("threading", "Event")
_os_get_ident = monkey.get_original("_thread", "get_ident")

"""What the gevent glue uses of the hub's libev loop, as Protocols (gevent ships no types).

The glue (``server``, ``first_request``, ``tls``, ``websocket``) watches
sockets and time with libev watchers, not greenlets: ``loop.io(fd, events)``
and ``loop.timer(seconds)`` make one, ``start(callback)`` arms it and the
loop calls ``callback()`` from the hub, which must not block. Nothing here
runs: these only tell a type checker which methods the glue relies on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Loop", "Watcher"]


class Watcher(Protocol):
    """A libev io or timer watcher (``gevent.get_hub().loop.io(...)`` / ``.timer(...)``)."""

    def start(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from the loop when the socket is ready (or the time has come)."""

    def stop(self) -> None:
        """Stop calling back; ``start`` may arm it again."""

    def close(self) -> None:
        """Stop for good and free it."""


class Loop(Protocol):
    """The hub's event loop (``gevent.get_hub().loop``)."""

    def now(self) -> float:
        """The loop's clock, in seconds: it moves once per iteration of the loop."""

    def io(self, fd: int, events: int) -> Watcher:
        """A watcher of ``fd`` for ``events`` (1: readable, 2: writable)."""

    def timer(self, after: float) -> Watcher:
        """A watcher that fires once, ``after`` seconds from now."""

"""Operational log lines about clients, rate-limited per client address.

A node logs one INFO or WARNING line for each refusal an operator may need
to see (a connection refused, a subscription or sign-in refused, an HTTP API
4xx), with the client's address and the reason as structured fields
(``extra=``), so a JSON log format carries them. A client that floods the
port must not fill the disk: :class:`RateLimiter` lets at most ``limit``
lines per address through in each ``window`` seconds and counts the rest,
and :class:`OpsLog` writes one line per address saying how many it held
back once that window is over.

Pure code (no gevent, no pykka) and lock-free: one owner uses each object,
the node's hub, where the WebSocket glue, the HTTP routes and the connection
actors all run. The clock and the timer are passed in.

::

    >>> limiter = RateLimiter(limit=2, window=10.0)
    >>> [limiter.hit("10.0.0.1", now).allowed for now in (0.0, 1.0, 2.0, 3.0)]
    [True, True, False, False]
    >>> limiter.hit("10.0.0.1", 10.5)
    Verdict(allowed=True, ended=(('10.0.0.1', 2),))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import socket

__all__ = ["OTHER_CLIENTS", "UNKNOWN", "OpsLog", "RateLimiter", "Verdict", "peer_address"]

#: The key that counts for every address once the limiter tracks ``max_keys``
#: of them (a flood from many addresses is then limited as one).
OTHER_CLIENTS = "other clients"
#: The address of a client whose socket is gone before its line was written.
UNKNOWN = "unknown"

_MAX_FIELD = 200  # characters of a client-supplied value (a channel name, a path) kept in a field
_MAX_MESSAGE = 500  # characters of a line's message
# A line stays one line in a text log: control characters (a signed string's
# newlines, say) are written escaped.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


class Verdict(NamedTuple):
    """What :meth:`RateLimiter.hit` decided."""

    allowed: bool  # log this line
    ended: tuple[tuple[str, int], ...]  # windows that just ended with lines held back: (key, how many)


class RateLimiter:
    """At most ``limit`` hits per key in each ``window`` seconds; the others are counted.

    Each key's window starts at its first hit. Windows live in a dict in the
    order they started (a renewed window moves to the end), so the ones that
    are over are always at the front and are found without a scan. At most
    ``max_keys`` windows are kept; beyond them every new key shares the
    window of :data:`OTHER_CLIENTS`, so memory stays bounded whatever the
    number of addresses.
    """

    __slots__ = ("_windows", "limit", "max_keys", "window")

    def __init__(self, limit: int = 5, window: float = 10.0, max_keys: int = 4096) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._windows: dict[str, list[float]] = {}  # key -> [start, hits let through, hits held back]

    def hit(self, key: str, now: float) -> Verdict:
        """Count one hit of ``key`` at ``now`` (monotonic seconds)."""
        ended = self.sweep(now)
        windows = self._windows
        entry = windows.get(key)
        if entry is None and len(windows) >= self.max_keys:
            key = OTHER_CLIENTS
            entry = windows.get(key)
        if entry is None:
            windows[key] = [now, 1, 0]
            return Verdict(True, ended)
        if entry[1] < self.limit:
            entry[1] += 1
            return Verdict(True, ended)
        entry[2] += 1
        return Verdict(False, ended)

    def sweep(self, now: float) -> tuple[tuple[str, int], ...]:
        """Forget the windows that are over; return those that held lines back, with how many."""
        windows = self._windows
        ended = []
        while windows:
            key = next(iter(windows))
            start, _, held = windows[key]
            if now - start < self.window:
                break
            del windows[key]
            if held:
                ended.append((key, int(held)))
        return tuple(ended)

    @property
    def holding(self) -> bool:
        """True while some open window has held lines back (a sweep will have something to say)."""
        return any(entry[2] for entry in self._windows.values())

    def __len__(self) -> int:
        return len(self._windows)


class OpsLog:
    """Writes refusal lines through a :class:`RateLimiter` keyed by client address.

    ``schedule(seconds, func)`` runs ``func`` later on the owner's loop (the
    node passes ``actors.runtime.call_later``): it writes the "held back"
    line of a window that ended with no further hit from that address.
    Without it those lines wait for the next hit of anyone.
    """

    def __init__(
        self,
        limiter: RateLimiter | None = None,
        *,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        schedule: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self.limiter = limiter if limiter is not None else RateLimiter()  # (an empty one is falsy)
        self.log = logger or logging.getLogger(__name__)
        self.clock = clock
        self.schedule = schedule
        self._sweep_due = False

    def note(self, logger: logging.Logger, level: int, remote: str, message: str, **fields: object) -> bool:
        """Log ``message`` on ``logger`` unless ``remote`` is over its budget; True if it was written.

        ``message`` should name ``remote``: a text log shows no fields.

        ``fields`` go to the record as ``extra`` (with ``remote``); strings
        from the client are cut to a bounded length, and so is ``message``,
        which is written as is (no ``%`` formatting) on one line (control
        characters escaped).
        """
        verdict = self.limiter.hit(remote, self.clock())
        self._held_back(verdict.ended)
        if not verdict.allowed:
            self._sweep_later()
            return False
        extra = {name: _bounded(value) for name, value in fields.items()}
        extra["remote"] = remote
        logger.log(level, "%s", _bounded(message, _MAX_MESSAGE).translate(_ESCAPES), extra=extra)
        return True

    def sweep(self) -> None:
        """Write the "held back" lines of windows that are over (the timer's callback)."""
        self._sweep_due = False
        self._held_back(self.limiter.sweep(self.clock()))
        if self.limiter.holding:
            self._sweep_later()

    def _sweep_later(self) -> None:
        if self.schedule is not None and not self._sweep_due:
            self._sweep_due = True
            self.schedule(self.limiter.window, self.sweep)

    def _held_back(self, ended: tuple[tuple[str, int], ...]) -> None:
        limiter = self.limiter
        for remote, count in ended:
            self.log.warning(
                "%d more line(s) about %s held back in the last %g s (at most %d per client address)",
                count, remote, limiter.window, limiter.limit,
                extra={"remote": remote, "kind": "log_suppressed", "suppressed": count},
            )


def peer_address(sock: socket.socket) -> str:
    """The IP address at the other end of ``sock`` (for log lines), ``"unknown"`` once it is gone."""
    try:
        peer = sock.getpeername()
    except OSError:  # reset meanwhile
        return UNKNOWN
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer) or UNKNOWN  # a Unix socket: its path, when it has one


def _bounded(value: Any, limit: int = _MAX_FIELD) -> Any:  # a field's value, a str cut short
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "..."
    return value

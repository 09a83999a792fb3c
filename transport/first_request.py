"""A connection's first request head, read from libev callbacks (no greenlet).

Most connections to a node are WebSocket clients: one request head, a ``101``
answer, and from then on frames (``transport.websocket``, also greenlet-free).
Giving each of them a greenlet just to read that head costs a spawn, a stack
and a switch per connect, and during a connect storm thousands of half-read
heads hold thousands of stacks. So an accepted socket first gets a read
watcher and a timer: the watcher gathers bytes until the head is complete,
then :meth:`HttpServer.first_head <transport.server.HttpServer.first_head>`
answers an upgrade in place or hands an HTTP request to a greenlet. The timer
bounds the wait (``header_timeout``): a silent client is closed, a slow one
gets 408.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING

import gevent

from .errors import HttpError
from .http import find_head_end
from .watchers import Loop, Watcher

if TYPE_CHECKING:
    from .server import HttpServer

__all__ = ["FirstRequest"]

log = logging.getLogger(__name__)

FIRST_READ = 4096  # a WebSocket upgrade head is ~250 bytes; more just comes in further reads
_EV_READ = 1


class FirstRequest:
    """Watches one accepted socket until its first request head is complete."""

    __slots__ = ("buf", "deadline", "io", "server", "sock", "timer")

    def __init__(self, server: HttpServer, sock: socket.socket, deadline: float | None = None) -> None:
        self.server = server
        self.sock = sock
        self.buf = bytearray()
        loop: Loop = gevent.get_hub().loop
        if deadline is None:  # from accept; a TLS socket brings the one its handshake started
            timeout = server.limits.header_timeout
            self.deadline = time.monotonic() + timeout  # the greenlet path keeps time.monotonic too
        else:
            self.deadline = deadline
            timeout = max(deadline - time.monotonic(), 0.0)
        self.io: Watcher = loop.io(sock.fileno(), _EV_READ)
        self.io.start(self._readable)
        self.timer: Watcher = loop.timer(timeout)
        self.timer.start(self._expired)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(FIRST_READ)
        except BlockingIOError:
            return
        except OSError as exc:
            log.debug("client left before its first request: %r", exc)
            self._end(None)
            return
        if not data:
            self._end(None)  # closed before (or in the middle of) its first request
            return
        buf = self.buf
        scanned = len(buf)
        buf += data
        end = find_head_end(buf, scanned)
        if end >= 0:
            self._stop_watching()
            self.server.first_head(self.sock, buf, end, self.deadline)
        elif len(buf) > self.server.limits.max_head_bytes:
            self._end(HttpError(431, f"Request head over {self.server.limits.max_head_bytes} bytes"))

    def _expired(self) -> None:
        # Silence: close quietly. Half a head (slowloris): say so with a 408.
        self._end(HttpError(408, "Request head not received in time") if self.buf else None)

    def drop(self) -> None:
        """Close the socket now (the server is stopping)."""
        self._stop_watching()
        self.sock.close()

    def _end(self, error: HttpError | None) -> None:
        self._stop_watching()
        self.server.first_request_failed(self.sock, error)

    def _stop_watching(self) -> None:
        self.io.close()
        self.timer.close()
        self.server.forget(self)

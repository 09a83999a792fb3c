"""The bus of ``actorcast serve --workers N``: workers joined through their parent.

::

    worker 1 --\\                       /--> worker 1
    worker 2 ---+-- Unix socket: Relay -+--> worker 2   (every frame to every
    worker 3 --/   (in the parent)      \\--> worker 3    worker, sender too)

The parent runs one :class:`Relay` on a Unix domain socket; each worker's node
gets a :class:`WorkerBus` connected to it. On the socket a message is a frame:
a 4-byte big-endian length, then that many bytes (after a greeting the relay
writes first: a bus is ``connected`` only once the relay counts it in, so
nothing published after that misses it). The relay never looks inside
a frame: it forwards every complete frame a worker writes, in the order it
read them, to every connected worker, the sender included (as Redis pub/sub
does), so a node hears its own messages as the bus contract requires
(``actors.bus``).

Everything here runs on a gevent hub (the worker node's, or the parent's) on
gevent's cooperative sockets, so it never blocks the hub, whether or not the
process is monkey-patched. A slow worker gets a bounded backlog in the relay;
past it the relay drops that worker's connection (the worker reconnects: at
most once delivery, as with Pusher), rather than letting it grow the parent
without limit.
"""

from __future__ import annotations

import logging
import socket as _socket
import sys
import time
from collections.abc import Callable

import gevent
import gevent.event
from gevent import socket as gsocket

from .bus import BusDown
from .runtime import describe_failure
from .worker_relay import (  # the frame format both sides speak
    _HEADER,
    GREETING,
    GREETING_TIMEOUT,
    MAX_FRAME,
    RECV_SIZE,
    RETRY_MAX_SECONDS,
    RETRY_MIN_SECONDS,
    Relay,
    _BadFrame,
    _complete_frames,
)

__all__ = ["GREETING", "MAX_FRAME", "Relay", "WorkerBus"]

log = logging.getLogger(__name__)

class _Link:
    """One connection to the relay: the socket, and the frames waiting to be written."""

    def __init__(self, sock: _socket.socket) -> None:  # a gevent socket (the stdlib API)
        self.sock = sock
        self.parts: list[bytes] = []
        self.results: list[gevent.event.AsyncResult] = []
        self.wake = gevent.event.Event()
        self.up = True
        self.writer = gevent.spawn(self._write)

    def queue(self, data: bytes, result: gevent.event.AsyncResult) -> None:
        self.parts += (_HEADER.pack(len(data)), data)
        self.results.append(result)
        self.wake.set()

    def _write(self) -> None:
        while self.up:
            if not self.results:
                self.wake.clear()
                self.wake.wait()
                continue
            parts, results = self.parts, self.results
            self.parts, self.results = [], []
            try:
                self.sock.sendall(b"".join(parts))
            except OSError as exc:
                _fail(results, BusDown(f"workers' bus: write failed: {exc}"))
                self.close(f"write failed: {exc}")
                return
            for result in results:
                result.set(True)

    def close(self, why: str) -> None:
        """Fail what was not written yet, close the socket (the reader then sees the end)."""
        if not self.up:
            return
        self.up = False
        results, self.results, self.parts = self.results, [], []
        _fail(results, BusDown(f"workers' bus: {why}"))
        self.wake.set()
        if self.writer is not gevent.getcurrent():
            self.writer.kill(block=False)
        self.sock.close()


def _fail(results: list[gevent.event.AsyncResult], exc: BusDown) -> None:
    for result in results:
        result.set_exception(exc)


class WorkerBus:
    """A worker node's bus: a Unix socket to the parent's :class:`Relay`.

    It implements the contract of ``actors.bus.Bus``. While the parent is
    unreachable (restarting, say) ``publish`` fails with ``BusDown``; the bus
    logs the loss once, reconnects with back-off, and logs once more when it
    is back.
    """

    description = "workers"

    def __init__(self, path: str, retry_min: float = RETRY_MIN_SECONDS, retry_max: float = RETRY_MAX_SECONDS) -> None:
        self.path = path
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.connected = False
        self._deliver: Callable[[bytes], None] | None = None
        self._link: _Link | None = None
        self._runner: gevent.Greenlet | None = None
        self._stopped = False
        self._outage: str | None = None  # why the bus is down, once that was logged

    def start(self, deliver: Callable[[bytes], None], call_in_hub: Callable[..., None]) -> None:
        """Connect in the background; ``deliver`` is called on this hub (the reader runs here)."""
        self._deliver = deliver
        self._runner = gevent.spawn(self._run)

    def publish(self, data: bytes) -> gevent.event.AsyncResult:
        """Queue ``data`` for the parent; the result is set once the socket took it."""
        result = gevent.event.AsyncResult()
        link = self._link
        if link is None or not link.up:
            result.set_exception(BusDown("workers' bus: not connected to the parent"))
        else:
            link.queue(data, result)
        return result

    def stop(self) -> None:
        """Disconnect and stop reconnecting (pending publishes fail with BusDown)."""
        self._stopped = True
        self.connected = False
        if self._runner is not None and self._runner is not gevent.getcurrent():
            self._runner.kill(block=False)
        if self._link is not None:
            self._link.close("stopped")
            self._link = None

    def reconnect(self) -> None:
        """Drop the connection (half-open, say) and connect anew."""
        if self._link is not None:
            self._link.close("reconnect asked")

    def _run(self) -> None:
        delay = self.retry_min
        while not self._stopped:
            try:
                sock, early = self._connect()
            except OSError as exc:
                self._down(f"cannot reach the parent at {self.path}: {exc}")
                log.debug("workers' bus: connecting failed (%s); next try in %.2f s", exc, delay)
                gevent.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            self._link = link = _Link(sock)
            self.connected = True
            if self._outage is not None:
                log.info("workers' bus: connected to the parent again")
                self._outage = None
            since = time.monotonic()
            why = self._read(link, early)
            self.connected = False
            link.close(why)
            self._down(why)
            if time.monotonic() - since < 1.0:  # a parent that hangs up at once: back off, do not spin
                gevent.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            else:
                delay = self.retry_min

    def _connect(self) -> tuple[_socket.socket, bytearray]:
        """Connect and read the relay's greeting; return the socket and what came after it.

        The relay greets once it counts the connection in, so every message
        published after ``connected`` turns True reaches this bus.
        """
        sock = gsocket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(GREETING_TIMEOUT)
            sock.connect(self.path)
            buf = bytearray()
            while len(buf) < len(GREETING):
                chunk = sock.recv(RECV_SIZE)
                if not chunk:
                    raise ConnectionError("the parent hung up before its greeting")
                buf += chunk
            if buf[: len(GREETING)] != GREETING:
                raise ConnectionError("no actorcast relay greeting")
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        return sock, buf[len(GREETING) :]

    def _read(self, link: _Link, buf: bytearray) -> str:
        """Deliver every frame the relay sends until the link ends; return why it ended."""
        try:
            while True:
                spans = _complete_frames(buf)
                for start, end in spans:
                    self._hand_over(bytes(buf[start:end]))
                if spans:
                    del buf[: spans[-1][1]]
                chunk = link.sock.recv(RECV_SIZE)
                if not chunk:
                    return "the parent closed the connection"
                buf += chunk
        except _BadFrame as exc:
            return f"broken frame from the parent: {exc}"
        except OSError as exc:
            return f"connection lost: {exc}"

    def _hand_over(self, data: bytes) -> None:
        try:
            self._deliver(data)  # type: ignore[misc]
        except Exception:  # the node's bug: say so on one line, keep the bus reading
            log.debug("deliver raised", exc_info=True)
            log.error("workers' bus: the node failed to take a message: %s", describe_failure(*sys.exc_info()))

    def _down(self, why: str) -> None:
        if self._stopped or self._outage is not None:
            return
        self._outage = why
        log.warning("workers' bus: %s; reconnecting (messages published meanwhile are lost)", why)

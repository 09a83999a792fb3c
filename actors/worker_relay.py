"""The parent's side of the workers' bus: the relay (see ``actors.worker_bus``).

One :class:`Relay` in the parent of ``actorcast serve --workers N`` listens
on a Unix domain socket and forwards every complete frame a worker writes to
every connected worker, the sender included. It never looks inside a frame.
"""

from __future__ import annotations

import logging
import os
import socket as _socket
import struct
from collections import deque

import gevent
import gevent.event
from gevent import socket as gsocket

__all__ = ["GREETING", "MAX_FRAME", "Relay"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
#: The largest message either side accepts; a bigger length is a broken peer.
MAX_FRAME = 64 << 20
RECV_SIZE = 256 << 10
RELAY_BACKLOG_BYTES = 64 << 20  # what the relay queues for one worker before dropping it
#: What the relay writes first on each connection, before any frame.
GREETING = b"actorcast-bus/1\n"
GREETING_TIMEOUT = 5.0
RETRY_MIN_SECONDS = 0.05
RETRY_MAX_SECONDS = 2.0


class _BadFrame(ValueError):
    """A frame header announced more than MAX_FRAME bytes."""


def _complete_frames(buf: bytearray) -> list[tuple[int, int]]:
    """(start, end) of each complete frame's payload in ``buf``, oldest first."""
    spans = []
    pos, size = 0, len(buf)
    while pos + 4 <= size:
        (length,) = _HEADER.unpack_from(buf, pos)
        if length > MAX_FRAME:
            raise _BadFrame(f"frame of {length} bytes announced (limit {MAX_FRAME})")
        if pos + 4 + length > size:
            break
        spans.append((pos + 4, pos + 4 + length))
        pos += 4 + length
    return spans


# --- the parent's end ---------------------------------------------------------------


class _Peer:
    """One connected worker, as the relay sees it: a socket and what to write to it."""

    def __init__(self, relay: Relay, sock: _socket.socket) -> None:  # a gevent socket (the stdlib API)
        self.relay = relay
        self.sock = sock
        self.out: deque[bytes] = deque()
        self.queued = 0
        self.wake = gevent.event.Event()
        self.closed = False
        self.reader = gevent.spawn(self._read)
        self.writer = gevent.spawn(self._write)

    def send(self, data: bytes) -> None:
        """Queue ``data`` (whole frames) for this worker; drop the worker if it lags too far."""
        if self.closed:
            return
        self.out.append(data)
        self.queued += len(data)
        if self.queued > self.relay.backlog_bytes:
            log.warning("a worker fell %d bytes behind on the bus; its connection is dropped, it will reconnect",
                        self.queued)
            self.close()
            return
        self.wake.set()

    def _read(self) -> None:
        buf = bytearray()
        try:
            while True:
                chunk = self.sock.recv(RECV_SIZE)
                if not chunk:
                    return
                buf += chunk
                spans = _complete_frames(buf)
                if spans:
                    # Forward every complete frame at once, headers included: one
                    # write per worker per read, whatever the number of messages.
                    end = spans[-1][1]
                    data = bytes(buf[:end])
                    del buf[:end]
                    self.relay.fan_out(data)
        except _BadFrame as exc:
            log.warning("a worker sent a broken frame on the bus (%s); its connection is dropped", exc)
        except OSError as exc:
            log.debug("a worker's bus connection failed: %s", exc)
        finally:
            self.close()

    def _write(self) -> None:
        try:
            while not self.closed:
                if not self.out:
                    self.wake.clear()
                    self.wake.wait()
                    continue
                chunks, self.out = self.out, deque()
                data = b"".join(chunks)
                self.queued -= len(data)
                self.sock.sendall(data)
        except OSError as exc:
            log.debug("writing to a worker's bus connection failed: %s", exc)
            self.close()

    def close(self) -> None:
        """Forget this worker and close its socket (its greenlets end)."""
        if self.closed:
            return
        self.closed = True
        self.relay.peers.discard(self)
        self.out.clear()
        self.wake.set()
        current = gevent.getcurrent()
        for greenlet in (self.reader, self.writer):
            if greenlet is not current:
                greenlet.kill(block=False)
        self.sock.close()


class Relay:
    """The parent's hub of the workers' bus: every frame in goes out to every worker.

    ``start()`` and ``stop()`` run on a gevent hub (the parent's), which the
    relay then shares with whatever else runs there.
    """

    def __init__(self, path: str, backlog_bytes: int = RELAY_BACKLOG_BYTES) -> None:
        self.path = path
        self.backlog_bytes = backlog_bytes
        self.peers: set[_Peer] = set()
        self._listener: _socket.socket | None = None  # gevent's
        self._acceptor: gevent.Greenlet | None = None

    def start(self) -> None:
        """Listen on ``path`` (a stale socket file left by a dead parent is replaced)."""
        if os.path.exists(self.path):
            os.unlink(self.path)
        listener = gsocket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._acceptor = gevent.spawn(self._accept)

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                sock, _ = self._listener.accept()
            except OSError as exc:
                if self._listener is not None:
                    log.warning("the workers' bus stopped accepting: %s", exc)
                return
            peer = _Peer(self, sock)
            peer.send(GREETING)  # first in its queue, and it is counted in from now on
            self.peers.add(peer)

    def fan_out(self, data: bytes) -> None:
        """Queue whole frames for every connected worker."""
        for peer in list(self.peers):
            peer.send(data)

    def stop(self) -> None:
        """Stop listening, disconnect every worker, remove the socket file."""
        listener, self._listener = self._listener, None
        if self._acceptor is not None:
            self._acceptor.kill(block=False)
        if listener is not None:
            listener.close()
        for peer in list(self.peers):
            peer.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


# --- a worker's end -----------------------------------------------------------------

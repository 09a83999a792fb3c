"""Socket reads and writes with deadlines, for the connection greenlets of ``transport.server``.

Each call waits (cooperatively, on the socket's descriptor) at most until
its deadline: a read until the caller's deadline, a write for
``send_timeout``, a refusal's lingering close for ``LINGER_SECONDS``. The
sockets are non-blocking: plain ones, or ``transport.tls.TlsSocket``, which
behaves the same.
"""

from __future__ import annotations

import logging
import socket
import time

import ujson
from gevent.socket import wait_read, wait_write

from .errors import HttpError
from .http import response

__all__ = ["LINGER_MAX_BYTES", "LINGER_SECONDS", "RECV_SIZE", "Closed", "error_answer", "recv_some", "refuse",
           "send_all"]

log = logging.getLogger("transport.server")  # one logger for what the server's connections do

RECV_SIZE = 65536
LINGER_SECONDS = 2.0  # after an error answer: how long to drain what the client still sends
LINGER_MAX_BYTES = 1 << 20


class Closed(Exception):
    """The peer closed its side before a request was complete."""


def recv_some(sock: socket.socket, buf: bytearray, deadline: float, *, idle: bool = False) -> bool:
    """Append what the socket has to ``buf`` (waiting until ``deadline``); False on EOF.

    Past the deadline: TimeoutError, or False when ``idle`` (nothing was owed:
    close quietly). EOF in the middle of something (``buf`` not empty, not
    ``idle``) raises :class:`Closed`.
    """
    while True:
        try:
            data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError from None
            try:
                wait_read(sock.fileno(), timeout=remaining)
            except TimeoutError:
                if idle:
                    return False  # an idle kept-alive connection: close quietly
                raise
            continue
        if not data:
            if buf and not idle:
                raise Closed
            return False
        buf += data
        return True


def send_all(sock: socket.socket, data: bytes, timeout: float) -> None:
    """Write all of ``data`` within ``timeout`` seconds (raises OSError/TimeoutError)."""
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError from None
            wait_write(sock.fileno(), timeout=remaining)


def refuse(sock: socket.socket, exc: HttpError, send_timeout: float) -> None:
    """Answer an error and end the connection without losing the answer.

    Closing a socket with unread input makes the kernel send a reset,
    which can destroy the answer before the client reads it (a 431 for a
    100 KB header, say). So: send, shut our side, then read and discard
    what the client still sends, for a bounded time (a "lingering close").
    """
    try:
        send_all(sock, error_answer(exc), send_timeout)
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        chunk, discarded = bytearray(), 0
        while discarded < LINGER_MAX_BYTES and recv_some(sock, chunk, deadline, idle=True):
            discarded += len(chunk)
            del chunk[:]
    except (OSError, TimeoutError):
        log.debug("client left before reading the %d answer", exc.status)


def error_answer(exc: HttpError) -> bytes:
    """The whole response for ``exc``: its status, a JSON body, ``Connection: close``."""
    # Errors end the connection: after a malformed request we cannot tell
    # where the next one would start.
    body = ujson.dumps({"error": exc.message}, ensure_ascii=False, escape_forward_slashes=False).encode("utf-8")
    return response(exc.status, body, "application/json", keep_alive=False, headers=exc.headers)

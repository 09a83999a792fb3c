"""The node's listening socket: accept, read HTTP with deadlines, answer or upgrade.

Data flow: a libev watcher on the listening socket accepts connections
(``TCP_NODELAY`` on each) and spawns one greenlet per connection, which reads
request heads and bodies under the deadlines of
:class:`~transport.config.ServerLimits`, hands each request to a
:class:`Router` and writes its answer in one ``send``. A WebSocket upgrade
ends the greenlet: the router takes the socket over (``transport.websocket``).
The protocol rules live in ``transport.http``; this module moves bytes and
keeps the clock. With a TLS context each accepted socket first goes through
its handshake (``transport.tls``), under the same head deadline.

What a client does wrong is never a traceback here: a reset or a timeout
closes its socket with one DEBUG line; a malformed request gets its 4xx and,
given an :class:`~transport.ops_log.OpsLog`, one INFO line (rate-limited per
client address). While the node drains, every request is answered 503 with
``Connection: close``, except the ``always_open`` paths (health probes). Only
a router that raises (our bug) logs an ERROR and answers 500. Running out of
file descriptors pauses accepting (one WARNING a second at most) and resumes
as soon as one is free.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

import gevent

from .bounded_io import Closed, recv_some, refuse, send_all
from .config import ServerLimits
from .errors import HttpError
from .first_request import FirstRequest
from .http import Request, find_head_end, parse_head, response, websocket_accept
from .ops_log import OpsLog, peer_address
from .tls import TlsHandshake
from .watchers import Watcher

__all__ = ["HttpServer", "Reply", "Router"]

log = logging.getLogger(__name__)

ACCEPT_BATCH = 64  # connections accepted per wake-up before other work gets a turn
ACCEPT_RETRY_SECONDS = 0.05  # out of descriptors: how soon to try again
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Reply(NamedTuple):
    """What a router answers to one HTTP request."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class Router(Protocol):
    """What the server needs from the application behind the port."""

    def handle(self, request: Request, body: bytes, remote: str = "unknown") -> Reply:
        """Answer one HTTP request from ``remote`` (runs in the connection's greenlet; may wait, bounded)."""

    def upgrade(self, request: Request, sock: socket.socket, early: bytes) -> None:
        """Take over a socket that was just answered ``101`` (``early``: bytes already read)."""


class HttpServer:
    """An HTTP/1.1 + WebSocket server on gevent with every wait bounded."""

    def __init__(
        self,
        address: tuple[str, int],
        router: Router,
        limits: ServerLimits | None = None,
        *,
        backlog: int = 2048,
        reuse_port: bool = False,
        always_open: frozenset[str] = frozenset(),
        ops: OpsLog | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self.router = router
        self.limits = limits or ServerLimits()
        self.backlog = backlog
        self.reuse_port = reuse_port
        #: The TLS context (``transport.tls.tls_context``), or None for plain HTTP.
        self.tls = tls
        # What watches an accepted socket first: chosen once, so plain sockets pay nothing for TLS.
        self._adopt: Callable[[HttpServer, socket.socket], FirstRequest | TlsHandshake]
        self._adopt = FirstRequest if tls is None else TlsHandshake
        self.server_port = address[1]
        #: True while the node drains: every request is answered 503 + Connection: close,
        #: except plain (non-upgrade) requests for these paths (health probes).
        self.draining = False
        self.always_open = always_open
        self.ops = ops
        #: Requests between their head and their answer (shutdown waits for these).
        self.busy = 0
        self._sock: socket.socket | None = None
        self._watcher: Watcher | None = None
        self._retry: Watcher | None = None
        self._conns: set[gevent.Greenlet] = set()
        self._waiting: set[FirstRequest | TlsHandshake] = set()  # accepted, first request head not complete yet
        self._accept_pauses = 0
        self._last_fd_warning = 0.0

    # --- listening -----------------------------------------------------------------

    def start(self) -> None:
        """Bind, listen and start accepting (raises OSError, e.g. port in use)."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(self.address)
            sock.listen(self.backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.server_port = sock.getsockname()[1]
        self._watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
        self._watcher.start(self._on_acceptable)

    def close(self) -> None:
        """Stop accepting and close the listening socket (open connections go on)."""
        for watcher in (self._watcher, self._retry):
            if watcher is not None:
                watcher.close()
        self._watcher = self._retry = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stop(self, timeout: float = 1.0) -> None:
        """Close the listener and every HTTP connection not taken over by the router."""
        self.close()
        for waiting in list(self._waiting):
            waiting.drop()
        conns, self._conns = list(self._conns), set()
        gevent.killall(conns, block=True, timeout=timeout)

    # --- the first request, read from callbacks (see transport.first_request) ---------

    def first_head(self, sock: socket.socket, buf: bytearray, end: int, deadline: float) -> None:
        """A connection's first request head arrived (runs in the hub: must not block)."""
        try:
            request = parse_head(bytes(buf[:end]), max_head_bytes=self.limits.max_head_bytes,
                                 max_headers=self.limits.max_headers)
            if self.draining and not self._open_while_draining(request):
                raise HttpError(503, "Server is shutting down")
            if not request.wants_upgrade:
                gevent.spawn(self._serve, sock, buf, deadline)  # HTTP API and health: a greenlet may wait
                return
            accept = websocket_accept(request)
        except HttpError as exc:
            gevent.spawn(self._refuse_and_close, sock, exc)
            return
        try:
            sent = sock.send(accept)
        except BlockingIOError:
            sent = 0  # the greenlet below waits and sends the same bytes (TLS requires the same)
        except OSError as exc:
            log.debug("client left during the upgrade: %r", exc)
            sock.close()
            return
        if sent < len(accept):  # a fresh socket takes 130 bytes at once; if not, wait in a greenlet
            gevent.spawn(self._finish_upgrade, sock, request, accept[sent:], bytes(buf[end:]))
            return
        try:
            self.router.upgrade(request, sock, bytes(buf[end:]))
        except Exception:  # our bug: say so, and lose only this connection
            log.exception("error taking over a WebSocket connection")
            sock.close()

    def read_first_request(self, sock: socket.socket, deadline: float) -> FirstRequest:
        """Watch ``sock`` (its TLS handshake done) until its first request head is in, by ``deadline``."""
        waiting = FirstRequest(self, sock, deadline)
        self._waiting.add(waiting)
        return waiting

    def forget(self, waiting: FirstRequest | TlsHandshake) -> None:
        """``waiting`` stopped watching its socket (done or given up)."""
        self._waiting.discard(waiting)

    def first_request_failed(self, sock: socket.socket, error: HttpError | None) -> None:
        """The first request did not arrive whole: answer ``error`` (if any), then close."""
        if error is None:
            sock.close()
        else:
            gevent.spawn(self._refuse_and_close, sock, error)

    def _refuse_and_close(self, sock: socket.socket, exc: HttpError) -> None:
        me = gevent.getcurrent()
        self._conns.add(me)
        try:
            self._refuse(sock, exc)
        finally:
            self._conns.discard(me)
            sock.close()

    def _finish_upgrade(self, sock: socket.socket, request: Request, rest: bytes, early: bytes) -> None:
        try:
            self._send(sock, rest)
        except (OSError, TimeoutError) as exc:
            log.debug("client left during the upgrade: %r", exc)
            sock.close()
            return
        self.router.upgrade(request, sock, early)

    def _on_acceptable(self) -> None:
        # Runs in the hub: must not block. Accept a batch, hand each to a greenlet.
        listener = self._sock
        adopt = self._adopt
        for _ in range(ACCEPT_BATCH):
            if listener is None:
                return
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._pause_accepting(exc)
                # ECONNABORTED and the like: that client is gone; the next may not be.
                return
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                sock.close()  # reset between accept and here
                continue
            # No greenlet yet: most connections are WebSocket upgrades, which
            # are read, answered and handed over from libev callbacks alone.
            self._waiting.add(adopt(self, sock))

    def _pause_accepting(self, exc: OSError) -> None:
        # The pending connection stays in the backlog and the watcher would
        # fire again at once: stop it and retry shortly (a busy loop otherwise).
        self._accept_pauses += 1
        now = time.monotonic()
        if now - self._last_fd_warning >= 1.0:
            log.warning("cannot accept connections: %s (paused %d times so far); retrying every %.2f s",
                        exc.strerror or exc, self._accept_pauses, ACCEPT_RETRY_SECONDS)
            self._last_fd_warning = now
        if self._watcher is not None:
            self._watcher.stop()
            self._retry = gevent.get_hub().loop.timer(ACCEPT_RETRY_SECONDS)
            self._retry.start(self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self._retry is not None:
            self._retry.close()
            self._retry = None
        if self._watcher is not None:
            self._watcher.start(self._on_acceptable)

    # --- one connection ----------------------------------------------------------------

    def _open_while_draining(self, request: Request) -> bool:
        return request.path in self.always_open and not request.wants_upgrade

    def _serve(self, sock: socket.socket, buf: bytearray, deadline: float) -> None:
        me = gevent.getcurrent()
        self._conns.add(me)
        owned = True  # until a router takes the socket over
        try:
            owned = self._requests(sock, buf, deadline, peer_address(sock))
        except Closed:
            log.debug("client closed before finishing its request")
        except TimeoutError:
            log.debug("client too slow: closing its connection")
        except OSError as exc:
            log.debug("client connection failed: %r", exc)
        finally:
            self._conns.discard(me)
            if owned:
                sock.close()

    def _requests(self, sock: socket.socket, buf: bytearray, deadline: float, remote: str) -> bool:
        """Serve requests until the connection ends; False when the router took the socket.

        ``buf`` holds what was read so far (the first request's head, at
        least in part) and ``deadline`` is when that head must be complete;
        ``remote`` is the client's address (for the router's log lines).
        """
        limits = self.limits
        first = True
        while True:
            if not first:
                # A kept-alive connection: wait (bounded) for the next request to start.
                if not buf and not recv_some(sock, buf, time.monotonic() + limits.idle_timeout, idle=True):
                    return True
                deadline = time.monotonic() + limits.header_timeout
            first = False
            end = find_head_end(buf)
            while end < 0:
                if len(buf) > limits.max_head_bytes:
                    self._refuse(sock, HttpError(431, f"Request head over {limits.max_head_bytes} bytes"))
                    return True
                scanned = len(buf)
                try:
                    # No byte yet: a silent connection is closed quietly at the deadline.
                    if not recv_some(sock, buf, deadline, idle=not buf):
                        return True
                except TimeoutError:
                    if buf:  # a request was started and not finished: say so before closing
                        self._refuse(sock, HttpError(408, "Request head not received in time"))
                    raise
                end = find_head_end(buf, scanned)
            try:
                request = parse_head(bytes(buf[:end]), max_head_bytes=limits.max_head_bytes, max_headers=limits.max_headers)
            except HttpError as exc:
                self._refuse(sock, exc)
                return True
            del buf[:end]
            if self.draining and not self._open_while_draining(request):
                self._refuse(sock, HttpError(503, "Server is shutting down"))
                return True
            if request.wants_upgrade:
                return self._upgrade(sock, request, bytes(buf))
            if not self._answer(sock, request, buf, remote):
                return True

    def _answer(self, sock: socket.socket, request: Request, buf: bytearray, remote: str) -> bool:
        """Read the body, route, reply; True to keep the connection for another request."""
        limits = self.limits
        length = request.content_length
        if length > limits.max_body_bytes:
            self._refuse(sock, HttpError(413, f"Body over {limits.max_body_bytes} bytes"))
            return False
        # A probe is no request a drain must wait for (a load balancer may poll all along).
        busy = 0 if request.path in self.always_open else 1
        self.busy += busy
        try:
            deadline = time.monotonic() + limits.body_timeout
            while len(buf) < length:
                try:
                    if not recv_some(sock, buf, deadline):
                        raise Closed
                except TimeoutError:
                    self._refuse(sock, HttpError(408, "Request body not received in time"))
                    raise
            body = bytes(buf[:length])
            del buf[:length]
            reply = self._route(request, body, remote)
            keep = request.keep_alive and not self.draining
            answer = response(
                reply.status, reply.body, reply.content_type, keep_alive=keep, headers=reply.headers,
                head_only=request.method == "HEAD", http10=request.version == "HTTP/1.0",
            )
            self._send(sock, answer)
            return keep
        finally:
            self.busy -= busy

    def _route(self, request: Request, body: bytes, remote: str) -> Reply:
        try:
            return self.router.handle(request, body, remote)
        except Exception:  # our bug, not the client's: log it whole, answer 500, keep serving
            log.exception("error answering %s %s", request.method, request.path)
            return Reply(500, b'{"error":"Internal server error"}', "application/json")

    def _upgrade(self, sock: socket.socket, request: Request, early: bytes) -> bool:
        try:
            accept = websocket_accept(request)
        except HttpError as exc:
            self._refuse(sock, exc)
            return True
        self._send(sock, accept)
        self._conns.discard(gevent.getcurrent())  # from here the router owns it; stop() must not kill it
        self.router.upgrade(request, sock, early)
        return False

    # --- bounded I/O (transport.bounded_io) --------------------------------------------

    def _refuse(self, sock: socket.socket, exc: HttpError) -> None:
        """Answer an error and end the connection (a lingering close, see ``bounded_io.refuse``).

        A 4xx is the one place a malformed request is refused: its log line is here.
        """
        if self.ops is not None and 400 <= exc.status < 500:
            remote = peer_address(sock)
            self.ops.note(log, logging.INFO, remote, f"HTTP request from {remote} refused ({exc.status}): "
                          f"{exc.message}", kind="http_refused", status=exc.status, reason=exc.message)
        else:
            log.debug("refused request (%d): %s", exc.status, exc.message)
        refuse(sock, exc, self.limits.send_timeout)

    def _send(self, sock: socket.socket, data: bytes) -> None:
        send_all(sock, data, self.limits.send_timeout)

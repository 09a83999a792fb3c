"""WebSocket glue: moves bytes between a socket and a connection session.

Data flow: ``transport.server`` answers the HTTP upgrade in the
connection's greenlet and hands the socket over here; that greenlet then
ends. From there a connection is two libev watchers and no greenlet: when
the socket is readable, :meth:`WebSocketConnection._on_readable` reads once
(non-blocking), :class:`~transport.frames.FrameDecoder` turns the bytes into
messages, and each text message is handed to the session (the node's
connection actor). Everything the server says goes out through the
connection's :class:`~transport.writer.SocketWriter`. An idle connection
thus costs a few small objects, not a greenlet's stack.

Silence is watched by a timer: after ``activity_timeout`` seconds without a
byte we send ``pusher:ping``; after ``pong_timeout`` more we close with 4201.
"""

from __future__ import annotations

import logging
import socket
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import gevent

from . import protocol
from .config import App
from .errors import ProtocolError
from .frames import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameDecoder, close_frame, encode_frame, parse_close_payload
from .ops_log import OpsLog, peer_address
from .watchers import Loop, Watcher
from .writer import CLOSE_GRACE_SECONDS, SocketWriter

if TYPE_CHECKING:
    from gevent.hub import Hub

__all__ = ["Session", "Sockets", "WebSocketConnection", "serve_websocket"]

log = logging.getLogger(__name__)

READ_SIZE = 16384
_POLL_FIRST_SECONDS = 1e-6  # see actors.runtime.yield_to_io
_EV_READ = 1
_T = TypeVar("_T")


class Session(Protocol):
    """What the glue needs from the node for one connection."""

    def text(self, text: str, nbytes: int = 0) -> None:
        """A text message of ``nbytes`` UTF-8 bytes arrived."""

    def closed(self, reason: str) -> None:
        """The socket is done; release everything."""

    def terminate(self, code: int, message: str) -> None:
        """Close the connection with a Pusher code."""


class Sockets(Protocol):
    """Counts a port's WebSocket connections per app, for quotas (``transport.routes.NodeRoutes``)."""

    def admit(self, app: App) -> bool: ...
    def opened(self, app: App) -> None: ...
    def closed(self, app: App) -> None: ...


def serve_websocket(
    sock: socket.socket,
    path: str,
    query: str,
    early: bytes,
    lookup_app: Callable[[str], App | None],
    connect: Callable[[App, SocketWriter], Session],
    sockets: Sockets | None = None,
    admitted: bool | None = None,
    ops: OpsLog | None = None,
) -> WebSocketConnection | None:
    """Adopt one upgraded connection, right after its 101 (must not block).

    ``sock`` is non-blocking and already answered ``101``; ``early`` holds
    bytes the client sent after its request head. Returns the running
    connection, or None when it was refused (Pusher checks: path, protocol
    version, app key, app switched off). ``sockets`` (optional) keeps count:
    ``admit(app)`` may refuse (4004, over quota), ``opened(app)``/``closed(app)``
    run when this glue takes a socket over and when it finally closes it.
    ``admitted`` is the quota's answer when it was decided elsewhere (a cluster).
    A refusal is decided here, so it is logged here: one line on ``ops``.
    """
    key = app = None
    try:
        key = protocol.check_connect_request(path, query)
        app = lookup_app(key)
        if app is None:
            raise ProtocolError(protocol.APP_NOT_FOUND, f"App key {key} does not exist", fatal=True)
        if not app.enabled:
            raise ProtocolError(protocol.APP_DISABLED, "App is disabled", fatal=True)
        if admitted is False or (admitted is None and sockets is not None and not sockets.admit(app)):
            raise ProtocolError(protocol.OVER_QUOTA, "Over the app's connection quota", fatal=True)
    except ProtocolError as exc:
        _log_refusal(ops, sock, exc, key, app)
        WebSocketConnection(sock, None).refuse(exc)
        return None
    on_close = None
    if sockets is not None:
        sockets.opened(app)
        on_close = lambda: sockets.closed(app)  # noqa: E731 - a one-line callback
    connection = WebSocketConnection(sock, app, on_close)
    try:
        connection.open(connect)
    except ProtocolError as exc:
        connection.refuse(exc)
        return None
    connection.start(early)
    return connection


def _log_refusal(ops: OpsLog | None, sock: socket.socket, exc: ProtocolError, key: str | None, app: App | None) -> None:
    if ops is None:
        log.debug("refused WebSocket connection: %s", exc.message)
        return
    # Over quota is the operator's capacity, not the client's mistake: a warning.
    level = logging.WARNING if exc.code == protocol.OVER_QUOTA else logging.INFO
    remote = peer_address(sock)
    ops.note(log, level, remote, f"WebSocket connection from {remote} refused ({exc.code}): {exc.message}",
             kind="connection_refused", code=exc.code, app_id=app.id if app is not None else None,
             app_key=key, reason=exc.message)


class WebSocketConnection:
    """One client socket after the upgrade: a read watcher, an idle timer, a writer."""

    __slots__ = ("_ended", "_io", "_last_read", "_loop", "_on_close", "_ping_sent", "_timer", "app", "decoder",
                 "session", "sock", "writer")

    def __init__(self, sock: socket.socket, app: App | None, on_close: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.app = app  # None for a connection refused before its app was known
        self.writer = SocketWriter(sock, max_buffer_bytes=app.max_buffer_bytes if app else 4096)
        self.decoder = FrameDecoder(app.max_message_bytes if app else 125)
        self.session: Session | None = None
        self._on_close = on_close
        self._loop: Loop = gevent.get_hub().loop
        self._io: Watcher | None = None
        self._timer: Watcher | None = None
        self._last_read = 0.0
        self._ping_sent: float | None = None
        self._ended = False

    def open(self, connect: Callable[[App, SocketWriter], Session]) -> None:
        """Create the session (the connection actor) for this socket."""
        assert self.app is not None  # only a refused connection has none
        self.session = connect(self.app, self.writer)

    def refuse(self, error: ProtocolError) -> None:
        """Close before any session exists, saying why."""
        code = error.code if error.code is not None else 4000  # refusals always carry a code
        self.writer.close(protocol.error_frame(code, error.message) + close_frame(code, error.message[:100]))
        self._ended = True
        # Runs in a libev callback (no waiting there): a socket that took the
        # bytes at once closes now, a full one gets a greenlet to drain it.
        if self.writer.draining:
            gevent.spawn(self._finish_after_drain)
        else:
            self._finish()

    def start(self, early: bytes = b"") -> None:
        """Begin watching the socket; ``early`` holds bytes read during the upgrade."""
        self._last_read = self._loop.now()
        self._io = self._loop.io(self.sock.fileno(), _EV_READ)
        self._io.start(self._on_readable)
        assert self.app is not None  # as in open
        self._arm(self.app.activity_timeout)
        if early:
            self._received(early)

    # --- reading (runs in the hub, must never block) ---------------------------

    def _on_readable(self) -> None:
        burst = _per_hub(_bursts, _Burst)
        if burst.crowded(self._loop):
            # Thousands of sockets ready in one loop iteration (a client fleet
            # dropped): read the rest from a greenlet, in slices, so accepts,
            # timers and live clients get turns in between.
            assert self._io is not None  # this is its callback
            self._io.stop()
            burst.defer(self)
            return
        self._read()

    def _read(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._end(f"socket error: {exc!r}")
            return
        if not data:
            self._end("client closed")
            return
        self._last_read = self._loop.now()
        self._received(data)

    def _read_deferred(self) -> None:
        if self._ended:
            return
        self._read()
        if not self._ended:
            assert self._io is not None  # stopped by _on_readable, not closed
            self._io.start(self._on_readable)

    def _received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except ProtocolError as exc:
            self.writer.close(close_frame(exc.code if exc.code is not None else 1002, exc.message[:100]))
            self._end(exc.message)
            return
        for message in messages:
            opcode = message.opcode
            if opcode == OP_TEXT:
                try:
                    text = message.text
                except ProtocolError as exc:
                    self.writer.close(close_frame(exc.code if exc.code is not None else 1007, exc.message))
                    self._end(exc.message)
                    return
                assert self.session is not None  # made on the upgrade, before any frame
                self.session.text(text, len(message.payload))
            elif opcode == OP_PING:
                self.writer.offer(encode_frame(OP_PONG, message.payload))
            elif opcode == OP_CLOSE:
                try:
                    code, _ = parse_close_payload(message.payload)
                except ProtocolError as exc:  # e.g. 1005 or 999: never echoed (RFC 6455 7.4.1)
                    code = exc.code
                self.writer.close(close_frame(code or 1000))
                self._end("client sent close")
                return
            elif opcode != OP_PONG:
                # Binary frames: Pusher only speaks JSON text; say so, keep the connection.
                self.writer.offer(protocol.error_frame(None, "Binary messages are not supported"))

    # --- silence -----------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.close()
        self._timer = self._loop.timer(max(seconds, 0.01))
        self._timer.start(self._on_timer)

    def _on_timer(self) -> None:
        # Reads only stamp ``_last_read``; the timer looks at it when it fires,
        # so a busy connection never re-arms anything per message.
        if self._ended:
            return
        now = self._loop.now()
        assert self.app is not None  # armed by start()
        activity, pong = self.app.activity_timeout, self.app.pong_timeout
        if self._ping_sent is not None and self._last_read > self._ping_sent:
            self._ping_sent = None  # something came back: the client is alive
        if self._ping_sent is None:
            idle = now - self._last_read
            if idle < activity:
                self._arm(activity - idle)
                return
            self.writer.offer(protocol.PING_FRAME)
            self._ping_sent = now
            self._arm(pong)
        elif now - self._ping_sent >= pong:
            message = "Pong reply not received"
            code = protocol.PONG_NOT_RECEIVED
            self.writer.close(protocol.error_frame(code, message) + close_frame(code, message))
            self._end("pong not received")
        else:
            self._arm(pong - (now - self._ping_sent))

    # --- the end -------------------------------------------------------------------

    def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        for watcher in (self._io, self._timer):
            if watcher is not None:
                watcher.close()
        # The rest waits for the closer's next slice: when 15,000 clients drop
        # at once, libev runs all their read callbacks in one loop iteration,
        # and each must stay cheap so accepts and broadcasts go on meanwhile.
        _closer_of_current_hub().add(self, reason)

    def _end_rest(self, reason: str) -> None:
        if self.session is not None:
            self.session.closed(reason)
        self.writer.close()
        if self.writer.draining:
            gevent.spawn(self._finish_after_drain)
        else:
            self._finish()

    def _finish_after_drain(self) -> None:
        self.writer.join(CLOSE_GRACE_SECONDS + 1)
        self._finish()

    def _finish(self) -> None:
        self.writer.abort()  # no greenlet may still wait on the descriptor we close
        self.sock.close()
        if self._on_close is not None:
            self._on_close()


class _Burst:
    """Counts read callbacks per loop iteration; past a limit, defers the rest to a greenlet."""

    LIMIT = 256  # reads done right away in one iteration of the loop

    def __init__(self) -> None:
        self.now = -1.0
        self.count = 0
        self.deferred: deque[WebSocketConnection] = deque()
        self.runner: gevent.Greenlet | None = None

    def crowded(self, loop: Loop) -> bool:
        now = loop.now()  # libev's clock moves once per iteration: equal means the same iteration
        if now != self.now:
            self.now, self.count = now, 0
        self.count += 1
        return self.count > self.LIMIT

    def defer(self, connection: WebSocketConnection) -> None:
        self.deferred.append(connection)
        if self.runner is None:
            self.runner = gevent.spawn(self._run)

    def _run(self) -> None:
        deferred = self.deferred
        try:
            while deferred:
                for _ in range(min(self.LIMIT, len(deferred))):
                    connection = deferred.popleft()
                    connection._read_deferred()  # noqa: SLF001 - the burst is the connection's helper
                gevent.sleep(_POLL_FIRST_SECONDS)
        finally:
            self.runner = None
            if deferred:
                self.runner = gevent.spawn(self._run)


class _Closer:
    """Finishes ended connections in slices, yielding to the hub between them."""

    __slots__ = ("pending", "runner", "__weakref__")  # one per hub (a node's thread)

    SLICE = 256

    def __init__(self) -> None:
        self.pending: deque[tuple[WebSocketConnection, str]] = deque()
        self.runner: gevent.Greenlet | None = None

    def add(self, connection: WebSocketConnection, reason: str) -> None:
        self.pending.append((connection, reason))
        if self.runner is None:
            self.runner = gevent.spawn(self._run)

    def _run(self) -> None:
        pending = self.pending
        try:
            while pending:
                for _ in range(min(self.SLICE, len(pending))):
                    connection, reason = pending.popleft()
                    connection._end_rest(reason)  # noqa: SLF001 - the closer is the connection's helper
                # A timer, not sleep(0): the loop must poll (accepts, reads, timers) between slices.
                gevent.sleep(_POLL_FIRST_SECONDS)
        finally:
            self.runner = None
            if pending:  # an exception ended this greenlet: keep the others going
                self.runner = gevent.spawn(self._run)


_closers: weakref.WeakKeyDictionary[Hub, _Closer] = weakref.WeakKeyDictionary()
_bursts: weakref.WeakKeyDictionary[Hub, _Burst] = weakref.WeakKeyDictionary()


def _per_hub(table: weakref.WeakKeyDictionary[Hub, _T], make: Callable[[], _T]) -> _T:
    """The current hub's helper from ``table`` (made on first use): each node's thread has its own."""
    hub = gevent.get_hub()
    helper = table.get(hub)
    if helper is None:
        helper = table[hub] = make()
    return helper


def _closer_of_current_hub() -> _Closer:
    return _per_hub(_closers, _Closer)

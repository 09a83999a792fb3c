"""WebSocket glue: moves bytes between a socket and a connection session.

Data flow: gevent-websocket does the HTTP upgrade; then this greenlet reads
raw bytes, :class:`~transport.frames.FrameDecoder` turns them into messages,
and each text message is handed to the session (the node's connection
actor). Everything the server says goes out through the connection's
:class:`~transport.writer.SocketWriter`. Silence is watched here too: after
``activity_timeout`` seconds without a byte we send ``pusher:ping``, and after
``pong_timeout`` more we close with 4201.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Callable, Protocol

from . import protocol
from .errors import ProtocolError
from .frames import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameDecoder, close_frame, encode_frame, parse_close_payload
from .writer import SocketWriter

__all__ = ["Session", "serve_websocket"]

log = logging.getLogger(__name__)

READ_SIZE = 65536


class Session(Protocol):
    """What the glue needs from the node for one connection."""

    def text(self, text: str) -> None:
        """A text message arrived."""

    def closed(self, reason: str) -> None:
        """The socket is done; release everything."""

    def terminate(self, code: int, message: str) -> None:
        """Close the connection with a Pusher code."""


def _refuse(gsock: Any, error: ProtocolError) -> None:
    # Before a session exists: say why, then close with the same code, so the
    # client does not reconnect into the same error (4000-4099: don't retry).
    try:
        gsock.sendall(protocol.error_frame(error.code, error.message) + close_frame(error.code, error.message[:100]))
    except OSError:
        log.debug("peer left before hearing the refusal")


def serve_websocket(
    ws: Any,
    environ: dict,
    lookup_app: Callable[[str], Any],
    connect: Callable[[Any, SocketWriter], Session],
) -> None:
    """Run one upgraded connection until it ends (called in its handler greenlet)."""
    handler = ws.handler
    gsock = handler.socket
    # gevent-websocket must not write its own close frame after us.
    ws.closed = True
    try:
        key = protocol.check_connect_request(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
        app = lookup_app(key)
        if app is None:
            raise ProtocolError(protocol.APP_NOT_FOUND, f"App key {key} does not exist", fatal=True)
        if not app.enabled:
            raise ProtocolError(protocol.APP_DISABLED, "App is disabled", fatal=True)
    except ProtocolError as exc:
        _refuse(gsock, exc)
        return
    writer = SocketWriter(gsock._sock, max_buffer_bytes=app.max_buffer_bytes)
    try:
        session = connect(app, writer)
    except ProtocolError as exc:  # e.g. over the app's connection quota
        _refuse(gsock, exc)
        return
    reason = "client closed"
    try:
        reason = _read_loop(handler.rfile, gsock, writer, session, app)
    except ProtocolError as exc:
        reason = exc.message
        code = exc.code if exc.code is not None else 1002
        writer.close(close_frame(code, exc.message[:100]))
    except OSError as exc:
        reason = f"socket error: {exc!r}"
    finally:
        session.closed(reason)
        writer.close()
        writer.join(timeout=5.0)


def _read_loop(rfile: Any, gsock: Any, writer: SocketWriter, session: Session, app: Any) -> str:
    decoder = FrameDecoder(app.max_message_bytes)
    awaiting_pong = False
    gsock.settimeout(app.activity_timeout)
    while True:
        try:
            data = rfile.read1(READ_SIZE)
        except socket.timeout:
            if awaiting_pong:
                session.terminate(protocol.PONG_NOT_RECEIVED, "Pong reply not received")
                return "pong not received"
            writer.offer(protocol.PING_FRAME)
            awaiting_pong = True
            gsock.settimeout(app.pong_timeout)
            continue
        if not data:
            return "client closed"
        if awaiting_pong:
            awaiting_pong = False
            gsock.settimeout(app.activity_timeout)
        for message in decoder.feed(data):
            opcode = message.opcode
            if opcode == OP_TEXT:
                session.text(message.text)
            elif opcode == OP_PING:
                writer.offer(encode_frame(OP_PONG, message.payload))
            elif opcode == OP_CLOSE:
                code, _ = parse_close_payload(message.payload)
                writer.close(close_frame(code or 1000))
                return "client sent close"
            elif opcode != OP_PONG:
                # Binary frames: Pusher only speaks JSON text; say so, keep the connection.
                writer.offer(protocol.error_frame(None, "Binary messages are not supported"))

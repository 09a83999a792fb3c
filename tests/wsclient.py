"""WebSocket clients for the end-to-end tests.

Two clients, both on blocking loopback sockets and both bounded by timeouts:

* :class:`PusherClient` wraps ``websocket-client`` (a real, independent
  WebSocket implementation) with Pusher helpers: ``expect`` the next event,
  ``subscribe``, ``signin``, ``until_pong`` (a ping barrier), ``expect_close``
  to read the close code.
* :class:`RawClient` is a tiny hand-written client for what websocket-client
  will not do: set ``SO_RCVBUF`` before connecting, never read, send
  unmasked, fragmented or byte-by-byte frames.

Every receive takes a ``timeout`` (seconds); nothing here waits forever.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import struct
import time
from typing import Any

import websocket

__all__ = ["Closed", "PusherClient", "RawClient", "frame_bytes", "ws_url"]

DEFAULT_QUERY = "protocol=7&client=py&version=1.0&flash=false"
TIMEOUT = 5.0

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(Exception):
    """The server closed the WebSocket; ``code`` is its close code (None if it sent none)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed by server: code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


def ws_url(
    port: int, key: str = "app-key", query: str | None = DEFAULT_QUERY, path: str | None = None, *, tls: bool = False
) -> str:
    """``ws://127.0.0.1:PORT/app/KEY?QUERY`` (or any ``path``; ``wss://`` with ``tls``)."""
    path = path if path is not None else f"/app/{key}"
    return f"ws{'s' if tls else ''}://127.0.0.1:{port}{path}" + (f"?{query}" if query else "")


def _parse_close(payload: bytes) -> tuple[int | None, str]:
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


def _decode_message(text: str | bytes) -> dict:
    message = json.loads(text)
    data = message.get("data")
    if isinstance(data, str) and message.get("event", "").startswith(("pusher:", "pusher_internal:")):
        # Server-sent data is a JSON-encoded string (Pusher's double encoding).
        try:
            message["data_decoded"] = json.loads(data)
        except ValueError:
            pass
    return message


class _Expecting:
    """``expect`` and ``expect_close`` for both clients, built on the class's own ``recv``."""

    def recv(self, timeout: float = TIMEOUT) -> dict:
        raise NotImplementedError

    def expect(self, event: str, channel: str | None = None, timeout: float = TIMEOUT) -> dict:
        """Assert that the *next* message is ``event`` (on ``channel``) and return it."""
        message = self.recv(timeout)
        assert message.get("event") == event, f"expected {event!r}, got {message!r}"
        if channel is not None:
            assert message.get("channel") == channel, f"expected channel {channel!r}, got {message!r}"
        return message

    def expect_close(self, timeout: float = TIMEOUT) -> tuple[int | None, list[dict]]:
        """Read until the server's close frame; return (close code, messages before it)."""
        deadline = time.monotonic() + timeout
        before: list[dict] = []
        while True:
            try:
                before.append(self.recv(max(deadline - time.monotonic(), 0.001)))
            except Closed as closed:
                return closed.code, before


class PusherClient(_Expecting):
    """A websocket-client connection speaking Pusher JSON, every read bounded."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.socket_id: str | None = None
        self.established: dict | None = None

    @classmethod
    def connect(
        cls,
        port: int,
        key: str = "app-key",
        query: str | None = DEFAULT_QUERY,
        path: str | None = None,
        *,
        established: bool = True,
        timeout: float = TIMEOUT,
        tls: ssl.SSLContext | None = None,
        **options: Any,
    ) -> PusherClient:
        """Open a connection; with ``established`` read ``pusher:connection_established`` first.

        ``tls``: a client context (trusting the node's CA) to connect with ``wss://``.
        """
        if tls is not None:
            options["sslopt"] = {"context": tls}
        url = ws_url(port, key, query, path, tls=tls is not None)
        ws = websocket.create_connection(url, timeout=timeout, **options)
        client = cls(ws)
        if established:
            message = client.expect("pusher:connection_established", timeout=timeout)
            client.established = message["data_decoded"]
            client.socket_id = client.established["socket_id"]
        return client

    # --- receiving -------------------------------------------------------------

    def recv_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """The next frame's (opcode, payload); raises WebSocketTimeoutException after ``timeout``."""
        self.ws.settimeout(timeout)
        frame = self.ws.recv_frame()
        return frame.opcode, bytes(frame.data)

    def recv(self, timeout: float = TIMEOUT) -> dict:
        """The next Pusher message as a dict; raises :class:`Closed` on a close frame."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise websocket.WebSocketTimeoutException(f"no message within {timeout} s")
            try:
                opcode, payload = self.recv_frame(remaining)
            except websocket.WebSocketConnectionClosedException as exc:
                raise Closed(None, "connection closed without a close frame") from exc
            if opcode == OP_TEXT:
                return _decode_message(payload)
            if opcode == OP_CLOSE:
                raise Closed(*_parse_close(payload))
            if opcode == OP_BINARY:
                raise AssertionError(f"server sent a binary frame: {payload!r}")
            # pings/pongs at the WebSocket level: not Pusher messages

    def assert_silent(self, duration: float = 0.2) -> None:
        """Assert that nothing arrives within ``duration`` seconds (a short bounded read)."""
        try:
            message = self.recv(duration)
        except websocket.WebSocketTimeoutException:
            return
        raise AssertionError(f"expected silence, got {message!r}")

    # --- sending ---------------------------------------------------------------

    def send_json(self, message: Any) -> None:
        self.ws.send(json.dumps(message))

    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def send_event(self, event: str, data: Any, channel: str | None = None) -> None:
        """Send ``{"event": event, "data": data}`` (with ``channel`` if given)."""
        message = {"event": event, "data": data}
        if channel is not None:
            message["channel"] = channel
        self.send_json(message)

    def subscribe(self, channel: str, timeout: float = TIMEOUT, **fields: Any) -> dict:
        """Subscribe (``fields``: auth, channel_data...) and assert the next message is ``subscription_succeeded``."""
        self.send_event("pusher:subscribe", {"channel": channel, **fields})
        return self.expect("pusher_internal:subscription_succeeded", channel, timeout)

    def unsubscribe(self, channel: str) -> None:
        self.send_json({"event": "pusher:unsubscribe", "data": {"channel": channel}})

    def ping(self, timeout: float = TIMEOUT) -> dict:
        """``pusher:ping`` and assert the next message is ``pusher:pong``."""
        self.send_json({"event": "pusher:ping", "data": {}})
        return self.expect("pusher:pong", timeout=timeout)

    def until_pong(self, timeout: float = TIMEOUT) -> list[dict]:
        """``pusher:ping``; return every message that arrived before the ``pusher:pong`` (a barrier)."""
        self.send_event("pusher:ping", {})
        before: list[dict] = []
        while (message := self.recv(timeout)).get("event") != "pusher:pong":
            before.append(message)
        return before

    def signin(self, sdk: Any, user_id: str, timeout: float = TIMEOUT) -> dict:
        """``pusher:signin`` with ``sdk.authenticate_user`` (python ``pusher`` SDK); expect and return ``signin_success``."""
        self.send_event("pusher:signin", sdk.authenticate_user(self.socket_id, {"id": user_id}))
        return self.expect("pusher:signin_success", timeout=timeout)

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except (OSError, websocket.WebSocketException):
            self.ws.shutdown()

    def __enter__(self) -> PusherClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def frame_bytes(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    """One client frame as bytes (masked unless ``mask=False``)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


class RawClient(_Expecting):
    """A hand-written WebSocket client on a plain socket, for protocol edge cases."""

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self._buf = bytearray(leftover)

    @classmethod
    def connect(
        cls,
        port: int,
        path: str = "/app/app-key",
        query: str | None = DEFAULT_QUERY,
        *,
        rcvbuf: int | None = None,
        timeout: float = TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> RawClient:
        """Connect and upgrade; ``rcvbuf`` sets SO_RCVBUF *before* connect (so the window stays small).

        ``tls``: a client context (trusting the node's CA): the upgrade and frames go over TLS.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        key = base64.b64encode(os.urandom(16)).decode()
        target = path + (f"?{query}" if query else "")
        request = (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(request.encode())
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during handshake: {data!r}")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"upgrade refused: {status!r}")
        return cls(sock, rest)

    # --- sending ---------------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes, **kwargs: Any) -> None:
        self.sock.sendall(frame_bytes(opcode, payload, **kwargs))

    def send_json(self, message: Any) -> None:
        self.send_frame(OP_TEXT, json.dumps(message).encode())

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # --- receiving -------------------------------------------------------------

    def _fill(self, n: int, deadline: float) -> None:
        while len(self._buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"waited for {n} bytes, have {len(self._buf)}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(None, "connection closed without a close frame")
            self._buf += chunk

    def recv_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """The next server frame's (opcode, payload); server frames must be final and unmasked."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self._buf[0], self._buf[1]
        assert b0 & 0x80, "server sent a fragmented frame"
        assert not b1 & 0x80, "server sent a masked frame"
        length, pos = b1 & 0x7F, 2
        if length == 126:
            self._fill(4, deadline)
            length, pos = struct.unpack_from("!H", self._buf, 2)[0], 4
        elif length == 127:
            self._fill(10, deadline)
            length, pos = struct.unpack_from("!Q", self._buf, 2)[0], 10
        self._fill(pos + length, deadline)
        payload = bytes(self._buf[pos : pos + length])
        del self._buf[: pos + length]
        return b0 & 0x0F, payload

    def recv(self, timeout: float = TIMEOUT) -> dict:
        """The next Pusher message; raises :class:`Closed` on a close frame."""
        opcode, payload = self.recv_frame(timeout)
        if opcode == OP_CLOSE:
            raise Closed(*_parse_close(payload))
        assert opcode == OP_TEXT, f"unexpected opcode {opcode}"
        return _decode_message(payload)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

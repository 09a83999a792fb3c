"""Bytes on the wire shared by the driver's helpers (stdlib + ujson only).

The benchmark event's ``data`` is a JSON string of a fixed length carrying a
sequence number and the time of the broadcast call (``time.monotonic()``, the
same CLOCK_MONOTONIC in every process of the machine), padded to the asked
payload size, so the node run and the floor run move frames of equal length.
"""

from __future__ import annotations

import base64
import os
import struct

import ujson

__all__ = ["EVENT", "FLOOR_EVENT", "MIN_PAYLOAD", "handshake_request", "make_data", "masked_text_frame",
           "parse_data"]

EVENT = "perf"
# The same-socket floor's event (node host, raw sends on the node's own sockets): a valid Pusher
# event on the benchmark channel that the clients tell apart from the benchmark's, so it never
# enters the node's delivery checks; its data is shortened by the longer name (equal frame bytes).
FLOOR_EVENT = "perf-floor"
_HEAD = '{"seq":%d,"t":%.6f,"pad":"'
MIN_PAYLOAD = len(_HEAD % (99999, 9999999.0)) + 2


def make_data(seq: int, t: float, payload_bytes: int) -> str:
    """The event data: exactly ``payload_bytes`` characters (at least MIN_PAYLOAD)."""
    head = _HEAD % (seq, t)
    return head + "x" * max(0, payload_bytes - len(head) - 2) + '"}'


def parse_data(data: str) -> tuple[int, float]:
    """(seq, broadcast time) back from the event data."""
    obj = ujson.loads(data)
    return obj["seq"], obj["t"]


def handshake_request(host: str, port: int, path: str) -> bytes:
    """A minimal RFC 6455 client handshake (we do not check the accept hash: speed)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_text_frame(text: str) -> bytes:
    """A client (masked) text frame, as RFC 6455 requires of clients."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return header + mask + masked


def subscribe_frame(channel: str) -> bytes:
    """``pusher:subscribe`` for a public channel, masked."""
    return masked_text_frame(ujson.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))


def unmask(payload: bytes, mask: bytes) -> bytes:
    """Undo a client frame's mask (the floor server reads subscribes)."""
    return bytes(b ^ mask[i & 3] for i, b in enumerate(payload))

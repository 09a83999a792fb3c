"""WebSocket framing (RFC 6455) as pure code: bytes in, frames out.

The server never masks and never fragments what it sends, so encoding a text
frame is a header plus the payload: :func:`text_frame` is called once per
broadcast and its bytes go unchanged to every subscriber.

:class:`FrameDecoder` is the receiving side: feed it whatever the socket gave,
get back complete messages. It unmasks, joins fragments, enforces a size cap
and turns every violation into a :class:`~transport.errors.ProtocolError`
whose code is the WebSocket close code to send.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ProtocolError

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameDecoder",
    "Message",
    "close_frame",
    "encode_frame",
    "parse_close_payload",
    "text_frame",
    "text_of_frame",
]

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

# WebSocket close codes used for framing violations (RFC 6455, 7.4.1).
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame, as a server sends it."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def text_frame(text: str | bytes) -> bytes:
    """A text frame carrying ``text`` (UTF-8 encoded if it is a str)."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    return encode_frame(OP_TEXT, text)


def text_of_frame(frame: bytes) -> str:
    """The text a server frame made by :func:`text_frame` carries (its header stripped)."""
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    return frame[start:].decode("utf-8")


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with a status code and a short reason (<= 123 bytes)."""
    payload = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return encode_frame(OP_CLOSE, payload)


def _valid_close_code(code: int) -> bool:
    # RFC 6455 7.4: 1004-1006 and 1015 are reserved and never sent on the
    # wire; 1016-2999 are unassigned; 3000-4999 belong to libraries and apps.
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999


def parse_close_payload(payload: bytes) -> tuple[int | None, str]:
    """The (code, reason) of a received close frame; (None, '') when empty.

    Raises:
        ProtocolError: 1002 for a one-byte payload or a code no endpoint may
            send (e.g. 999, 1005); 1007 for a reason that is not UTF-8.
    """
    if not payload:
        return None, ""
    if len(payload) < 2:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "Close frame payload of one byte", fatal=True)
    (code,) = struct.unpack("!H", payload[:2])
    if not _valid_close_code(code):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"Invalid close code {code}", fatal=True)
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CLOSE_INVALID_DATA, "Close reason is not valid UTF-8", fatal=True) from None
    return code, reason


@dataclass(frozen=True, slots=True)
class Message:
    """A complete received message: a data message or a control frame."""

    opcode: int
    payload: bytes

    @property
    def text(self) -> str:
        """The payload of a text message, decoded (raises ProtocolError if not UTF-8)."""
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(CLOSE_INVALID_DATA, "Text frame is not valid UTF-8", fatal=True) from exc


class FrameDecoder:
    """Incremental decoder of client-to-server frames.

    ``feed(data)`` returns the list of complete :class:`Message` objects the
    bytes finished. Client frames must be masked; data messages larger than
    ``max_message_bytes`` are refused with close code 1009 before they are
    buffered, so a client cannot make the server hold a huge message.
    """

    def __init__(self, max_message_bytes: int = 1 << 20, *, require_mask: bool = True) -> None:
        self.max_message_bytes = max_message_bytes
        self.require_mask = require_mask
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode: int | None = None
        self._fragment_size = 0

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return the messages they complete, in order."""
        self._buf += data
        out: list[Message] = []
        while True:
            frame = self._next_frame()
            if frame is None:
                return out
            message = self._assemble(*frame)
            if message is not None:
                out.append(message)

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "Reserved bits set without an extension", fatal=True)
        fin, opcode, masked, length = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            (length,) = struct.unpack_from("!H", buf, 2)
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,) = struct.unpack_from("!Q", buf, 2)
            pos = 10
        if opcode >= 0x8:
            if length > 125 or not fin:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "Control frames must be final and <= 125 bytes", fatal=True)
        elif self._fragment_size + length > self.max_message_bytes:
            raise ProtocolError(
                CLOSE_TOO_BIG, f"Message larger than {self.max_message_bytes} bytes", fatal=True
            )
        if self.require_mask and not masked:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "Client frames must be masked", fatal=True)
        mask_end = pos + (4 if masked else 0)
        end = mask_end + length
        if len(buf) < end:
            return None
        payload = bytes(buf[mask_end:end])
        if masked:
            payload = _unmask(payload, bytes(buf[pos:mask_end]))
        del buf[:end]
        return fin, opcode, payload

    def _assemble(self, fin: bool, opcode: int, payload: bytes) -> Message | None:
        if opcode >= 0x8:
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"Unknown control opcode {opcode}", fatal=True)
            return Message(opcode, payload)
        if opcode == OP_CONT:
            if self._fragment_opcode is None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "Continuation frame without a start", fatal=True)
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._fragment_opcode is not None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "New message inside a fragmented one", fatal=True)
            if fin:
                return Message(opcode, payload)
            self._fragment_opcode = opcode
        else:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"Unknown data opcode {opcode}", fatal=True)
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if not fin:
            return None
        message = Message(self._fragment_opcode, b"".join(self._fragments))
        self._fragments, self._fragment_opcode, self._fragment_size = [], None, 0
        return message


def _unmask(payload: bytes, mask: bytes) -> bytes:
    # XOR as one big integer: far faster in CPython than a per-byte loop.
    n = len(payload)
    if n == 0:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")

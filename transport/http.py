"""HTTP/1.1 as pure code: a request head in, a :class:`Request` or an HttpError out.

The node's port speaks just enough HTTP for three kinds of client: WebSocket
clients (one GET with ``Upgrade: websocket``), the Pusher HTTP SDKs (small
requests with a ``Content-Length`` body over kept-alive connections) and load
balancers (``GET /health``). This module holds the rules; ``transport.server``
only moves bytes and keeps the clock.

* :func:`parse_head` checks a request head (request line and headers) against
  the limits and refuses anything malformed with the status RFC 9110/9112
  prescribe: 400 for bad syntax, 414 for a long target, 431 for too many or
  too long headers, 501 for a transfer coding we do not take, 505 for a
  version we do not speak.
* :func:`websocket_accept` checks an upgrade request (RFC 6455 4.2.1) and
  returns the ``101 Switching Protocols`` answer; 400 when it is malformed,
  426 with ``Sec-WebSocket-Version: 13`` for a version we do not speak.
* :func:`response` builds a whole answer as one ``bytes``, so it leaves in one
  ``send`` (headers and body in separate sends meet Nagle's algorithm).

::

    >>> head = b"GET /health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
    >>> parse_head(head).path
    '/health'
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from .errors import HttpError

__all__ = [
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEAD_BYTES",
    "MAX_TARGET_BYTES",
    "REASONS",
    "Request",
    "find_head_end",
    "parse_head",
    "response",
    "websocket_accept",
]

DEFAULT_MAX_HEAD_BYTES = 16 * 1024
DEFAULT_MAX_HEADERS = 100
MAX_TARGET_BYTES = 8 * 1024

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# RFC 9110 5.6.2: a token (methods, header names).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value: visible ASCII, obs-text, spaces and tabs; no NUL, CR, LF or other controls.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The request target: visible ASCII only (no spaces, controls or raw non-ASCII).
_TARGET = re.compile(rb"[\x21-\x7e]+")

REASONS = {
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head. Header names are lower-cased; values are latin-1 text."""

    method: str
    target: str
    path: str
    query: str
    version: str
    headers: tuple[tuple[str, str], ...]
    content_length: int
    keep_alive: bool

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (lower-case), or None; repeated headers joined by ','."""
        values = [value for key, value in self.headers if key == name]
        return ",".join(values) if values else None

    def tokens(self, name: str) -> set[str]:
        """The lower-cased comma-separated tokens of a header (``Connection``, ``Upgrade``)."""
        value = self.header(name) or ""
        return {part.strip().lower() for part in value.split(",") if part.strip()}

    @property
    def wants_upgrade(self) -> bool:
        """True for a WebSocket upgrade request (valid or not)."""
        return "websocket" in self.tokens("upgrade")


def find_head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """Index just past the blank line ending the head, or -1 if it has not arrived."""
    end = buffer.find(b"\r\n\r\n", max(start - 3, 0))
    return -1 if end < 0 else end + 4


def parse_head(
    head: bytes, *, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES, max_headers: int = DEFAULT_MAX_HEADERS
) -> Request:
    """Parse a request head (``head`` ends with the blank line).

    Raises:
        HttpError: 400, 414, 431, 501 or 505, with a message saying what was wrong.
    """
    if len(head) > max_head_bytes:
        raise HttpError(431, f"Request head over {max_head_bytes} bytes")
    lines = head.split(b"\r\n")
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        del lines[0]  # RFC 9112 2.2: empty lines before a request line are ignored
    if not lines:
        raise HttpError(400, "Empty request")
    method, target, version = _request_line(lines[0])
    if len(lines) - 1 > max_headers:
        raise HttpError(431, f"More than {max_headers} header fields")
    headers = tuple(_header(line) for line in lines[1:])
    request = Request(method, target, *_split_target(target), version, headers, 0, False)
    length = _content_length(request)
    connection = request.tokens("connection")
    if version == "HTTP/1.1":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection
    return Request(method, target, request.path, request.query, version, headers, length, keep_alive)


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "Malformed request line: expected 'METHOD /path HTTP/1.1'")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HttpError(400, "Malformed request method")
    if len(target) > MAX_TARGET_BYTES:
        raise HttpError(414, f"Request target over {MAX_TARGET_BYTES} bytes")
    if _TARGET.fullmatch(target) and target.startswith((b"http://", b"https://")):
        # The absolute form (RFC 9112 3.2.2), which servers must accept: keep the path.
        target = b"/" + target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"/"
    if not _TARGET.fullmatch(target) or not target.startswith(b"/"):
        raise HttpError(400, "Malformed request target: expected an absolute path of visible ASCII")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if re.fullmatch(rb"HTTP/\d\.\d", version):
            raise HttpError(505, "Only HTTP/1.0 and HTTP/1.1 are supported")
        raise HttpError(400, "Malformed HTTP version")
    return method.decode("ascii"), target.decode("ascii"), version.decode("ascii")


def _split_target(target: str) -> tuple[str, str]:
    path, _, query = target.partition("?")
    return path, query


def _header(line: bytes) -> tuple[str, str]:
    name, sep, value = line.partition(b":")
    if not sep or not _TOKEN.fullmatch(name):
        # Also catches obs-fold (a line starting with whitespace), which RFC 9112 lets us refuse.
        raise HttpError(400, "Malformed header line")
    value = value.strip(b" \t")
    if _BAD_VALUE.search(value):
        raise HttpError(400, f"Control character in header {name.decode('ascii')!r}")
    return name.decode("ascii").lower(), value.decode("latin-1")


def _content_length(request: Request) -> int:
    if request.header("transfer-encoding") is not None:
        # Chunked request bodies: no Pusher SDK sends them; refuse plainly
        # rather than guess where a body ends (request smuggling).
        raise HttpError(501, "Transfer-Encoding is not supported: send a Content-Length")
    values = [value for key, value in request.headers if key == "content-length"]
    if not values:
        return 0
    lengths = {part.strip() for value in values for part in value.split(",")}
    if len(lengths) != 1:
        raise HttpError(400, "Conflicting Content-Length headers")
    (text,) = lengths
    # int() would take "+5", " 5" or "5_0"; a length is plain ASCII digits.
    if not text.isascii() or not text.isdigit() or len(text) > 15:
        raise HttpError(400, f"Invalid Content-Length {text[:20]!r}")
    return int(text)


def websocket_accept(request: Request) -> bytes:
    """Check a WebSocket upgrade request; return the whole ``101`` answer.

    Raises:
        HttpError: 400 for a malformed upgrade (not GET, not HTTP/1.1, no
            ``Connection: upgrade``, a bad ``Sec-WebSocket-Key``), 426 (with
            ``Sec-WebSocket-Version: 13``) for another protocol version.
    """
    if request.method != "GET":
        raise HttpError(400, "A WebSocket upgrade must be a GET request")
    if request.version != "HTTP/1.1":
        raise HttpError(400, "A WebSocket upgrade needs HTTP/1.1")
    if "upgrade" not in request.tokens("connection"):
        raise HttpError(400, "A WebSocket upgrade needs 'Connection: Upgrade'")
    if request.header("sec-websocket-version") != "13":
        raise HttpError(426, "Unsupported WebSocket version: use 13", headers=(("Sec-WebSocket-Version", "13"),))
    key = (request.header("sec-websocket-key") or "").strip()
    try:
        valid_key = len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (ValueError, UnicodeEncodeError):
        valid_key = False
    if not valid_key:
        raise HttpError(400, "Missing or malformed Sec-WebSocket-Key")
    accept = base64.b64encode(hashlib.sha1(key.encode("ascii") + _WS_GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def response(
    status: int,
    body: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    *,
    keep_alive: bool = True,
    headers: tuple[tuple[str, str], ...] = (),
    head_only: bool = False,
    http10: bool = False,
) -> bytes:
    """A whole HTTP/1.1 response (head and body) as one buffer.

    ``head_only``: the answer to a HEAD request (the headers a GET would get,
    no body). ``http10``: the client spoke HTTP/1.0, so a kept-alive
    connection must be said to be one.
    """
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    if body or status not in (101, 204):
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    elif http10:
        lines.append("Connection: keep-alive")
    lines.extend(f"{name}: {value}" for name, value in headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body

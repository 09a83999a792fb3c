"""A minimal HTTP/1.1 client, sans I/O: the request as bytes, the response's status from bytes.

Enough for webhook POSTs (``transport.http_post`` moves the bytes over a
cooperative socket): one request per connection (``Connection: close``),
the answer read up to the end of its head; the body is not needed.

    >>> parse_url("http://example.com:8080/hook?x=1")
    ('http', 'example.com', 8080, '/hook?x=1')
    >>> request("POST", "example.com", "/hook", [("X-A", "1")], b"{}")[:25]
    b'POST /hook HTTP/1.1\\r\\nHost'
    >>> ResponseHead.parse(b"HTTP/1.1 204 No Content\\r\\nServer: x\\r\\n\\r\\n").status
    204
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = ["MAX_HEAD_BYTES", "ResponseHead", "head_end", "parse_url", "request"]

MAX_HEAD_BYTES = 16 * 1024  # a response head past this is refused (a broken or hostile receiver)


def parse_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, target)`` of an http(s) URL; ValueError saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must start with http:// or https://, not {url[:40]!r}")
    if not parts.hostname:
        raise ValueError(f"has no host: {url[:80]!r}")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ValueError("must not hold spaces or control characters")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), target


def request(method: str, host: str, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """The request's bytes: head (with Host, Content-Length, Connection: close) and body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}", "Connection: close"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def head_end(data: bytes) -> int:
    """Where the head ends in ``data`` (the index past its blank line), or -1 while incomplete."""
    end = data.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


class ResponseHead(NamedTuple):
    """A response's status and headers (names lower-cased)."""

    status: int
    reason: str
    headers: dict[str, str]

    @classmethod
    def parse(cls, data: bytes) -> ResponseHead:
        """Parse a complete head (see :func:`head_end`); ValueError if it is not HTTP."""
        text = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        status_line, *lines = text.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (parts[1].isdigit() and len(parts[1]) == 3):
            raise ValueError(f"not an HTTP/1.x status line: {status_line[:60]!r}")
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return cls(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)

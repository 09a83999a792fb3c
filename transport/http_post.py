"""One HTTP POST over a cooperative gevent socket (the I/O half of ``transport.http_client``).

The node's hub is not monkey-patched, so the standard library's clients
would block every greenlet on it; this one uses ``gevent.socket`` (and
``gevent.ssl`` for https) and never blocks the hub. Everything about the
bytes is in ``transport.http_client``; this module only connects, writes,
and reads until the response head is complete.
"""

from __future__ import annotations

import gevent
import gevent.socket
import gevent.ssl

from .http_client import MAX_HEAD_BYTES, ResponseHead, head_end, parse_url, request

__all__ = ["post"]


def post(url: str, headers: list[tuple[str, str]], body: bytes, timeout: float) -> int:
    """POST ``body`` to ``url``; the response's status.

    Raises OSError (refused, reset, DNS, TLS), ``gevent.Timeout`` past
    ``timeout`` seconds for the whole exchange, or ValueError for an answer
    that is not HTTP: for the caller all of them mean "no answer".
    """
    scheme, host, port, target = parse_url(url)
    host_header = host if port in (80, 443) else f"{host}:{port}"
    with gevent.Timeout(timeout):
        sock = gevent.socket.create_connection((host, port))
        try:
            if scheme == "https":
                sock = gevent.ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            sock.sendall(request("POST", host_header, target, headers, body))
            data = b""
            while head_end(data) < 0:
                if len(data) > MAX_HEAD_BYTES:
                    raise ValueError("response head too large")
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("connection closed before the response head")
                data += chunk
            return ResponseHead.parse(data).status
        finally:
            sock.close()

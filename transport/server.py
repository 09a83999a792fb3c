"""The node's listening socket: one port for WebSocket clients and HTTP.

Routes: ``/app/{key}`` (WebSocket, Pusher protocol), ``/apps/{id}/...`` (the
Pusher HTTP API, when the node provides one), ``/`` and ``/health`` (200 for
load balancers). Everything else is 404. The server is gevent's pywsgi with
gevent-websocket's handler doing the upgrade.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

from .websocket import serve_websocket

__all__ = ["NodeWSGIApp", "http_api_wsgi", "make_server"]

log = logging.getLogger(__name__)


def _text(start_response: Callable, status: str, body: str) -> list[bytes]:
    data = body.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


class NodeWSGIApp:
    """The WSGI application behind the node's port."""

    def __init__(
        self,
        lookup_app: Callable[[str], Any],
        connect: Callable[..., Any],
        http_api: Callable[[dict, Callable], list[bytes]] | None = None,
    ) -> None:
        self.lookup_app = lookup_app
        self.connect = connect
        self.http_api = http_api
        # Adopted WebSocket connections not yet closed, per app id: the glue's
        # own bookkeeping, read synchronously for connection quotas.
        self.sockets_by_app: dict[str, int] = {}

    @property
    def open_sockets(self) -> int:
        """WebSocket connections open on this port, all apps."""
        return sum(self.sockets_by_app.values())

    def admit(self, app: Any) -> bool:
        """False when ``app`` is at its ``max_connections``."""
        return app.max_connections is None or self.sockets_by_app.get(app.id, 0) < app.max_connections

    def opened(self, app: Any) -> None:
        """The WebSocket glue took a socket of ``app`` over."""
        self.sockets_by_app[app.id] = self.sockets_by_app.get(app.id, 0) + 1

    def closed(self, app: Any) -> None:
        """The WebSocket glue closed a socket of ``app``."""
        self.sockets_by_app[app.id] -= 1

    @property
    def current_app(self) -> NodeWSGIApp:
        # gevent-websocket calls ``current_app.on_close`` as it tears a socket
        # down; without this it builds a throwaway class on every close.
        return self

    def on_close(self, *reason: Any) -> None:
        """Nothing to do: the connection's session already handled its end."""

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        ws = environ.get("wsgi.websocket")
        if ws is not None:
            serve_websocket(ws, environ, self.lookup_app, self.connect, self)
            return []
        path = environ.get("PATH_INFO", "")
        if path in ("/", "/health", "/ready"):
            return _text(start_response, "200 OK", "OK")
        if path.startswith("/app/"):
            return _text(start_response, "426 Upgrade Required", "Connect with a WebSocket client")
        if path.startswith(("/apps/", "/users/")) and self.http_api is not None:
            return self.http_api(environ, start_response)
        return _text(start_response, "404 Not Found", f"Not found: {path}")


MAX_HTTP_BODY_BYTES = 1 << 20


def http_api_wsgi(apps: Any, backend: Any) -> Callable[[dict, Callable], list[bytes]]:
    """WSGI glue for ``transport.http_api``: read the body (bounded), answer JSON."""
    import time

    from .http_api import Response, handle_request

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0:
            response = Response(400, {"error": "Invalid Content-Length"})
        elif length > MAX_HTTP_BODY_BYTES:
            response = Response(413, {"error": f"Body over {MAX_HTTP_BODY_BYTES} bytes"})
        else:
            body = environ["wsgi.input"].read(length) if length else b""
            response = handle_request(
                environ.get("REQUEST_METHOD", "GET"),
                environ.get("PATH_INFO", ""),
                environ.get("QUERY_STRING", ""),
                body,
                apps,
                backend,
                time.time(),
            )
        data = response.encoded()
        reason = _REASONS.get(response.status, "Error")
        start_response(
            f"{response.status} {reason}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]

    return app


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 503: "Service Unavailable"}


class _QuietHandler(WebSocketHandler):
    # pywsgi logs every request at INFO through print-like writes; route to logging.
    def log_request(self) -> None:
        log.debug(self.format_request())


def make_server(listener: Any, app: Callable, *, backlog: int = 2048) -> WSGIServer:
    """A pywsgi server with WebSocket upgrade on ``listener`` ((host, port) or a socket)."""
    return WSGIServer(listener, app, handler_class=_QuietHandler, log=None, error_log=log, backlog=backlog)

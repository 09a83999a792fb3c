"""What the node's port answers: the routes behind ``transport.server``.

``/app/{key}`` (WebSocket upgrade, Pusher protocol), ``/apps/{id}/...`` and
``/users/...`` (the Pusher HTTP API), ``/`` ``/health`` ``/ready`` (200 for
load balancers; the server answers 503 to everything while the node drains).
Everything else is 404. The routes also keep the per-app count of open
WebSocket connections that quotas (``max_connections``) are checked against.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import gevent

from . import protocol
from .config import AppTable
from .errors import ProtocolError
from .http import Request
from .http_api import Backend, handle_request
from .server import Reply
from .websocket import serve_websocket

__all__ = ["NodeRoutes"]

_JSON = "application/json"


class NodeRoutes:
    """The node's :class:`~transport.server.Router`."""

    def __init__(
        self,
        apps: AppTable,
        connect: Callable[..., Any],
        backend: Backend | None = None,
        quota: Any = None,
    ) -> None:
        self.apps = apps
        self.connect = connect
        self.backend = backend
        # On a cluster, connection quotas are decided by every node together:
        # quota.admit(app) -> bool (may wait, bounded), quota.release(app_id).
        self.quota = quota
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
        if self.quota is not None and app.max_connections is not None:
            self.quota.release(app.id)

    def handle(self, request: Request, body: bytes) -> Reply:
        path = request.path
        if path in ("/", "/health", "/ready"):
            return Reply(200, b"OK")
        if path.startswith("/app/"):
            return Reply(426, b"Connect with a WebSocket client", headers=(("Upgrade", "websocket"),))
        if path.startswith(("/apps/", "/users/")) and self.backend is not None:
            answer = handle_request(request.method, path, request.query, body, self.apps, self.backend, time.time())
            return Reply(answer.status, answer.encoded(), _JSON)
        return Reply(404, f"Not found: {path}".encode())

    def upgrade(self, request: Request, sock: socket.socket, early: bytes) -> None:
        if self.quota is not None:
            app = self._app_of(request)
            if app is not None and app.max_connections is not None and app.enabled:
                gevent.spawn(self._upgrade_when_admitted, request, sock, early, app)  # a wait: not in a callback
                return
        serve_websocket(sock, request.path, request.query, early, self.apps.by_key, self.connect, self)

    def _upgrade_when_admitted(self, request: Request, sock: socket.socket, early: bytes, app: Any) -> None:
        admitted = self.quota.admit(app)
        serve_websocket(sock, request.path, request.query, early, self.apps.by_key, self.connect, self, admitted)

    def _app_of(self, request: Request) -> Any:
        try:
            return self.apps.by_key(protocol.check_connect_request(request.path, request.query))
        except ProtocolError:
            return None  # serve_websocket says why

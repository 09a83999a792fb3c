"""What the node's port answers: the routes behind ``transport.server``.

``/app/{key}`` (WebSocket upgrade, Pusher protocol), ``/apps/{id}/...`` and
``/users/...`` (the Pusher HTTP API), and the probes, unauthenticated, for GET
and HEAD: ``/health`` (alive: 200 while the process serves HTTP at all),
``/ready`` (200 while serving, 503 saying why while the node drains or its
cluster adapter is disconnected) and ``/usage`` (JSON: connections, channels,
memory, node and worker). While the node drains the server answers 503 to
everything else (``/`` included). Everything else is 404. The routes also
keep the per-app count of open WebSocket connections that quotas
(``max_connections``) are checked against, and log each HTTP API 4xx once
(rate-limited per client address, ``transport.ops_log``).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import unquote

import gevent
import ujson

from . import protocol
from .config import App, AppTable
from .errors import ProtocolError
from .http import Request
from .http_api import Backend, handle_request
from .ops_log import OpsLog
from .server import Reply
from .websocket import Session, serve_websocket
from .writer import SocketWriter

__all__ = ["PROBES", "Health", "NodeRoutes", "Quota"]

log = logging.getLogger(__name__)

_JSON = "application/json"
#: Paths answered even while the node drains (load balancers and orchestrators read them then).
PROBES = frozenset({"/health", "/ready", "/usage"})
_PROBE_METHODS = ("GET", "HEAD")


class Health(Protocol):
    """What the probes ask the node (on its hub; may wait, bounded)."""

    def not_ready(self) -> str | None:
        """None while the node serves; else why it does not (draining, adapter disconnected)."""

    def usage(self) -> dict[str, Any]:
        """The ``/usage`` document."""


class Quota(Protocol):
    """Connection quotas decided by every node of a cluster together (``actors.cluster.Cluster``)."""

    def admit(self, app: App) -> bool:
        """May one more client of ``app`` connect? (May wait, bounded.)"""

    def release(self, app_id: str) -> None:
        """A client of ``app_id`` that was admitted has gone."""


class NodeRoutes:
    """The node's :class:`~transport.server.Router`."""

    def __init__(
        self,
        apps: AppTable,
        connect: Callable[[App, SocketWriter], Session],
        backend: Backend | None = None,
        quota: Quota | None = None,
        health: Health | None = None,
        ops: OpsLog | None = None,
    ) -> None:
        self.apps = apps
        self.connect = connect
        self.backend = backend
        self.quota = quota  # on a cluster: every node decides the connection quotas together
        self.health = health
        self.ops = ops  # refusal lines, rate-limited per client address (None: DEBUG only)
        # Adopted WebSocket connections not yet closed, per app id: the glue's
        # own bookkeeping, read synchronously for connection quotas.
        self.sockets_by_app: dict[str, int] = {}

    @property
    def open_sockets(self) -> int:
        """WebSocket connections open on this port, all apps."""
        return sum(self.sockets_by_app.values())

    def admit(self, app: App) -> bool:
        """False when ``app`` is at its ``max_connections``."""
        return app.max_connections is None or self.sockets_by_app.get(app.id, 0) < app.max_connections

    def opened(self, app: App) -> None:
        """The WebSocket glue took a socket of ``app`` over."""
        self.sockets_by_app[app.id] = self.sockets_by_app.get(app.id, 0) + 1

    def closed(self, app: App) -> None:
        """The WebSocket glue closed a socket of ``app``."""
        self.sockets_by_app[app.id] -= 1
        if self.quota is not None and app.max_connections is not None:
            self.quota.release(app.id)

    def handle(self, request: Request, body: bytes, remote: str = "unknown") -> Reply:
        path = request.path
        if path in PROBES:
            return self._probe(request)
        if path == "/":
            return Reply(200, b"OK")
        if path.startswith("/app/"):
            return Reply(426, b"Connect with a WebSocket client", headers=(("Upgrade", "websocket"),))
        if path.startswith(("/apps/", "/users/")) and self.backend is not None:
            answer = handle_request(request.method, path, request.query, body, self.apps, self.backend, time.time())
            if 400 <= answer.status < 500:
                self._refused_api(request, answer.status, answer.body, remote)
            return Reply(answer.status, answer.encoded(), _JSON)
        return Reply(404, f"Not found: {path}".encode())

    def _probe(self, request: Request) -> Reply:
        if request.method not in _PROBE_METHODS:
            return _json(405, {"error": f"Use GET or HEAD for {request.path}"}, (("Allow", "GET, HEAD"),))
        if request.path == "/health":
            return _json(200, {"ok": True})
        if request.path == "/ready":
            why = self.health.not_ready() if self.health is not None else None
            return _json(200, {"ready": True}) if why is None else _json(503, {"ready": False, "reason": why})
        return _json(200, self.health.usage() if self.health is not None else {})

    def _refused_api(self, request: Request, status: int, body: Any, remote: str) -> None:
        """The one line an HTTP API 4xx gets (the reason is the error the client reads)."""
        if self.ops is None:
            return
        reason = body.get("error", "") if isinstance(body, dict) else ""
        parts = request.path.split("/", 3)  # "", "apps", id, rest
        app_id = unquote(parts[2]) if parts[1] == "apps" and len(parts) > 2 else None
        # 401 and 403 are a wrong secret or a switched-off app: worth a warning to whoever runs the node.
        level = logging.WARNING if status in (401, 403) else logging.INFO
        message = f"HTTP API {request.method} {request.path} from {remote} refused ({status}): {reason}"
        self.ops.note(log, level, remote, message, kind="api_refused", status=status, app_id=app_id,
                      method=request.method, path=request.path, reason=reason)

    def upgrade(self, request: Request, sock: socket.socket, early: bytes) -> None:
        if self.quota is not None:
            app = self._app_of(request)
            if app is not None and app.max_connections is not None and app.enabled:
                gevent.spawn(self._upgrade_when_admitted, request, sock, early, app)  # a wait: not in a callback
                return
        serve_websocket(sock, request.path, request.query, early, self.apps.by_key, self.connect, self, ops=self.ops)

    def _upgrade_when_admitted(self, request: Request, sock: socket.socket, early: bytes, app: App) -> None:
        assert self.quota is not None  # spawned by upgrade() only with one
        admitted = self.quota.admit(app)
        serve_websocket(sock, request.path, request.query, early, self.apps.by_key, self.connect, self, admitted,
                        ops=self.ops)

    def _app_of(self, request: Request) -> App | None:
        try:
            return self.apps.by_key(protocol.check_connect_request(request.path, request.query))
        except ProtocolError:
            return None  # serve_websocket says why


def _json(status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, ujson.dumps(body, escape_forward_slashes=False).encode("utf-8"), _JSON, headers)

"""The Prometheus endpoint: ``GET /metrics`` on its own port.

Before each scrape it asks the metrics actor to flush, so what a scrape shows
includes every count told so far. It runs on the same bounded HTTP server as
the node's main port (``transport.server``).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .config import ServerLimits
from .http import Request
from .server import HttpServer, Reply

__all__ = ["MetricsRoutes", "make_metrics_server"]


class MetricsRoutes:
    """Answers ``/metrics`` (and ``/``) from a registry, flushing first."""

    def __init__(self, registry: CollectorRegistry, flush: Callable[[], None]) -> None:
        self.registry = registry
        self.flush = flush

    def handle(self, request: Request, body: bytes, remote: str = "unknown") -> Reply:
        if request.path not in ("/metrics", "/"):
            return Reply(404, b"Not found: try /metrics")
        self.flush()  # the node's flush is bounded and never raises
        return Reply(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def upgrade(self, request: Request, sock: socket.socket, early: bytes) -> None:
        sock.close()  # no WebSockets here


def make_metrics_server(
    listener: Any,
    registry: CollectorRegistry,
    flush: Callable[[], None],
    limits: ServerLimits | None = None,
    tls: ssl.SSLContext | None = None,
) -> HttpServer:
    """An HTTP server (HTTPS with ``tls``) answering ``/metrics`` from ``registry`` after ``flush()``."""
    return HttpServer(listener, MetricsRoutes(registry, flush), limits, tls=tls)

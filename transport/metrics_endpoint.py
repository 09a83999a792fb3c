"""The Prometheus endpoint: ``GET /metrics`` on its own port.

Before each scrape it asks the metrics actor to flush, so what a scrape shows
includes every count told so far.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from gevent.pywsgi import WSGIServer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["make_metrics_server"]

log = logging.getLogger(__name__)


def make_metrics_server(listener: Any, registry: CollectorRegistry, flush: Callable[[], None]) -> WSGIServer:
    """A pywsgi server answering ``/metrics`` from ``registry`` after ``flush()``."""

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found: try /metrics"]
        try:
            flush()
        except Exception:  # a slow flush must not hide the metrics we have
            log.warning("metrics flush failed before scrape", exc_info=True)
        body = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]

    return WSGIServer(listener, app, log=None, error_log=log)

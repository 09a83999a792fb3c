"""Serve a WSGI app with gevent.pywsgi on 127.0.0.1 port 0, on a hub thread of its own.

The server gets its own gevent hub (``actors.hub.HubThread``) so it answers
while the test thread blocks on ordinary waits (a pusher-js driver's queue,
``http.client``)::

    with serve_wsgi(app) as base_url:       # "http://127.0.0.1:PORT"
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from gevent.pywsgi import WSGIServer

from actors.hub import HubThread

__all__ = ["serve_wsgi"]


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Yield the base URL of ``app`` served on a fresh port; stop it afterwards (bounded)."""
    hub = HubThread("test-wsgi")

    def start() -> WSGIServer:
        server = WSGIServer(("127.0.0.1", 0), app, log=None)
        server.start()
        return server

    server = hub.start(start)
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        hub.call(server.stop, 1, timeout=5)
        hub.stop(timeout=5)

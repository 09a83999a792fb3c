"""What the node's probes answer: ``/ready`` and ``/usage`` (see ``transport.routes``).

``/health`` needs nothing from here: answering at all is the proof of life.
``/ready`` is 503 while the node drains (from ``node.stop()`` or SIGTERM until
the process exits) and while its cluster adapter is disconnected or has not
re-synced presence since it came back, so a load balancer sends new clients
elsewhere meanwhile. ``/usage`` describes this process: a worker of
``actorcast serve --workers N`` answers for itself, which is how an operator
sees the kernel spreading connections.

Runs in the HTTP request's greenlet on the node's hub; the one wait (the
app actors' counts) is bounded.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from pykka import ActorDeadError, Future, Timeout

from .bus import describe
from .refs import AppRef, app_proxy

if TYPE_CHECKING:
    from transport.server import HttpServer

    from .cluster import Cluster

__all__ = ["NodeHealth", "rss_bytes"]

ASK_TIMEOUT = 2.0  # for the app actors' counts; an app that does not answer in time shows null


class NodeHealth:
    """The node's side of ``transport.routes.Health``."""

    def __init__(self, node_id: str, worker: int | None, cluster: Cluster, app_actors: dict[str, AppRef]) -> None:
        self.node_id = node_id
        self.worker = worker
        self.cluster = cluster
        self.app_actors = app_actors  # the node's table: restarted actors show up here
        self.server: HttpServer | None = None  # the main port's, once it listens
        self.started = time.monotonic()

    def serving(self, server: HttpServer) -> None:
        """The main port is about to listen through ``server`` (its ``draining`` flag is read here)."""
        self.server = server
        self.started = time.monotonic()

    def not_ready(self) -> str | None:
        """None while the node serves; otherwise why not, for the ``/ready`` body."""
        if self.server is None or self.server.draining:
            return "draining: the node is shutting down"
        cluster = self.cluster
        if not cluster.connected:
            return f"the cluster adapter ({describe(cluster.bus)}) is disconnected"
        if not cluster.in_sync:
            return f"the cluster adapter ({describe(cluster.bus)}) reconnected; presence is being re-synced"
        return None

    def usage(self) -> dict[str, Any]:
        """This process: its connections and channels per app, memory, node, worker, uptime."""
        futures: dict[str, Future[tuple[int, int]] | None] = {}
        for app_id, ref in list(self.app_actors.items()):
            try:
                futures[app_id] = app_proxy(ref).usage()
            except ActorDeadError:  # restarting after a bug, or the node stops
                futures[app_id] = None
        connections: dict[str, int | None] = {}
        channels: dict[str, int | None] = {}
        deadline = time.monotonic() + ASK_TIMEOUT
        for app_id, future in futures.items():
            counts = None
            if future is not None:
                try:
                    counts = future.get(timeout=max(deadline - time.monotonic(), 0.01))
                except (ActorDeadError, Timeout):
                    counts = None
            connections[app_id], channels[app_id] = counts if counts is not None else (None, None)
        cluster = self.cluster
        return {
            "node_id": self.node_id,
            "worker": None if self.worker is None else {"index": self.worker, "pid": os.getpid()},
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "memory": {"rss_bytes": rss_bytes()},
            "connections": {"total": _total(connections), "apps": connections},
            "channels": {"total": _total(channels), "apps": channels},
            "cluster": None if cluster.solo else {
                "adapter": describe(cluster.bus), "connected": cluster.connected, "nodes": len(cluster.live_nodes()),
            },
        }


def rss_bytes() -> int | None:
    """This process's resident memory in bytes (its peak where there is no /proc), or None."""
    try:
        with open("/proc/self/statm", "rb") as f:  # procfs: answered from memory, never blocks
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak is the best there is
        return _peak_rss()


def _peak_rss() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def _total(counts: dict[str, int | None]) -> int:
    return sum(count for count in counts.values() if count is not None)

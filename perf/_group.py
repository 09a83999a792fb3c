"""The node under test: one node host, N workers sharing a port, or K nodes joined by Redis.

::

    single    one node host (perf/_node_host.py): a Node, no bus
    workers   N node hosts on ONE port (SO_REUSEPORT; the kernel spreads the
              clients), joined by a relay host (perf/_relay_host.py) over a
              Unix socket: what ``actorcast serve --workers N`` starts, each
              worker a fresh process with the shared port, the relay's bus
              and no metrics port (``PROMETHEUS_MULTIPROC_DIR`` set, as the
              parent sets it); the driver holds the port bound, not listening,
              as the parent does
    redis     K node hosts, each on its own port, joined over Redis
              (``--adapter``), each with a bus channel prefix of this group

The first host publishes (``broadcast`` / ``rate``); where the clients
connect is :meth:`Group.client_ports`. Everything waits with a bound.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import urllib.parse
import uuid
from typing import Any

from perf._proc import Child, ChildError, spawn, wait_events

__all__ = ["Group", "group_label", "start_group"]

START_TIMEOUT = 60.0
PEERS_TIMEOUT = 15.0


class Group:
    """Started node hosts (and their relay), as one node under test."""

    def __init__(self, kind: str, count: int) -> None:
        self.kind, self.count = kind, count
        self.hosts: list[Child] = []
        self.started: list[dict] = []
        self.relay: Child | None = None
        self.reservation: socket.socket | None = None
        self.dir = ""

    @property
    def label(self) -> str:
        return group_label(self.kind, self.count)

    @property
    def publisher(self) -> Child:
        return self.hosts[0]

    @property
    def port(self) -> int:
        """The publisher's port (for every host, with workers)."""
        return self.started[0]["port"]

    @property
    def metrics_url(self) -> str | None:
        """The single node's /metrics (a group's histograms time different things on each node)."""
        if self.kind != "single":
            return None
        return f"http://127.0.0.1:{self.started[0]['metrics_port']}/metrics"

    def client_ports(self, n: int, placement: str) -> list[int]:
        """Client i's port: the one port, or over Redis round robin over the nodes
        (``remote``: all but the publisher, so every delivery crosses the bus; ``all``: every node)."""
        if self.kind != "redis" or self.count == 1:
            return [self.port] * n
        ports = [s["port"] for s in self.started]
        targets = ports[1:] if placement == "remote" else ports
        return [targets[i % len(targets)] for i in range(n)]

    def wait_peers(self, timeout: float = PEERS_TIMEOUT) -> None:
        """Until every host hears all the others on the bus (so nothing published is missed)."""
        deadline = time.monotonic() + timeout
        for host in self.hosts:
            while True:
                reply = host.request(10, op="peers")
                if reply["connected"] and len(reply["peers"]) >= self.count - 1:
                    break
                if time.monotonic() > deadline:
                    raise ChildError(f"{host.name} hears {len(reply['peers'])} of {self.count - 1} other nodes "
                                     f"after {timeout:.0f} s (bus connected: {reply['connected']})")
                time.sleep(0.05)  # bounded poll: a node learns its peers from their heartbeats

    def stop(self) -> float | None:
        """Stop every host (drain), then the relay; the slowest host's stop seconds."""
        slowest = None
        try:
            for host in self.hosts:
                host.send(op="stop")
            stops = wait_events(self.hosts, lambda c, e: e["ev"] == "stop", 30)
            slowest = max(e["seconds"] for _, e in stops)
        finally:
            self.kill(grace=5)
        return slowest

    def kill(self, grace: float = 0.0) -> None:
        for child in [*self.hosts, *([self.relay] if self.relay else [])]:
            child.kill(grace)
        if self.reservation is not None:
            self.reservation.close()
            self.reservation = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""


def group_label(kind: str, count: int) -> str:
    """``"1 node"``, ``"2 workers"``, ``"3 nodes over Redis"``."""
    return {"single": "1 node", "workers": f"{count} workers", "redis": f"{count} nodes over Redis",
            "floor": f"{count} floor nodes over Redis"}[kind]


def start_group(opts: Any, kind: str, count: int, *, hub_timer: bool = True) -> Group:
    """Start ``count`` node hosts of ``kind`` and wait until they listen (and hear each other)."""
    group = Group(kind, count)
    base = ["--key", opts.key, "--secret", opts.secret, *([] if hub_timer else ["--no-hub-timer"])]
    try:
        if kind == "single":
            group.hosts.append(spawn("node-host", "perf._node_host", *base))
        elif kind == "workers":
            port = _reserve_port(group, opts.host)
            group.dir = tempfile.mkdtemp(prefix="perf-workers-")
            path, metrics = os.path.join(group.dir, "bus.sock"), os.path.join(group.dir, "metrics")
            os.mkdir(metrics)
            group.relay = spawn("relay", "perf._relay_host", path)
            wait_events([group.relay], lambda c, e: e["ev"] == "started", START_TIMEOUT)
            for k in range(1, count + 1):
                group.hosts.append(spawn(f"worker-{k}", "perf._node_host", *base, "--port", str(port), "--reuse-port",
                                         "--metrics-port", "-1", "--adapter", f"workers:{path}",
                                         env={"PROMETHEUS_MULTIPROC_DIR": metrics}))
        elif kind == "redis":
            prefix = f"perf-{uuid.uuid4().hex[:8]}"
            for k in range(1, count + 1):
                group.hosts.append(spawn(f"node-{k}", "perf._node_host", *base, "--adapter", opts.adapter_url,
                                         "--bus-prefix", prefix))
        elif kind == "floor":  # the rate run's floor (perf._rate_floor): same Redis, plain sockets
            redis = urllib.parse.urlsplit(opts.adapter_url)
            channel = f"perf-floor-{uuid.uuid4().hex[:8]}"
            for k in range(1, count + 1):
                group.hosts.append(spawn(f"floor-{k}", "perf._rate_floor", "--redis",
                                         f"{redis.hostname}:{redis.port or 6379}", "--channel", channel))
        else:
            raise ValueError(f"unknown node group {kind!r}")
        events = wait_events(group.hosts, lambda c, e: e["ev"] == "started", START_TIMEOUT)
        by_host = {id(child): event for child, event in events}
        group.started = [by_host[id(host)] for host in group.hosts]
        if count > 1:
            group.wait_peers()
    except BaseException:
        group.kill()
        raise
    return group


def _reserve_port(group: Group, host: str) -> int:
    """Bind (never listen) a SO_REUSEPORT socket, as the ``--workers`` parent does: the workers' port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    group.reservation = sock
    return sock.getsockname()[1]

"""A running ``actorcast serve --workers N`` as tests see it, and what /proc says about it.

Which worker holds a client is read from /proc: the server side of the
client's TCP connection (``/proc/net/tcp``, matched by ports) is an inode,
and exactly one worker has ``socket:[inode]`` among its open descriptors.
Every wait is bounded. The fixtures ``workers`` and ``clients`` (conftest.py)
start them and clean up.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from tests.e2e.test_cli import Serve, handlers_installed
from tests.wsclient import Closed, PusherClient
from transport.http_signing import sign_request

__all__ = ["CONNECTIONS", "OPENED", "PARENT_LISTENING", "TIMEOUT", "Workers", "alive", "events_until", "free_port", "spread", "trigger_via",
           "wait_until"]

TIMEOUT = 10.0
PARENT_LISTENING = re.compile(
    r"actors\.workers: actorcast listening on ws://(?P<host>[\d.]+):(?P<port>\d+)/app/\S* "
    r"\(metrics (?:on )?(?P<metrics>\S+)\), (?P<workers>\d+) workers"
)
CONNECTIONS = re.compile(r'^actorcast_connections\{app_id="1"\} (\S+)$', re.M)
OPENED = re.compile(r'^actorcast_connections_opened_total\{app_id="1"\} (\S+)$', re.M)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, message or f"condition not met within {timeout} s"
        time.sleep(0.02)
    return value


class Workers:
    """A running ``actorcast serve --workers N`` and what /proc says about it."""

    def __init__(self, serve: Callable[..., Serve], count: int | str = 2, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        flags = ["--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", "0", *args]
        if "ACTORCAST_WORKERS" not in (env or {}):
            flags += ["--workers", str(count)]
        self.serve = serve(*flags, env=env)
        self.proc = self.serve.proc
        match = self.serve.wait_for(PARENT_LISTENING, timeout=30)
        assert int(match["port"]) == self.port
        self.count = int(match["workers"])
        self.metrics_url = match["metrics"]
        wait_until(lambda: handlers_installed(self.proc.pid, signal.SIGINT, signal.SIGTERM))
        wait_until(lambda: len(self.pids()) == self.count, message="workers did not all start")

    def pids(self) -> set[int]:
        """The parent's live children (its workers)."""
        children = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:  # gone meanwhile
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                children.add(int(entry))
        return children

    def owners(self, client_ports: list[int]) -> dict[int, int | None]:
        """client port -> pid of the worker holding the server side of that connection."""
        inodes: dict[int, str] = {}
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(local.split(":")[1], 16) == self.port:
                    inodes[int(remote.split(":")[1], 16)] = inode
        holders: dict[str, int] = {}
        for pid in self.pids():
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        holders[target[8:-1]] = pid
            except OSError:  # the worker just died
                continue
        return {port: holders.get(inodes.get(port, "")) for port in client_ports}

    def owner_of(self, sock: socket.socket) -> int:
        port = sock.getsockname()[1]
        return wait_until(lambda: self.owners([port])[port], message=f"no worker holds client port {port}")

    def metric(self, pattern: re.Pattern) -> float | None:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            match = pattern.search(response.read().decode())
        return float(match[1]) if match else None

    def warnings(self) -> list[str]:
        return [line for line in self.serve.output if " WARNING " in line]


def spread(node: Workers, group: list[PusherClient]) -> dict[int, list[PusherClient]]:
    """The clients by the worker pid holding each (every client accounted for)."""
    ports = [c.ws.sock.getsockname()[1] for c in group]

    def all_held() -> dict[int, int | None] | None:
        owners = node.owners(ports)
        return owners if all(owners.values()) else None

    owners = wait_until(all_held, message="some clients are held by no worker")
    by_worker: dict[int, list[PusherClient]] = {}
    for client, port in zip(group, ports):
        by_worker.setdefault(owners[port], []).append(client)
    return by_worker


def trigger_via(node: Workers, pid: int, socket_id: str | None, event: str, data: str) -> None:
    """POST one event over an HTTP connection that worker ``pid`` accepted."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=TIMEOUT)
        conn.connect()
        if node.owner_of(conn.sock) == pid:
            break
        conn.close()
        assert time.monotonic() < deadline, f"no HTTP connection reached worker {pid}"
    fields = {"name": event, "channel": "news", "data": data}
    if socket_id is not None:
        fields["socket_id"] = socket_id
    body = json.dumps(fields).encode()
    query = sign_request("POST", "/apps/1/events", {}, "app-key", "app-secret", body)
    try:
        conn.request("POST", "/apps/1/events?" + urlencode(query), body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
    finally:
        conn.close()


def events_until(client: PusherClient, last: set[str]) -> list[tuple[str, str]]:
    """(event, data) of every event on ``news`` until each of ``last`` arrived (bounded)."""
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + TIMEOUT
    waiting = set(last)
    while waiting:
        try:
            message = client.recv(timeout=max(deadline - time.monotonic(), 0.01))
        except Closed as closed:
            raise AssertionError(f"closed ({closed.code}) before {waiting}") from closed
        if message.get("channel") == "news" and not message["event"].startswith("pusher"):
            seen.append((message["event"], message["data"]))
            waiting.discard(message["event"])
    return seen

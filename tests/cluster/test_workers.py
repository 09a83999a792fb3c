"""``actorcast serve --workers N``: real worker processes on one port, real clients.

Which worker holds a client is read from /proc: the server side of the
client's TCP connection (``/proc/net/tcp``, matched by ports) is an inode,
and exactly one worker has ``socket:[inode]`` among its open descriptors.
Every wait is bounded; the port is picked free by the test and passed
explicitly (the parent would resolve ``--port 0`` to one port for all too).
"""

from __future__ import annotations

import http.client
import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Any, Callable
from urllib.parse import urlencode

import pytest

from actors.node import Node
from tests.e2e.test_cli import Serve, handlers_installed, run_cli
from tests.wsclient import Closed, PusherClient
from transport.http_signing import sign_request

TIMEOUT = 10.0
PARENT_LISTENING = re.compile(
    r"actors\.workers: actorcast listening on ws://(?P<host>[\d.]+):(?P<port>\d+)/app/\S* "
    r"\(metrics (?:on )?(?P<metrics>\S+)\), (?P<workers>\d+) workers"
)
CONNECTIONS = re.compile(r'^actorcast_connections\{app_id="1"\} (\S+)$', re.M)
OPENED = re.compile(r'^actorcast_connections_opened_total\{app_id="1"\} (\S+)$', re.M)

_PARAMETERS = inspect.signature(Node).parameters
needs_reuse_port = pytest.mark.skipif("reuse_port" not in _PARAMETERS, reason="Node(reuse_port=...) not there yet")
needs_bus = pytest.mark.skipif(
    "reuse_port" not in _PARAMETERS or not ({"adapter", "bus"} & set(_PARAMETERS)),
    reason="Node(adapter=<bus>) not there yet: workers cannot reach each other",
)


# --- helpers -----------------------------------------------------------------------


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


@pytest.fixture
def workers():
    """``workers(count, *flags, env=None)``: a started ``serve --workers``, stopped after the test.

    The parent's temp dir (bus socket, metrics files) goes under a TMPDIR of
    the test's, removed afterwards even when a test killed the parent.
    """
    started: list[Serve] = []
    tmp = tempfile.mkdtemp(prefix="aw-")

    def serve(*args: str, env: dict[str, str] | None = None) -> Serve:
        started.append(Serve(*args, env={"TMPDIR": tmp, **(env or {})}))
        return started[-1]

    yield lambda count=2, *args, env=None: Workers(serve, count, *args, env=env)
    for process in started:
        if process.proc.poll() is None:
            process.proc.terminate()
            try:
                process.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def clients():
    opened: list[PusherClient] = []

    def open_(port: int, n: int = 1) -> list[PusherClient]:
        new = [PusherClient.connect(port, timeout=TIMEOUT) for _ in range(n)]
        opened.extend(new)
        return new

    yield open_
    for client in opened:
        client.ws.shutdown()


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


# --- one port, many workers --------------------------------------------------------


@needs_reuse_port
def test_clients_land_on_different_workers_of_one_port(workers, clients):
    node = workers(2)
    group = clients(node.port, 20)
    by_worker = spread(node, group)
    assert set(by_worker) == node.pids() and len(by_worker) == 2  # 2**-19 odds of a false failure
    for client in group:
        client.subscribe("news")
        client.ping()
    assert len({c.socket_id for c in group}) == 20


@needs_reuse_port
def test_a_killed_worker_is_replaced_and_the_port_keeps_serving(workers, clients):
    node = workers(2)
    victim, survivor = sorted(node.pids())
    os.kill(victim, signal.SIGKILL)
    died = node.serve.wait_for(re.compile(rf"worker (\d) \(pid {victim}\) died \(killed by SIGKILL\)"))
    for client in clients(node.port, 5):  # served meanwhile (by the survivor, or already the new one)
        client.ping()
    node.serve.wait_for(re.compile(rf"worker {died[1]} restarted \(pid \d+\)"))
    replacement = wait_until(lambda: (node.pids() - {survivor}) or None, message="no replacement worker")
    assert victim not in replacement and len(node.pids()) == 2
    # The replacement takes its share of new connections.
    deadline = time.monotonic() + TIMEOUT
    while True:
        (client,) = clients(node.port)
        if node.owner_of(client.ws.sock) in replacement:
            break
        assert time.monotonic() < deadline, "the replacement worker never got a connection"
    client.subscribe("news")
    assert len([w for w in node.warnings() if "died" in w]) == 1, node.warnings()


@needs_reuse_port
def test_sigterm_drains_every_worker_and_exits_0_within_the_grace(workers, clients):
    node = workers(2)
    group = clients(node.port, 10)
    assert len(spread(node, group)) == 2
    pids = node.pids()
    started = time.monotonic()
    assert node.serve.stop(signal.SIGTERM, timeout=15) == 0
    assert time.monotonic() - started < 5.0 + 5.0  # the default grace, plus the parent's margin
    for client in group:
        code, _ = client.expect_close(timeout=1)  # already closed: the frame is waiting in the buffer
        assert code == 4200
    assert not any("Traceback" in line for line in node.serve.output), "".join(node.serve.output)
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", node.port), timeout=2).close()


@needs_reuse_port
def test_workers_whose_parent_is_killed_stop_instead_of_serving_unsupervised(workers):
    node = workers(2)
    pids = node.pids()
    node.proc.kill()
    node.proc.wait(timeout=TIMEOUT)
    wait_until(lambda: not any(alive(pid) for pid in pids), message="orphaned workers kept running")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", node.port), timeout=2).close()


@needs_reuse_port
def test_one_metrics_endpoint_sums_connections_across_workers(workers, clients):
    node = workers(env={"ACTORCAST_WORKERS": "2"})  # the environment variable works as the flag does
    assert node.count == 2
    group = clients(node.port, 20)
    by_worker = spread(node, group)
    assert len(by_worker) == 2
    wait_until(lambda: node.metric(CONNECTIONS) == 20, message="the gauge never summed to 20")
    for client in group[:5]:
        client.close()
    wait_until(lambda: node.metric(CONNECTIONS) == 15, message="closed connections still counted")
    # A dead worker's connections stop counting (its live gauge files are
    # marked dead); what it counted before stays in the counters.
    victim = max(by_worker, key=lambda pid: len(by_worker[pid]))
    left = sum(1 for c in group[5:] if c not in by_worker[victim])
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: node.metric(CONNECTIONS) == left, message="a dead worker's connections still counted")
    assert node.metric(OPENED) >= 20


@needs_reuse_port
def test_auto_is_one_worker_per_core(workers):
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core here: auto is a single process")
    node = workers("auto")
    assert node.count == cores and len(node.pids()) == cores


@pytest.mark.parametrize("value", ["0", "-2", "lots"])
def test_a_bad_worker_count_exits_with_code_2_and_says_why(value):
    result = run_cli("--host", "127.0.0.1", "--port", "0", "--workers", value)
    assert result.returncode == 2
    assert "--workers must be a positive number or 'auto'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_exits_with_code_2_with_workers_too():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1", "--workers", "2")
    assert result.returncode == 2
    assert "actorcast:" in result.stderr and "Traceback" not in result.stderr


# --- workers act as one node (needs the cluster on the bus) ------------------------


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


@needs_bus
def test_an_http_trigger_reaches_subscribers_on_every_worker_except_the_excluded_socket(workers, clients):
    node = workers(2)
    group = clients(node.port, 12)
    by_worker = spread(node, group)
    assert len(by_worker) == 2
    (w1, on_1), (w2, on_2) = sorted(by_worker.items())
    for client in group:
        client.subscribe("news")
    a, b = on_1[0], on_2[0]
    # Every (worker answering the trigger, worker of the excluded socket) pair, and no exclusion.
    plan = [(w1, a), (w1, b), (w2, a), (w2, b), (w1, None), (w2, None)]
    for i, (via, excluded) in enumerate(plan):
        trigger_via(node, via, excluded.socket_id if excluded else None, "e", str(i))
    # A last event through each worker: per origin the bus keeps order, so once
    # both arrived nothing sent before is still on its way.
    trigger_via(node, w1, None, "done-1", "")
    trigger_via(node, w2, None, "done-2", "")
    for client in group:
        got = sorted(int(data) for event, data in events_until(client, {"done-1", "done-2"}) if event == "e")
        assert got == [i for i, (_, excluded) in enumerate(plan) if excluded is not client], client.socket_id

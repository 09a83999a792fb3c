"""``actorcast serve --workers N``: real worker processes on one port, real clients.

Which worker holds a client is read from /proc (tests/cluster/worker_node.py).
Every wait is bounded; the port is picked free by the test and passed
explicitly (the parent would resolve ``--port 0`` to one port for all too).
"""

from __future__ import annotations

import inspect
import os
import re
import signal
import socket
import time

import pytest

from actors.node import Node
from tests.cluster.worker_node import CONNECTIONS, OPENED, TIMEOUT, alive, events_until, spread, trigger_via, wait_until
from tests.e2e.test_cli import run_cli

_PARAMETERS = inspect.signature(Node).parameters
needs_reuse_port = pytest.mark.skipif("reuse_port" not in _PARAMETERS, reason="Node(reuse_port=...) not there yet")
needs_bus = pytest.mark.skipif(
    "reuse_port" not in _PARAMETERS or not ({"adapter", "bus"} & set(_PARAMETERS)),
    reason="Node(adapter=<bus>) not there yet: workers cannot reach each other",
)


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

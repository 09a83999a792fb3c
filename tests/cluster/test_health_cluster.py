"""The probes on a cluster (issue 8/9): ``/ready`` follows the adapter, ``/usage`` names the worker.

A node on ``adapter=redis://...`` is not ready while Redis is gone (its
clients keep being served, ``/health`` stays 200), and ready again once the
bus is resubscribed and presence re-synced. Under ``--workers 2`` each
worker answers ``/usage`` for itself, so fresh connections show both.
"""

from __future__ import annotations

import http.client
import json
import uuid

from tests.conftest import wait_until

HEARTBEAT = 0.2


def get_json(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_ready_is_503_while_redis_is_down_and_200_once_resubscribed(make_node, make_redis_server, open_client):
    from actors import App

    server = make_redis_server()
    node = make_node(App(), adapter=server.url(), heartbeat_interval=HEARTBEAT)
    wait_until(lambda: get_json(node.port, "/ready")[0] == 200, message="ready once the bus is up")
    usage = get_json(node.port, "/usage")[1]
    assert usage["cluster"]["connected"] is True and usage["cluster"]["adapter"].startswith("redis://127.0.0.1:")
    client = open_client(node)
    client.subscribe("news")
    server.stop()
    _, body = wait_until(lambda: (answer := get_json(node.port, "/ready"))[0] == 503 and answer,
                         timeout=10, message="/ready turns 503 when Redis goes")
    assert body["ready"] is False and "disconnected" in body["reason"] and "redis://" in body["reason"]
    assert get_json(node.port, "/health") == (200, {"ok": True})  # alive all the same
    assert get_json(node.port, "/usage")[1]["cluster"]["connected"] is False
    node.broadcast("1", "news", "local", "still served")
    assert client.expect("local", "news")["data"] == "still served"
    server.start()
    wait_until(lambda: get_json(node.port, "/ready") == (200, {"ready": True}), timeout=15,
               message="ready again once Redis is back and presence re-synced")
    assert node.cluster.in_sync


def test_ready_waits_for_the_presence_resync_after_the_bus_is_back(make_node, redis_server):
    from actors import App
    from actors.redis_bus import RedisBus

    node = make_node(App(), adapter=RedisBus(redis_server.url(), prefix=f"sync-{uuid.uuid4().hex}"),
                     heartbeat_interval=HEARTBEAT)
    wait_until(lambda: node.call(lambda: node.cluster.in_sync), message="synced at start")
    # Between the bus's reconnect and the cluster's next beat: connected, not yet re-synced.
    node.call(lambda: setattr(node.cluster, "_synced", False))
    status, body = get_json(node.port, "/ready")
    assert status == 503 and "re-synced" in body["reason"]
    wait_until(lambda: get_json(node.port, "/ready")[0] == 200, message="the next beat re-syncs")


def test_usage_under_two_workers_names_the_worker_each_connection_reached(workers):
    node = workers(2)
    seen: dict[int, int] = {}
    for _ in range(100):  # the kernel spreads connections by their ports: both show up soon
        status, usage = get_json(node.port, "/usage")
        assert status == 200
        seen[usage["worker"]["index"]] = usage["worker"]["pid"]
        if len(seen) == 2:
            break
    assert set(seen) == {1, 2}, f"only worker(s) {sorted(seen)} answered 100 connections"
    assert set(seen.values()) == node.pids()
    assert usage["cluster"]["adapter"] == "workers"
    # Each worker counts the other once their first messages crossed the bus (later on a loaded machine).
    knowing: set[int] = set()

    def both_know_both() -> bool:
        usage = get_json(node.port, "/usage")[1]
        if usage["cluster"]["nodes"] == 2:
            knowing.add(usage["worker"]["index"])
        return knowing == {1, 2}

    wait_until(both_know_both, message="each worker counts 2 nodes in /usage")

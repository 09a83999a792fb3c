"""Faults of a Redis-joined cluster: a node killed with SIGKILL, Redis restarted mid-traffic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from tests.cluster.test_cluster_nodes import join_presence
from tests.conftest import wait_until
from tests.wsclient import PusherClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEARTBEAT = 0.2

NODE_SCRIPT = """
import sys, time
from actors import Node
from actors.redis_bus import RedisBus
bus = RedisBus(sys.argv[1], prefix=sys.argv[2])
node = Node(host="127.0.0.1", port=0, metrics_port=None, adapter=bus, heartbeat_interval=float(sys.argv[3]))
node.start()
print(node.port, flush=True)
while True:
    time.sleep(1)
"""


def test_a_killed_node_s_members_are_removed_once_and_queries_do_not_hang(make_node, redis_server, open_client):
    from actors import App
    from actors.redis_bus import RedisBus

    prefix = f"kill-{uuid.uuid4().hex}"
    url = redis_server.url()
    a = make_node(App(), adapter=RedisBus(url, prefix=prefix), heartbeat_interval=HEARTBEAT)
    proc = subprocess.Popen(
        [sys.executable, "-c", NODE_SCRIPT, url, prefix, str(HEARTBEAT)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        port = int(proc.stdout.readline())
        watcher = open_client(a)
        join_presence(watcher, a, "presence-room", "watcher")
        ghost = PusherClient.connect(port)
        join_presence(ghost, a, "presence-room", "ghost")  # signed with the same app secret
        assert watcher.expect("pusher_internal:member_added", "presence-room")["data_decoded"]["user_id"] == "ghost"
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        started = time.monotonic()
        removed = watcher.expect("pusher_internal:member_removed", "presence-room", timeout=5)
        assert removed["data_decoded"] == {"user_id": "ghost"}
        assert time.monotonic() - started < 6 * HEARTBEAT + 1
        watcher.assert_silent(0.5)  # once only
        assert a.call(lambda: a._app_actors["1"].proxy().presence_users("presence-room").get(timeout=5)) == ["watcher"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_after_a_redis_restart_delivery_and_presence_resume(make_node, make_redis_server, open_client):
    from actors import App
    from actors.redis_bus import RedisBus

    server = make_redis_server()
    prefix = f"restart-{uuid.uuid4().hex}"
    a, b = (make_node(App(), adapter=RedisBus(server.url(), prefix=prefix), heartbeat_interval=HEARTBEAT)
            for _ in range(2))
    wait_until(lambda: len(a.cluster.live_nodes()) == 2 and len(b.cluster.live_nodes()) == 2)
    ann, bob = open_client(a), open_client(b)
    join_presence(ann, a, "presence-room", "ann")
    join_presence(bob, b, "presence-room", "bob")
    ann.expect("pusher_internal:member_added", "presence-room")
    server.restart()
    wait_until(lambda: a.cluster.connected and b.cluster.connected, timeout=15, message="both reconnected")

    def crosses() -> bool:
        a.broadcast("1", "presence-room", "ping", "x")
        try:
            while True:
                message = bob.recv(timeout=0.3)
                if message.get("event") == "ping":
                    return True
        except Exception:  # noqa: BLE001 - a timeout: not yet
            return False

    wait_until(crosses, timeout=10, message="a broadcast crosses again")
    members = lambda node: node.call(  # noqa: E731
        lambda: node._app_actors["1"].proxy().presence_users("presence-room").get(timeout=5))
    wait_until(lambda: members(a) == members(b) == ["ann", "bob"], message="presence is the same everywhere")

"""``actorcast serve --adapter redis://...``: separate processes behave as one node."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pusher
import pytest

from tests.wsclient import PusherClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def serve():
    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None) -> int:
        proc = subprocess.Popen(
            [sys.executable, "-m", "actors", "serve", "--host", "127.0.0.1", "--metrics-port", "-1", *args],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, **(env or {})}, stderr=subprocess.PIPE, text=True,
        )
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            match = re.search(r"listening on ws://[^:]+:(\d+)/", line)
            if match:
                return int(match.group(1))
        raise AssertionError("node did not start")

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_two_nodes_joined_by_redis_deliver_each_others_triggers(serve, redis_server):
    url = redis_server.url()
    a = serve("--port", "0", "--adapter", url)
    b = serve("--port", "0", env={"ACTORCAST_ADAPTER": url})
    subscriber = PusherClient.connect(b)
    subscriber.subscribe("news")
    sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=a, ssl=False)
    deadline = time.monotonic() + 10
    while True:  # b's own heartbeat tells a of it within an interval; a trigger crosses once both listen
        sdk.trigger("news", "hello", "x")
        try:
            message = subscriber.recv(timeout=0.5)
        except Exception:  # noqa: BLE001 - not yet
            assert time.monotonic() < deadline, "no trigger crossed from a to b"
            continue
        assert (message["event"], message["data"]) == ("hello", "x")
        break
    assert subscriber.socket_id.split(".")[0] != PusherClient.connect(a).socket_id.split(".")[0]

"""The probes on the main port (issue 8/9): ``/health``, ``/ready``, ``/usage``.

Unauthenticated, GET and HEAD. ``/health`` answers 200 as long as the process
serves HTTP, draining included; ``/ready`` is 503 from ``node.stop()`` until
exit; ``/usage`` describes the process that answered. The drain is made
observable without reaching into the node: an HTTP API request whose body
is still on its way keeps the drain open (a node answers what it accepted),
and the probes are read meanwhile. The cluster cases (Redis stopped, two
workers) are in tests/cluster/test_health_cluster.py.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from urllib.parse import urlencode

import pytest
import websocket

from actors import App
from tests.conftest import wait_until
from tests.wsclient import PusherClient
from transport.config import ServerLimits
from transport.http_signing import sign_request


def request(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def get_json(port: int, path: str) -> tuple[int, dict]:
    status, headers, body = request(port, "GET", path)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


def test_health_and_ready_answer_200_with_json_bodies(node):
    assert get_json(node.port, "/health") == (200, {"ok": True})
    assert get_json(node.port, "/ready") == (200, {"ready": True})


@pytest.mark.parametrize("path", ["/health", "/ready", "/usage"])
def test_probes_answer_head_without_a_body_and_refuse_other_methods_with_405(node, path):
    status, headers, body = request(node.port, "HEAD", path)
    assert (status, body) == (200, b"") and int(headers["content-length"]) > 0
    for method in ("POST", "PUT", "DELETE"):
        status, headers, body = request(node.port, method, path)
        assert status == 405 and headers["allow"] == "GET, HEAD"
        assert "GET" in json.loads(body)["error"]


def test_probes_need_no_credentials_while_the_api_beside_them_does(node):
    assert request(node.port, "GET", "/apps/1/channels")[0] == 401
    assert request(node.port, "GET", "/usage?auth_key=nonsense")[0] == 200


@pytest.mark.single_node(reason="/usage describes the one process that answers")
def test_usage_counts_this_nodes_connections_and_channels_per_app(make_node, open_client):
    node = make_node(App(), App(id="2", key="other-key"))
    a, b = open_client(node), open_client(node)
    a.subscribe("news")
    a.subscribe("sport")
    b.subscribe("news")
    open_client(node, key="other-key").subscribe("news")

    def usage() -> dict:
        return get_json(node.port, "/usage")[1]

    body = wait_until(lambda: (u := usage())["channels"]["total"] == 3 and u, message="3 channels counted")
    assert body["connections"] == {"total": 3, "apps": {"1": 2, "2": 1}}
    assert body["channels"] == {"total": 3, "apps": {"1": 2, "2": 1}}
    assert body["node_id"] == node.node_id and body["worker"] is None and body["cluster"] is None
    assert 10 << 20 < body["memory"]["rss_bytes"] < 4 << 30
    assert 0 <= body["uptime_seconds"] < 300
    later = usage()
    assert later["uptime_seconds"] >= body["uptime_seconds"]
    b.close()
    wait_until(lambda: usage()["connections"]["apps"]["1"] == 1, message="the closed client is no longer counted")


# --- draining --------------------------------------------------------------------------


def _start_trigger(port: int, channel: str) -> tuple[socket.socket, bytes]:
    """Send a signed trigger's head and half its body: the node has accepted a request it must answer."""
    body = json.dumps({"name": "last", "channel": channel, "data": "in flight"}).encode()
    query = urlencode(sign_request("POST", "/apps/1/events", {}, "app-key", "app-secret", body))
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"POST /apps/1/events?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
    return sock, body[10:]


def _status_line(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"closed before a status line: {head!r}"
        head += chunk
    return head.split(b"\r\n", 1)[0]


@pytest.mark.single_node(reason="stops one node mid-test, watching its internals (node._server.busy) to start on time")
def test_while_a_node_drains_health_is_200_ready_503_and_the_api_503_until_it_exits(make_node):
    node = make_node(App(), limits=ServerLimits(shutdown_grace=8, body_timeout=8))
    sub = PusherClient.connect(node.port)
    sub.subscribe("news")
    sock, rest = _start_trigger(node.port, "news")
    wait_until(lambda: node.call(lambda: node._server.busy) == 1, message="the trigger's head is in")
    stopper = threading.Thread(target=node.stop, daemon=True)
    stopper.start()
    try:
        wait_until(lambda: request(node.port, "GET", "/ready")[0] == 503, message="/ready turns 503 at stop()")
        status, headers, body = request(node.port, "GET", "/ready")
        assert json.loads(body) == {"ready": False, "reason": "draining: the node is shutting down"}
        assert headers["connection"] == "close"
        assert get_json(node.port, "/health") == (200, {"ok": True})
        status, usage = get_json(node.port, "/usage")
        assert status == 200 and usage["connections"]["total"] == 1
        status, headers, body = request(node.port, "GET", "/apps/1/channels")
        assert (status, headers["connection"]) == (503, "close") and "shutting down" in json.loads(body)["error"]
        with pytest.raises(websocket.WebSocketBadStatusException, match="503"):
            PusherClient.connect(node.port)
        assert stopper.is_alive(), "the drain waits for the request it accepted"
        started = time.monotonic()
        sock.sendall(rest)
        assert _status_line(sock) == b"HTTP/1.1 200 OK"  # accepted before the drain: answered, and delivered
        assert sub.expect("last", "news")["data"] == "in flight"
        code, _ = sub.expect_close()
        assert code == 4200
    finally:
        sock.close()
        stopper.join(10)
    assert not stopper.is_alive() and time.monotonic() - started < 5
    with pytest.raises(OSError):
        request(node.port, "GET", "/health")  # the process serves no HTTP any more

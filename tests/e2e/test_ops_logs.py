"""Operational log lines (issue 8/9): one line per refusal, with fields; floods rate-limited; quiet sessions.

Every refused connection, refused subscription or sign-in and HTTP API 4xx
logs exactly one INFO or WARNING line carrying ``remote``, ``kind`` and the
reason (``code``/``status``, ``app_id``...) as record attributes, which the
JSON log format writes out. The node logs on its own hub thread before it
answers, so a line is in by the time the client reads the refusal. A flood
from one address writes at most the per-address limit in a window, then one
line saying how many were held back. A normal session logs nothing per
connection at INFO.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from typing import Any
from urllib.parse import urlencode

import pytest

from actors import App
from tests.conftest import wait_until
from tests.jsdriver import PusherJsClient, sdk_signer
from tests.wsclient import PusherClient
from transport.auth import sign
from transport.config import ServerLimits
from transport.http_signing import sign_request

pytestmark = pytest.mark.single_node(reason="reads the log records of an in-process node")

ROOMY = ServerLimits(max_log_lines_per_client=1000)  # these tests refuse more than the default 5 per 10 s


class Records(logging.Handler):
    """Every record of every thread, from DEBUG up."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def ops(self, kind: str | None = None, since: int = 0) -> list[logging.LogRecord]:
        """The operational lines (they have a ``kind``) after index ``since``."""
        found = [r for r in self.records[since:] if hasattr(r, "kind")]
        return [r for r in found if kind is None or r.kind == kind]

    def loud(self, since: int = 0) -> list[str]:
        """Lines at INFO and up from our own code after ``since``."""
        return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records[since:]
                if r.levelno >= logging.INFO and r.name.split(".")[0] in ("actors", "transport", "actorcast")]


@pytest.fixture
def logs():
    handler, root = Records(), logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def node(logs, make_node):
    return make_node(App(), App(id="2", key="off-key", secret="s2", enabled=False),
                     App(id="3", key="small-key", secret="s3", max_connections=1), limits=ROOMY)


def one_line(logs: Records, since: int, kind: str, level: int, **fields: Any) -> logging.LogRecord:
    """Exactly one operational line since ``since``, of ``kind`` at ``level``, with ``fields``."""
    lines = logs.ops(since=since)
    assert len(lines) == 1, [f"{r.levelname} {r.getMessage()}" for r in lines]
    (line,) = lines
    assert (line.kind, line.levelno, line.remote) == (kind, level, "127.0.0.1"), line.__dict__
    for name, value in fields.items():
        assert getattr(line, name) == value, (name, line.__dict__)
    message = line.getMessage()
    assert not line.exc_info and line.reason and line.reason[:150] in message
    assert "127.0.0.1" in message, "a text log shows no fields: the line names the client"
    assert "\n" not in message, "one line, whatever the reason holds"
    return line


# --- refused connections -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "query", "path", "code", "level", "app_id"),
    [
        pytest.param("nope", "protocol=7", None, 4001, logging.INFO, None, id="unknown-key"),
        pytest.param("off-key", "protocol=7", None, 4003, logging.INFO, "2", id="disabled-app"),
        pytest.param("app-key", "protocol=99", None, 4007, logging.INFO, None, id="unsupported-protocol"),
        pytest.param("app-key", "protocol=x", None, 4006, logging.INFO, None, id="invalid-protocol"),
        pytest.param("app-key", "client=js", None, 4008, logging.INFO, None, id="no-protocol"),
        pytest.param("app-key", "protocol=7", "/app/a/b", 4005, logging.INFO, None, id="bad-path"),
    ],
)
def test_a_refused_connection_logs_one_line_with_its_code(node, logs, key, query, path, code, level, app_id):
    since = len(logs.records)
    client = PusherClient.connect(node.port, key=key, query=query, path=path, established=False)
    assert client.expect("pusher:error")["data"]["code"] == code
    client.expect_close()
    one_line(logs, since, "connection_refused", level, code=code, app_id=app_id)


def test_a_connection_over_quota_logs_one_warning(node, logs, open_client):
    open_client(node, key="small-key")
    since = len(logs.records)
    client = PusherClient.connect(node.port, key="small-key", established=False)
    assert client.expect("pusher:error")["data"]["code"] == 4004
    one_line(logs, since, "connection_refused", logging.WARNING, code=4004, app_id="3", app_key="small-key")


# --- auth failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "fields"),
    [
        pytest.param("private-room", {"auth": "app-key:" + "0" * 64}, id="private-bad-signature"),
        pytest.param("private-room", {}, id="private-no-auth"),
        pytest.param("presence-room", {"auth": "app-key:" + "0" * 64, "channel_data": '{"user_id":"u"}'},
                     id="presence-bad-signature"),
    ],
)
def test_a_refused_subscription_logs_one_warning(node, logs, open_client, channel, fields):
    client = open_client(node)
    since = len(logs.records)
    client.send_event("pusher:subscribe", {"channel": channel, **fields})
    error = client.expect("pusher:subscription_error", channel)["data_decoded"]
    assert error["status"] == 401
    one_line(logs, since, "subscription_refused", logging.WARNING, app_id="1", channel=channel, status=401,
             socket_id=client.socket_id)


def test_subscribing_to_another_users_server_to_user_channel_logs_one_warning(node, logs, open_client):
    client = open_client(node)
    since = len(logs.records)
    client.send_event("pusher:subscribe", {"channel": "#server-to-user-someone"})
    assert "reserved" in client.expect("pusher:error")["data"]["message"]
    one_line(logs, since, "subscription_refused", logging.WARNING, channel="#server-to-user-someone")


def test_presence_channel_data_that_is_not_json_logs_one_info_line(node, logs, open_client):
    client = open_client(node)
    data = "not json"
    auth = "app-key:" + sign("app-secret", f"{client.socket_id}:presence-room:{data}")
    since = len(logs.records)
    client.send_event("pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": data})
    assert client.expect("pusher:subscription_error", "presence-room")["data_decoded"]["status"] == 400
    one_line(logs, since, "subscription_refused", logging.INFO, status=400, error_type="InvalidChannelData")


def test_a_refused_sign_in_logs_one_warning(node, logs, open_client):
    client = open_client(node)
    since = len(logs.records)
    client.send_event("pusher:signin", {"auth": "app-key:" + "0" * 64, "user_data": '{"id":"u1"}'})
    code, _ = client.expect_close()
    assert code == 4009
    one_line(logs, since, "signin_refused", logging.WARNING, app_id="1", code=4009)


# --- HTTP API and HTTP 4xx -----------------------------------------------------------------


def api(port: int, method: str, path: str, body: bytes = b"", *, key: str = "app-key", secret: str = "app-secret",
        timestamp: float | None = None) -> int:
    query = urlencode(sign_request(method, path, {}, key, secret, body, timestamp))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, f"{path}?{query}", body or None, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def event(data: str = "x") -> bytes:
    return json.dumps({"name": "e", "channel": "news", "data": data}).encode()


@pytest.mark.parametrize(
    ("call", "status", "level", "app_id"),
    [
        pytest.param(lambda p: api(p, "POST", "/apps/1/events", event(), secret="wrong"), 401, logging.WARNING, "1",
                     id="bad-signature"),
        pytest.param(lambda p: api(p, "POST", "/apps/1/events", event(), timestamp=time.time() - 3600), 401,
                     logging.WARNING, "1", id="expired-timestamp"),
        pytest.param(lambda p: api(p, "GET", "/apps/2/channels", key="off-key", secret="s2"), 403, logging.WARNING,
                     "2", id="disabled-app"),
        pytest.param(lambda p: api(p, "POST", "/apps/1/events", b"{not json"), 400, logging.INFO, "1",
                     id="bad-body"),
        pytest.param(lambda p: api(p, "POST", "/apps/1/events", event("x" * 20_000)), 413, logging.INFO, "1",
                     id="data-too-large"),
        pytest.param(lambda p: api(p, "GET", "/apps/9/channels"), 404, logging.INFO, "9", id="unknown-app"),
    ],
)
def test_an_http_api_4xx_logs_one_line_with_its_status(node, logs, call, status, level, app_id):
    since = len(logs.records)
    assert call(node.port) == status
    line = one_line(logs, since, "api_refused", level, status=status, app_id=app_id)
    assert line.path.startswith("/apps/") and line.method in ("GET", "POST")


def test_a_malformed_http_request_logs_one_line(node, logs):
    since = len(logs.records)
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
    one_line(logs, since, "http_refused", logging.INFO, status=400)


# --- floods ----------------------------------------------------------------------------------


def _bad_key_connects(port: int, count: int, threads: int = 4) -> None:
    """``count`` connects with an unknown key from 127.0.0.1, each read to its close."""
    request = (b"GET /app/nope?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

    def run(n: int) -> None:
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request)
                while sock.recv(4096):  # the 101, the 4001 error and close frames, then EOF
                    pass

    workers = [threading.Thread(target=run, args=(count // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)


def test_a_flood_of_200_bad_key_connects_logs_the_limit_then_one_line_saying_how_many_were_held(logs, make_node):
    limit, window = 5, 2.0
    node = make_node(App(), limits=ServerLimits(max_log_lines_per_client=limit, log_window=window))
    since = len(logs.records)
    started = time.monotonic()
    _bad_key_connects(node.port, 200)
    took = time.monotonic() - started
    held = wait_until(lambda: sum(r.suppressed for r in logs.ops("log_suppressed", since)) >= 200 - limit and
                      logs.ops("log_suppressed", since), timeout=window * (took // window + 2) + 5,
                      message="the held-back lines are counted once their window ends")
    refusals = logs.ops("connection_refused", since)
    assert len(refusals) + sum(r.suppressed for r in held) == 200, "every refusal is logged or counted"
    assert all(r.remote == "127.0.0.1" and r.levelno == logging.WARNING for r in held)
    assert "held back" in held[0].getMessage()
    if took < window:  # the whole flood in one window (the usual case): the limit and one line, exactly
        assert (len(refusals), len(held)) == (limit, 1)
    else:  # a slow machine: each window the flood spanned let the limit through
        assert len(refusals) <= limit * (took // window + 1)


# --- a normal session is quiet ------------------------------------------------------------------


def test_a_normal_session_logs_nothing_per_connection_at_info(node, logs):
    import pusher

    since = len(logs.records)
    sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port, ssl=False)
    sign_js = sdk_signer("1", "app-key", "app-secret", presence_data={"user_id": "u1", "user_info": {}},
                         user_data={"id": "u1"})
    with PusherJsClient("127.0.0.1", node.port, "app-key", auto_auth=sign_js) as js:
        js.expect("connected")
        for channel in ("news", "private-room", "presence-room"):
            js.subscribe(channel)
            js.expect_event(channel, "pusher:subscription_succeeded")
        with PusherClient.connect(node.port) as py:
            py.subscribe("news")
            sdk.trigger("news", "hello", {"n": 1})
            py.expect("hello", "news")
            js.expect_event("news", "hello")
            py.unsubscribe("news")
    wait_until(lambda: node.connection_count() == 0, message="both clients gone")
    assert logs.loud(since) == []

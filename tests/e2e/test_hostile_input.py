"""End to end: lone-surrogate escapes from the network never break a node.

Each test sends JSON text holding a ``"\\ud800"`` escape (legal JSON, but a lone
surrogate that no UTF-8 encoder takes) over a real socket to a real node on
port 0: in an HTTP API body, a client event, a private ``auth``, presence
``channel_data`` or sign-in ``user_data``. Each checks the Pusher answer the
protocol prescribes, then proves the node goes on: a separate healthy
subscriber receives a broadcast sent afterwards, the hostile connection still
works (except after a bad sign-in, which closes it with 4009), and nothing was
logged at ERROR (no actor died, no traceback).

``json.dumps`` (ensure_ascii) writes a Python lone surrogate as the escape, so
the text on the wire holds the six characters ``\\ud800`` exactly.
"""

from __future__ import annotations

import http.client
import json
import logging
from typing import Any
from urllib.parse import urlencode

import pusher
import pytest

from tests.wsclient import PusherClient
from transport.http_signing import sign_request

TIMEOUT = 5.0
KEY, SECRET = "app-key", "app-secret"


class _Errors(logging.Handler):
    """Collects records at ERROR or above, or carrying a traceback, from every thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_errors_logged():
    """Fail the test if anything (the node's hub thread included) logged an error or a traceback."""
    handler = _Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
    assert [handler.format(r) for r in handler.records] == []


@pytest.fixture
def sdk(node):
    return pusher.Pusher(app_id="1", key=KEY, secret=SECRET, host="127.0.0.1", port=node.port, ssl=False,
                         timeout=TIMEOUT)


def hostile(message: dict[str, Any]) -> str:
    """``message`` as JSON text; lone surrogates become ``\\udXXX`` escapes on the wire."""
    text = json.dumps(message)
    assert "\\ud" in text  # the escape really goes over the wire
    return text


def post(port: int, path: str, body: bytes) -> tuple[int, Any]:
    """A signed HTTP API POST with exactly ``body``; returns (status, decoded JSON body)."""
    query = sign_request("POST", path, {}, KEY, SECRET, body)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("POST", f"{path}?{urlencode(query)}", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def get(port: int, path: str) -> int:
    query = sign_request("GET", path, {}, KEY, SECRET)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", f"{path}?{urlencode(query)}")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def assert_node_goes_on(node: Any, watcher: PusherClient, *also: PusherClient) -> None:
    """A broadcast sent now reaches the healthy ``watcher`` (and ``also``); the app still answers."""
    body = json.dumps({"name": "after", "channel": "watch", "data": "still here"}).encode()
    assert post(node.port, "/apps/1/events", body) == (200, {})
    for client in (watcher, *also):
        message = client.expect("after", "watch")  # the next message: nothing hostile came first
        assert message["data"] == "still here"
    assert get(node.port, "/apps/1/channels") == 200
    with PusherClient.connect(node.port) as newcomer:  # the app actor still admits new clients
        newcomer.ping()


@pytest.fixture
def watcher(connect):
    client = connect()
    client.subscribe("watch")
    return client


# --- the HTTP API -------------------------------------------------------------------


GOOD_EVENT = {"name": "evt", "channel": "watch", "data": "x"}


@pytest.mark.parametrize(
    "field",
    [
        {"name": "evt\ud800"},
        {"data": "payload\ud800"},
        {"data": {"nested": "\udfff"}},
        {"channel": "watch\ud800"},
        {"channel": ..., "channels": ["watch", "w\ud800"]},
        {"socket_id": "1.2\ud800"},
    ],
    ids=["name", "data", "data-object", "channel", "channels", "socket_id"],
)
@pytest.mark.parametrize("path", ["/apps/1/events", "/apps/1/batch_events"])
def test_an_http_trigger_with_a_lone_surrogate_is_a_400_and_the_app_goes_on(node, watcher, field, path):
    event = {k: v for k, v in {**GOOD_EVENT, **field}.items() if v is not ...}
    body = hostile({"batch": [event]} if path.endswith("batch_events") else event).encode()
    status, answer = post(node.port, path, body)
    assert status == 400, answer
    assert isinstance(answer, dict) and isinstance(answer.get("error"), str)
    assert_node_goes_on(node, watcher)


# --- client events --------------------------------------------------------------------


@pytest.fixture
def private_pair(sdk, connect):
    """Two clients subscribed to private-room: (sender, receiver)."""
    sender, receiver = connect(), connect()
    for client in (sender, receiver):
        client.subscribe("private-room", **sdk.authenticate(channel="private-room", socket_id=client.socket_id))
        client.subscribe("watch")
    return sender, receiver


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"event": "client-typing\ud800", "channel": "private-room", "data": "x"}, 4302),
        ({"event": "client-typing", "channel": "private-room", "data": "x\ud800"}, None),
        ({"event": "client-typing", "channel": "private-room", "data": {"k\udfff": 1}}, None),
        ({"event": "client-typing", "channel": "private-room\ud800", "data": "x"}, 4302),
    ],
    ids=["name", "data", "data-key", "channel"],
)
def test_a_client_event_with_a_lone_surrogate_is_a_pusher_error_and_the_connection_goes_on(
    node, watcher, private_pair, message, code
):
    sender, receiver = private_pair
    sender.send_text(hostile(message))
    error = sender.expect("pusher:error")
    assert error["data"]["code"] == code
    assert receiver.until_pong() == []  # nothing was relayed
    # The hostile connection still works: a valid client event goes through.
    sender.send_event("client-typing", {"ok": True}, channel="private-room")
    assert json.loads(receiver.expect("client-typing", "private-room")["data"]) == {"ok": True}
    assert_node_goes_on(node, watcher, sender, receiver)


# --- subscriptions ----------------------------------------------------------------------


def test_a_private_auth_with_a_lone_surrogate_is_a_subscription_error(node, sdk, watcher, connect):
    client = connect()
    client.subscribe("watch")
    client.send_text(hostile({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": f"{KEY}:\ud800"}}))
    error = client.expect("pusher:subscription_error", "private-x")
    assert error["data_decoded"]["type"] == "AuthError" and error["data_decoded"]["status"] == 401
    client.subscribe("private-x", **sdk.authenticate(channel="private-x", socket_id=client.socket_id))
    assert_node_goes_on(node, watcher, client)


@pytest.mark.parametrize("channel_data", ['{"user_id":"u\ud800"}', '{"user_id":"u1","user_info":{"n":"\udfff"}}'])
def test_presence_channel_data_with_a_lone_surrogate_is_a_subscription_error(
    node, sdk, watcher, connect, channel_data
):
    client = connect()
    client.subscribe("watch")
    auth = sdk.authenticate(channel="presence-x", socket_id=client.socket_id, custom_data={"user_id": "u1"})
    client.send_text(hostile({"event": "pusher:subscribe",
                              "data": {"channel": "presence-x", "auth": auth["auth"], "channel_data": channel_data}}))
    error = client.expect("pusher:subscription_error", "presence-x")
    assert error["data_decoded"]["status"] == 400
    client.subscribe("presence-x", **auth)  # the same channel, signed data: it works
    assert_node_goes_on(node, watcher, client)


# --- sign-in ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["user_data", "auth"])
def test_a_signin_with_a_lone_surrogate_closes_with_4009_and_the_node_goes_on(node, sdk, watcher, connect, field):
    client = connect()
    data = sdk.authenticate_user(client.socket_id, {"id": "u1"})
    data[field] = data[field][:-2] + "\ud800" + data[field][-1:]
    client.send_text(hostile({"event": "pusher:signin", "data": data}))
    code, before = client.expect_close()
    assert code == 4009
    assert [m["event"] for m in before] == ["pusher:error"]
    assert_node_goes_on(node, watcher)
    connect().signin(sdk, "u1")  # sign-in itself still works

"""End-to-end: the official ``pusher`` Node SDK (HTTP API) against a real node.

Each call runs ``node tests/js/server_sdk.js`` once (the SDK signs and sends the
request itself); receivers are websocket-client connections (tests/wsclient.py)
and, where it shows the double-encoded data is parsed as the browser client does,
a pusher-js client. Each test has its own node (about 20 ms to start); every wait
is bounded.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pusher as pusher_python
import pytest

from actors import Node
from tests.conftest import wait_until
from tests.jsdriver import PusherJsClient, ensure_node_modules, server_sdk, server_sdk_result
from tests.wsclient import PusherClient

HOST = "127.0.0.1"
APP_ID = "1"
KEY = "app-key"
SECRET = "app-secret"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

SIGNER = pusher_python.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def node_modules():
    return ensure_node_modules()


@pytest.fixture
def ws(connect):
    """``ws()``: a websocket-client Pusher connection to ``node`` (conftest ``connect``)."""
    return connect


def sdk(node: Node, method: str, *args: Any, secret: str = SECRET, **kwargs: Any):
    """(status, body) of one official Node SDK call against ``node``."""
    return server_sdk(HOST, node.port, APP_ID, KEY, secret, method, *args, **kwargs)


def subscribe_presence(client: PusherClient, channel: str, user_id: str, name: str) -> dict:
    """Subscribe with auth and channel_data signed by the python SDK; return subscription_succeeded."""
    auth = SIGNER.authenticate(channel, client.socket_id, {"user_id": user_id, "user_info": {"name": name}})
    client.send_json({"event": "pusher:subscribe", "data": {"channel": channel, **auth}})
    return client.expect("pusher_internal:subscription_succeeded", channel)


def expect_event(client: PusherClient, channel: str, event: str, timeout: float = 5.0) -> dict:
    """The *next* message on ``client``, which must be ``event`` on ``channel``."""
    return client.expect(event, channel, timeout)


# --------------------------------------------------------------------------- trigger


def test_trigger_to_one_channel_reaches_websocket_subscriber_with_sdk_json_data_and_info(node, ws):
    rx = ws()
    rx.subscribe("news")
    status, body = sdk(node, "trigger", "news", "headline", {"title": "hi", "n": 1})
    assert (status, body) == (200, {})
    message = expect_event(rx, "news", "headline")
    assert isinstance(message["data"], str)  # the SDK's JSON string, carried as is
    assert json.loads(message["data"]) == {"title": "hi", "n": 1}

    status, body = sdk(node, "trigger", "news", "headline", "plain text", {"info": "subscription_count"})
    assert status == 200 and body == {"channels": {"news": {"subscription_count": 1}}}
    assert expect_event(rx, "news", "headline")["data"] == "plain text"


def test_trigger_to_many_channels_reaches_each_subscriber_once(node, ws):
    a, b = ws(), ws()
    a.subscribe("multi-a")
    a.subscribe("multi-b")
    b.subscribe("multi-c")
    status, body = sdk(node, "trigger", ["multi-a", "multi-b", "multi-c", "multi-nobody"], "fan", {"k": "v"})
    assert (status, body) == (200, {})
    got_a = {a.expect("fan")["channel"], a.expect("fan")["channel"]}
    assert got_a == {"multi-a", "multi-b"}
    message = expect_event(b, "multi-c", "fan")
    assert json.loads(message["data"]) == {"k": "v"}
    a.assert_silent(0.2)
    b.assert_silent(0.01)


def test_trigger_to_many_channels_is_parsed_by_pusher_js(node):
    with PusherJsClient(HOST, node.port, KEY) as client:
        client.wait_connected()
        for channel in ("js-one", "js-two"):
            client.subscribe(channel)
            client.expect_event(channel, "pusher:subscription_succeeded")
        status, _ = sdk(node, "trigger", ["js-one", "js-two"], "update", {"nested": {"list": [1, 2]}})
        assert status == 200
        for channel in ("js-one", "js-two"):
            assert client.expect_event(channel, "update")["data"] == {"nested": {"list": [1, 2]}}


def test_trigger_batch_delivers_every_event_in_order_and_reports_info(node, ws):
    rx = ws()
    rx.subscribe("batch-a")
    rx.subscribe("batch-b")
    batch = [
        {"channel": "batch-a", "name": "first", "data": {"i": 1}},
        {"channel": "batch-b", "name": "second", "data": "two"},
        {"channel": "batch-a", "name": "third", "data": {"i": 3}},
    ]
    status, body = sdk(node, "triggerBatch", batch)
    assert (status, body) == (200, {})
    got = [rx.recv() for _ in range(3)]
    # in order per channel (channels are separate actors: no order is promised across them)
    by_channel = {ch: [(m["event"], m["data"]) for m in got if m["channel"] == ch] for ch in ("batch-a", "batch-b")}
    assert by_channel == {
        "batch-a": [("first", json.dumps({"i": 1}, separators=(",", ":"))), ("third", '{"i":3}')],
        "batch-b": [("second", "two")],
    }

    status, body = sdk(
        node,
        "triggerBatch",
        [
            {"channel": "batch-a", "name": "with-info", "data": {}, "info": "subscription_count"},
            {"channel": "batch-empty", "name": "with-info", "data": {}, "info": "subscription_count"},
        ],
    )
    assert status == 200 and body == {"batch": [{"subscription_count": 1}, {"subscription_count": 0}]}
    expect_event(rx, "batch-a", "with-info")


def test_trigger_with_socket_id_excludes_that_connection(node, ws):
    sender, other = ws(), ws()
    sender.subscribe("room")
    other.subscribe("room")
    status, _ = sdk(node, "trigger", "room", "said", {"t": "hello"}, {"socket_id": sender.socket_id})
    assert status == 200
    assert json.loads(expect_event(other, "room", "said")["data"]) == {"t": "hello"}
    # barrier: a second, unexcluded trigger is the next thing the sender sees
    status, _ = sdk(node, "trigger", "room", "after", {})
    assert status == 200
    expect_event(sender, "room", "after")
    expect_event(other, "room", "after")


# --------------------------------------------------------------------------- channel queries


def test_get_channels_filters_by_prefix_and_reports_subscription_and_user_counts(node, ws):
    a, b = ws(), ws()
    a.subscribe("public-1")
    b.subscribe("public-1")
    a.subscribe("other-1")
    subscribe_presence(a, "presence-lobby", "u1", "Ann")

    status, body = sdk(node, "get", {"path": "/channels"})
    assert status == 200 and set(body["channels"]) == {"public-1", "other-1", "presence-lobby"}

    status, body = sdk(node, "get", {"path": "/channels", "params": {"filter_by_prefix": "public-", "info": "subscription_count"}})
    assert (status, body) == (200, {"channels": {"public-1": {"subscription_count": 2}}})

    status, body = sdk(node, "get", {"path": "/channels", "params": {"filter_by_prefix": "presence-", "info": "user_count"}})
    assert (status, body) == (200, {"channels": {"presence-lobby": {"user_count": 1}}})

    status, body = sdk(node, "get", {"path": "/channels", "params": {"info": "user_count"}})
    assert status == 400 and "presence-" in body["error"]


def test_get_presence_channel_info_and_users(node, ws):
    a1, a2, b = ws(), ws(), ws()
    subscribe_presence(a1, "presence-team", "u1", "Ann")
    subscribe_presence(a2, "presence-team", "u1", "Ann")  # same user, second socket
    subscribe_presence(b, "presence-team", "u2", "Ben")

    status, body = sdk(node, "get", {"path": "/channels/presence-team", "params": {"info": "subscription_count,user_count"}})
    assert (status, body) == (200, {"occupied": True, "subscription_count": 3, "user_count": 2})

    status, body = sdk(node, "get", {"path": "/channels/presence-team/users"})
    assert status == 200 and sorted(u["id"] for u in body["users"]) == ["u1", "u2"]

    status, body = sdk(node, "get", {"path": "/channels/presence-empty", "params": {"info": "user_count"}})
    assert (status, body) == (200, {"occupied": False, "user_count": 0})

    status, body = sdk(node, "get", {"path": "/channels/public-x", "params": {"info": "user_count"}})
    assert status == 400
    status, body = sdk(node, "get", {"path": "/channels/public-x/users"})
    assert status == 400

    b.close()
    wait_until(lambda: node.subscription_count(APP_ID, "presence-team") == 2, message="b left")
    status, body = sdk(node, "get", {"path": "/channels/presence-team/users"})
    assert status == 200 and [u["id"] for u in body["users"]] == ["u1"]


# --------------------------------------------------------------------------- refusals


def test_wrong_secret_is_refused_with_401_and_nothing_is_delivered(node, ws):
    rx = ws()
    rx.subscribe("guarded")
    status, body = sdk(node, "trigger", "guarded", "forged", {"x": 1}, secret="not-the-secret")
    assert status == 401 and "error" in body
    status, _ = sdk(node, "get", {"path": "/channels"}, secret="not-the-secret")
    assert status == 401
    status, _ = sdk(node, "trigger", "guarded", "genuine", {})
    assert status == 200
    expect_event(rx, "guarded", "genuine")  # the forged one never arrived before it


def test_payload_over_the_limit_is_refused_with_413(node, ws):
    rx = ws()
    rx.subscribe("big")
    status, body = sdk(node, "trigger", "big", "huge", "x" * (10 * 1024 + 1))
    assert status == 413 and "limit" in body["error"]
    status, _ = sdk(node, "trigger", "big", "fits", "x" * (10 * 1024))
    assert status == 200
    assert expect_event(rx, "big", "fits")["data"] == "x" * (10 * 1024)


def test_more_than_100_channels_is_refused_with_400(node):
    channels = [f"ch-{i}" for i in range(101)]
    # The SDK's own guard stops trigger() before sending...
    result = server_sdk_result(HOST, node.port, APP_ID, KEY, SECRET, "trigger", channels, "e", {})
    assert result["status"] is None and result.get("exception") and "100 channels" in result["error"]
    # ...so send the same body through the SDK's signed post(): the server refuses it.
    status, body = sdk(node, "post", {"path": "/events", "body": {"name": "e", "data": "{}", "channels": channels}})
    assert status == 400 and "100" in body["error"]


def test_per_app_channel_limit_refuses_sdk_trigger_with_400(start_node):
    node = start_node(max_channels_per_event=2)
    status, body = sdk(node, "trigger", ["c1", "c2", "c3"], "e", {})
    assert status == 400 and "at most 2" in body["error"]
    status, body = sdk(node, "trigger", ["c1", "c2"], "e", {})
    assert (status, body) == (200, {})

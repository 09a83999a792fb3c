"""End-to-end: the official ``pusher-js`` client (and ``pusher`` Node SDK) against a real node.

Every test starts its own node (about 20 ms) so App limits can differ per test and no
state leaks between tests; each pusher-js client is a ``node tests/js/client.js``
process driven through :class:`tests.jsdriver.PusherJsClient`. Every wait is bounded
(``expect`` timeouts, ``wait_until`` deadlines); the only time windows are the short
``expect_no`` checks that something did *not* happen after a barrier proved it would
have happened by then.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import time
from typing import Any, Callable, Dict, List

import pytest

from actors import Node
from tests.conftest import wait_until
from tests.jsdriver import (
    PusherJsClient,
    ensure_node_modules,
    sdk_signer,
    server_sdk,
)

HOST = "127.0.0.1"
APP_ID = "1"
KEY = "app-key"
SECRET = "app-secret"
MASTER_KEY = b"actorcast-e2e-master-key-32bytes"  # 32 bytes
MASTER_KEY_B64 = base64.b64encode(MASTER_KEY).decode()
SOCKET_ID = re.compile(r"\A\d+\.\d+\Z")

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def node_modules():
    """pusher-js and the pusher SDK, installed once (``npm ci``) if missing."""
    return ensure_node_modules()


@pytest.fixture
def js(start_node):
    """``js(node, **kwargs)``: a connected-on-start pusher-js client, closed before the node stops."""
    clients: List[PusherJsClient] = []

    def make(node: Node, key: str = KEY, **kwargs: Any) -> PusherJsClient:
        client = PusherJsClient(HOST, node.port, key, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def sdk(node: Node, method: str, *args: Any, **kwargs: Any):
    """Call the official Node SDK against ``node``; returns (status, body)."""
    return server_sdk(HOST, node.port, APP_ID, KEY, SECRET, method, *args, **kwargs)


def signer(user_id: str | None = None, name: str = "", **kwargs: Any) -> Callable[[Dict[str, Any]], Dict[str, Any]]:
    """Sign channel (and user) auth with the python SDK; presence/user data for ``user_id``."""
    presence = {"user_id": user_id, "user_info": {"name": name or user_id}} if user_id else None
    user = {"id": user_id, "user_info": {"name": name or user_id}} if user_id else None
    return sdk_signer(APP_ID, KEY, SECRET, presence_data=presence, user_data=user, **kwargs)


def with_str_shared_secret(sign: Callable[[Dict[str, Any]], Dict[str, Any]]) -> Callable[[Dict[str, Any]], Dict[str, Any]]:
    """pusher-http-python returns ``shared_secret`` as bytes; the driver needs JSON (a str)."""

    def wrapped(req: Dict[str, Any]) -> Dict[str, Any]:
        resp = dict(sign(req))
        if isinstance(resp.get("shared_secret"), bytes):
            resp["shared_secret"] = resp["shared_secret"].decode("ascii")
        return resp

    return wrapped


def subscribed(client: PusherJsClient, channel: str, timeout: float = 5.0) -> Dict[str, Any]:
    """Subscribe and wait for pusher-js's ``pusher:subscription_succeeded``; return that event."""
    client.subscribe(channel)
    return client.expect_event(channel, "pusher:subscription_succeeded", timeout=timeout)


def app_events(client: PusherJsClient, channel: str) -> List[Dict[str, Any]]:
    """Non-``pusher:`` events pusher-js delivered on ``channel`` so far, in arrival order."""
    client.pending()  # pull queued events into client.events
    return [
        e for e in client.events
        if e.get("type") == "event" and e.get("channel") == channel and not e["event"].startswith("pusher:")
    ]


def is_pusher_error(code: int | None) -> Callable[[Dict[str, Any]], bool]:
    """Matches pusher-js's connection ``error`` event for a server ``pusher:error`` with ``code``."""

    def match(ev: Dict[str, Any]) -> bool:
        return ev.get("type") == "error" and ev.get("error_type") == "PusherError" and ev.get("code") == code

    match.__name__ = f"pusher_error_{code}"
    return match


def raw_in(event: str) -> Callable[[Dict[str, Any]], bool]:
    """Matches an incoming raw frame carrying the Pusher ``event``."""

    def match(ev: Dict[str, Any]) -> bool:
        if ev.get("type") != "raw" or ev.get("direction") != "in":
            return False
        try:
            return json.loads(ev["data"]).get("event") == event
        except (ValueError, TypeError, AttributeError):
            return False

    match.__name__ = f"raw_in_{event}"
    return match


def raw_out(event: str) -> Callable[[Dict[str, Any]], bool]:
    """Matches an outgoing raw frame (sent by pusher-js) carrying the Pusher ``event``."""

    def match(ev: Dict[str, Any]) -> bool:
        if ev.get("type") != "raw" or ev.get("direction") != "out":
            return False
        try:
            return json.loads(ev["data"]).get("event") == event
        except (ValueError, TypeError, AttributeError):
            return False

    match.__name__ = f"raw_out_{event}"
    return match


def assert_no_reconnect(client: PusherJsClient, within: float = 1.0) -> None:
    """No second socket and no scheduled retry within ``within`` s (pusher-js gave up for good)."""
    client.expect_no(lambda e: e.get("type") == "socket_open_attempt" and e.get("socket") != 1, within=within)
    client.expect_no(lambda e: e.get("type") in ("connecting_in", "connected"), within=0.01)
    assert client.state()["state"] == "disconnected"


def channel_state(client: PusherJsClient, channel: str) -> Dict[str, Any] | None:
    for ch in client.state()["channels"]:
        if ch["name"] == channel:
            return ch
    return None


# --------------------------------------------------------------------------- connect, public channels


def test_connects_and_receives_node_and_http_broadcasts_in_order_until_unsubscribed(node, js):
    client = js(node)
    socket_id = client.wait_connected()
    assert SOCKET_ID.match(socket_id), socket_id
    state = client.state()
    assert state["state"] == "connected" and state["socket_id"] == socket_id

    witness = js(node)
    witness.wait_connected()
    subscribed(client, "news")
    subscribed(witness, "news")

    for i in range(5):
        node.broadcast(APP_ID, "news", "headline", {"seq": i, "via": "node"})
    status, body = sdk(node, "trigger", "news", "headline", {"seq": 5, "via": "http"})
    assert (status, body) == (200, {})
    node.broadcast(APP_ID, ["news"], "headline", {"seq": 6, "via": "node"})

    last = client.expect_event("news", "headline", data={"seq": 6, "via": "node"})
    assert last["data"]["seq"] == 6
    got = [e["data"] for e in app_events(client, "news")]
    assert got == [{"seq": i, "via": "http" if i == 5 else "node"} for i in range(7)]

    client.unsubscribe("news")
    wait_until(lambda: node.subscription_count(APP_ID, "news") == 1, message="unsubscribe reached the server")
    status, _ = sdk(node, "trigger", "news", "after-unsubscribe", {"x": 1})
    assert status == 200
    node.broadcast(APP_ID, "news", "after-unsubscribe", {"x": 2})
    witness.expect_event("news", "after-unsubscribe", data={"x": 1})
    witness.expect_event("news", "after-unsubscribe", data={"x": 2})
    client.expect_no("event", within=0.3, channel="news", event="after-unsubscribe")
    assert client.state()["state"] == "connected"


# --------------------------------------------------------------------------- private channels


def test_private_channel_subscription_signed_by_python_sdk_succeeds(node, js):
    client = js(node, auto_auth=signer())
    client.wait_connected()
    ok = subscribed(client, "private-orders")
    assert ok["data"] in ({}, None)
    node.broadcast(APP_ID, "private-orders", "created", {"id": 7})
    assert client.expect_event("private-orders", "created")["data"] == {"id": 7}


def test_private_channel_with_wrong_signature_surfaces_401_subscription_error_and_stays_connected(node, js):
    def bad_auth(req: Dict[str, Any]) -> Dict[str, Any]:
        return {"auth": f"{KEY}:{'0' * 64}"}

    client = js(node, auto_auth=bad_auth)
    socket_id = client.wait_connected()
    client.subscribe("private-vault")
    err = client.expect_event("private-vault", "pusher:subscription_error")
    assert err["data"]["status"] == 401
    assert err["data"]["type"] == "AuthError"
    assert channel_state(client, "private-vault")["subscribed"] is False

    # The socket is still the same live connection: a public subscription works on it.
    subscribed(client, "lobby")
    node.broadcast(APP_ID, "lobby", "still-here", {})
    client.expect_event("lobby", "still-here")
    state = client.state()
    assert state["state"] == "connected" and state["socket_id"] == socket_id
    client.expect_no("socket_closed", within=0.1)


# --------------------------------------------------------------------------- presence


def test_presence_members_me_count_and_member_added_removed_with_one_event_per_user(node, js):
    alice = js(node, auto_auth=signer("u1", "Alice"))
    bob = js(node, auto_auth=signer("u2", "Bob"))
    bob2 = js(node, auto_auth=signer("u2", "Bob"))
    for c in (alice, bob, bob2):
        c.wait_connected()

    ok = subscribed(alice, "presence-room")["data"]
    assert ok["me"] == {"id": "u1", "info": {"name": "Alice"}}
    assert ok["count"] == 1 and ok["members"] == [{"id": "u1", "info": {"name": "Alice"}}]

    ok = subscribed(bob, "presence-room")["data"]
    assert ok["me"]["id"] == "u2" and ok["count"] == 2
    assert sorted(m["id"] for m in ok["members"]) == ["u1", "u2"]
    added = alice.expect_event("presence-room", "pusher:member_added")
    assert added["data"] == {"id": "u2", "info": {"name": "Bob"}}
    bob.expect_no("event", within=0.05, channel="presence-room", event="pusher:member_added")  # not to the joiner

    # Bob's second connection: succeeded (which the server sends after any
    # member_added fan-out) is the barrier; Alice must see no second member_added.
    ok = subscribed(bob2, "presence-room")["data"]
    assert ok["count"] == 2 and ok["me"]["id"] == "u2"
    alice.expect_no("event", within=0.3, channel="presence-room", event="pusher:member_added")
    bob.expect_no("event", within=0.01, channel="presence-room", event="pusher:member_added")
    assert channel_state(alice, "presence-room")["members"]["count"] == 2

    # One of Bob's two sockets leaves: Bob is still present.
    bob2.unsubscribe("presence-room")
    wait_until(lambda: node.subscription_count(APP_ID, "presence-room") == 2, message="bob2 left")
    alice.expect_no("event", within=0.3, channel="presence-room", event="pusher:member_removed")
    status, body = sdk(node, "get", {"path": "/channels/presence-room/users"})
    assert status == 200 and sorted(u["id"] for u in body["users"]) == ["u1", "u2"]

    # Bob's last socket leaves (a disconnect, not an unsubscribe): member_removed once.
    bob.disconnect()
    removed = alice.expect_event("presence-room", "pusher:member_removed")
    assert removed["data"]["id"] == "u2"
    members = channel_state(alice, "presence-room")["members"]
    assert members["count"] == 1 and [m["id"] for m in members["members"]] == ["u1"]
    alice.expect_no("event", within=0.2, channel="presence-room", event="pusher:member_removed")


# --------------------------------------------------------------------------- client events


def test_client_events_relay_between_pusher_js_clients_on_private_and_presence_without_echo(node, js):
    a = js(node, auto_auth=signer("u1", "A"), raw=True)
    b = js(node, auto_auth=signer("u2", "B"), raw=True)
    a.wait_connected()
    b.wait_connected()
    for channel in ("private-chat", "presence-chat"):
        subscribed(a, channel)
        subscribed(b, channel)
    a.expect_event("presence-chat", "pusher:member_added")

    assert a.trigger("private-chat", "client-typing", {"who": "a"}) is True
    got = b.expect_event("private-chat", "client-typing")
    assert got["data"] == {"who": "a"}
    assert "user_id" not in json.loads(b.expect(raw_in("client-typing"))["data"])  # none on private channels

    assert b.trigger("presence-chat", "client-wave", {"who": "b"}) is True
    got = a.expect_event("presence-chat", "client-wave")
    assert got["data"] == {"who": "b"} and got["user_id"] == "u2"  # pusher-js's metadata
    # ... and it is in the frame the server sent
    frame = json.loads(a.expect(raw_in("client-wave"))["data"])
    assert frame["channel"] == "presence-chat" and frame["user_id"] == "u2"

    # Barrier for "not echoed": a second event from each sender arrives at the other side
    # after the first, so by then any echo of the first would have arrived as well.
    a.trigger("private-chat", "client-barrier", {})
    b.expect_event("private-chat", "client-barrier")
    b.trigger("presence-chat", "client-barrier", {})
    a.expect_event("presence-chat", "client-barrier")
    a.expect_no("event", within=0.2, event="client-typing")
    b.expect_no("event", within=0.01, event="client-wave")
    a.expect_no("event", within=0.01, channel="private-chat", event="client-barrier")
    b.expect_no("event", within=0.01, channel="presence-chat", event="client-barrier")


def test_presence_client_event_user_id_is_reported_by_the_driver(node, js):
    a = js(node, auto_auth=signer("u1", "A"))
    b = js(node, auto_auth=signer("u2", "B"))
    a.wait_connected()
    b.wait_connected()
    subscribed(a, "presence-meta")
    subscribed(b, "presence-meta")
    b.trigger("presence-meta", "client-wave", {"who": "b"})
    got = a.expect_event("presence-meta", "client-wave")
    assert got.get("user_id") == "u2"


def test_client_event_on_public_channel_is_rejected_with_error_and_not_relayed(node, js):
    a = js(node)
    b = js(node)
    a.wait_connected()
    b.wait_connected()
    subscribed(a, "public-room")
    subscribed(b, "public-room")

    a.trigger("public-room", "client-hack", {"x": 1})  # pusher-js sends it (returns true)
    err = a.expect(lambda e: e.get("type") == "error" and e.get("error_type") == "PusherError")
    assert "public-room" in err["message"]
    # still connected, and nothing reached the other subscriber
    node.broadcast(APP_ID, "public-room", "barrier", {})
    b.expect_event("public-room", "barrier")
    b.expect_no("event", within=0.1, event="client-hack")
    assert a.state()["state"] == "connected"


def test_client_event_rate_limit_surfaces_error_4301_and_keeps_connection(start_node, js):
    node = start_node(client_events_per_second=2)
    a = js(node, auto_auth=signer())
    b = js(node, auto_auth=signer())
    socket_id = a.wait_connected()
    b.wait_connected()
    subscribed(a, "private-burst")
    subscribed(b, "private-burst")

    for i in range(6):
        a.trigger("private-burst", "client-n", {"i": i})
    err = a.expect(is_pusher_error(4301))
    assert "per second" in err["message"]
    assert b.expect_event("private-burst", "client-n")["data"] == {"i": 0}
    node.broadcast(APP_ID, "private-burst", "barrier", {})
    b.expect_event("private-burst", "barrier")
    relayed = [e["data"]["i"] for e in app_events(b, "private-burst") if e["event"] == "client-n"]
    assert 1 <= len(relayed) < 6 and relayed == sorted(relayed)
    state = a.state()
    assert state["state"] == "connected" and state["socket_id"] == socket_id


# --------------------------------------------------------------------------- private-encrypted


def _decrypt(channel: str, data: str) -> Any:
    import nacl.secret

    payload = json.loads(data)
    assert set(payload) == {"nonce", "ciphertext"}, payload
    box = nacl.secret.SecretBox(hashlib.sha256(channel.encode() + MASTER_KEY).digest())
    plain = box.decrypt(base64.b64decode(payload["ciphertext"]), base64.b64decode(payload["nonce"]))
    return json.loads(plain)


def test_private_encrypted_event_from_node_sdk_is_relayed_as_ciphertext_and_decrypted_by_pusher_js(node, js):
    sign = with_str_shared_secret(signer(encryption_master_key_base64=MASTER_KEY_B64))
    a = js(node, auto_auth=sign, raw=True)
    b = js(node, auto_auth=sign)
    a.wait_connected()
    b.wait_connected()
    channel = "private-encrypted-vault"
    subscribed(a, channel)
    subscribed(b, channel)

    secret = {"pin": "1234", "note": "top secret"}
    status, body = sdk(node, "trigger", channel, "sealed", secret, options={"encryptionMasterKeyBase64": MASTER_KEY_B64})
    assert (status, body) == (200, {})
    assert a.expect_event(channel, "sealed")["data"] == secret
    assert b.expect_event(channel, "sealed")["data"] == secret

    frame = json.loads(a.expect(raw_in("sealed"))["data"])
    assert frame["channel"] == channel
    assert "1234" not in frame["data"] and "secret" not in frame["data"]
    assert _decrypt(channel, frame["data"]) == secret  # the SDK's ciphertext, relayed unchanged

    # Client events: pusher-js refuses them on encrypted channels...
    refused = a.request({"cmd": "trigger", "channel": channel, "event": "client-x", "data": {}}, check=False)
    assert refused["type"] == "driver_error" and refused["error_name"] == "UnsupportedFeature"
    # ...and so does the server when one is sent anyway.
    a.request({"cmd": "send_event", "event": "client-x", "channel": channel, "data": {"y": 1}})
    err = a.expect(lambda e: e.get("type") == "error" and e.get("error_type") == "PusherError")
    assert channel in (err["message"] or "")
    status, _ = sdk(node, "trigger", channel, "barrier", {}, options={"encryptionMasterKeyBase64": MASTER_KEY_B64})
    assert status == 200
    b.expect_event(channel, "barrier")  # (pusher-js drops events it cannot decrypt: use the SDK)
    b.expect_no("event", within=0.1, event="client-x")
    assert a.state()["state"] == "connected"


def test_sdk_signer_answers_private_encrypted_auth_without_a_wrapper(node, js):
    sign = signer(encryption_master_key_base64=MASTER_KEY_B64)
    a = js(node, auto_auth=sign, auth_timeout=500)
    a.wait_connected()
    a.subscribe("private-encrypted-plain-signer")
    outcome = a.expect(
        lambda e: e.get("type") == "event"
        and e.get("event") in ("pusher:subscription_succeeded", "pusher:subscription_error"),
        timeout=3,
    )
    assert outcome["event"] == "pusher:subscription_succeeded", outcome


# --------------------------------------------------------------------------- user authentication


@pytest.mark.single_node(reason="waits on subscription_count('#server-to-user-u7'), which a worker node "
                                "cannot answer: the HTTP API refuses #server-to-user- channels", also=("redis2",))
def test_signin_send_to_user_and_terminate_user_connections_4009_without_reconnect(node, js):
    a = js(node, auto_auth=signer("u7", "Seven"))
    a.wait_connected()
    a.signin()
    ok = a.expect("signin_success")
    assert ok["user_data"] == {"id": "u7", "user_info": {"name": "Seven"}}
    assert json.loads(ok["data"]["user_data"])["id"] == "u7"

    # pusher-js subscribes #server-to-user-u7 by itself after sign-in (outside allChannels()).
    wait_until(
        lambda: node.subscription_count(APP_ID, "#server-to-user-u7") == 1,
        message="pusher-js subscribed to #server-to-user-u7",
    )
    status, body = sdk(node, "sendToUser", "u7", "direct", {"hello": "u7"})
    assert (status, body) == (200, {})
    got = a.expect("user_event", event="direct")
    assert got["data"] == {"hello": "u7"}

    status, _ = sdk(node, "terminateUserConnections", "u7")
    assert status == 200
    closed = a.expect("socket_closed")
    assert closed["code"] == 4009
    a.expect(lambda e: e.get("type") == "state" and e.get("current") == "disconnected")
    assert_no_reconnect(a)


# --------------------------------------------------------------------------- cache channels, counts


def test_cache_channel_reports_cache_miss_then_gives_last_event_to_a_later_subscriber(node, js):
    first = js(node)
    first.wait_connected()
    subscribed(first, "cache-ticker")
    first.expect_event("cache-ticker", "pusher:cache_miss")

    status, _ = sdk(node, "trigger", "cache-ticker", "price", {"v": 1})
    assert status == 200
    node.broadcast(APP_ID, "cache-ticker", "price", {"v": 2})
    first.expect_event("cache-ticker", "price", data={"v": 1})
    first.expect_event("cache-ticker", "price", data={"v": 2})

    later = js(node)
    later.wait_connected()
    subscribed(later, "cache-ticker")
    got = later.expect_event("cache-ticker", "price")
    assert got["data"] == {"v": 2}
    later.expect_no("event", within=0.2, channel="cache-ticker", event="pusher:cache_miss")
    assert [e["data"] for e in app_events(later, "cache-ticker")] == [{"v": 2}]


def test_subscription_count_event_reaches_pusher_js_when_enabled(start_node, js):
    node = start_node(enable_subscription_count=True)
    a = js(node)
    b = js(node)
    a.wait_connected()
    b.wait_connected()
    subscribed(a, "counted")
    subscribed(b, "counted")
    for c in (a, b):
        ev = c.expect(
            lambda e: e.get("type") == "event"
            and e.get("event") == "pusher:subscription_count"
            and (e.get("data") or {}).get("subscription_count") == 2,
            timeout=5,
        )
        assert ev["channel"] == "counted"
    assert channel_state(a, "counted")["subscription_count"] == 2

    b.unsubscribe("counted")
    a.expect(
        lambda e: e.get("type") == "event"
        and e.get("event") == "pusher:subscription_count"
        and (e.get("data") or {}).get("subscription_count") == 1,
        timeout=5,
    )


# --------------------------------------------------------------------------- errors, reconnects, activity


def test_unknown_app_key_closes_4001_and_pusher_js_does_not_reconnect(node, js):
    client = js(node, key="no-such-key")
    client.expect("socket_open_attempt", socket=1)
    closed = client.expect("socket_closed", timeout=5)
    assert closed["code"] == 4001
    err = client.expect("error", code=4001)
    assert err["message"]
    client.expect(lambda e: e.get("type") == "state" and e.get("current") == "disconnected")
    assert_no_reconnect(client)


@pytest.mark.single_node(reason="reads node.port twice and expects the same port; under redis2 it "
                                "alternates on every read", also=("workers2",))
def test_node_stop_closes_4200_and_pusher_js_tries_to_reconnect(start_node, js):
    node = start_node()
    client = js(node)
    client.wait_connected()
    client.expect("socket_open")
    node.stop()
    closed = client.expect("socket_closed", timeout=10)
    assert closed["code"] == 4200, (closed, client.events[-12:])
    client.expect(lambda e: e.get("type") == "state" and e.get("current") == "connecting", timeout=5)
    # 4200 means "reconnect now": pusher-js opens a new socket at once (refused: the node is gone).
    attempt = client.expect("socket_open_attempt", socket=2, timeout=10)
    assert attempt["url"].startswith(f"ws://{HOST}:{node.port}/app/{KEY}?protocol=7")
    client.expect_no(lambda e: e.get("type") == "state" and e.get("current") in ("disconnected", "failed"), within=0.01)


def test_activity_timeout_is_announced_and_pusher_js_pings_are_answered_across_periods(start_node, js):
    node = start_node(activity_timeout=1)
    # pusher-js takes min(its option, the server's value): 400 ms here, so it is pusher-js that
    # pings (before the server's 1 s); pong_timeout 800 ms: a missing pong would drop the socket.
    client = js(node, raw=True, activity_timeout=400, pong_timeout=800)
    socket_id = client.wait_connected()
    hello = json.loads(client.expect(raw_in("pusher:connection_established"))["data"])
    assert json.loads(hello["data"]) == {"socket_id": socket_id, "activity_timeout": 1}

    started = time.monotonic()
    rounds = 0
    while time.monotonic() - started < 2.5 or rounds < 3:  # more than two server activity periods
        client.expect(raw_out("pusher:ping"), timeout=3)
        client.expect(raw_in("pusher:pong"), timeout=2)
        rounds += 1
        assert rounds < 20
    state = client.state()
    assert state["state"] == "connected" and state["socket_id"] == socket_id
    client.expect_no("socket_closed", within=0.01)
    client.expect_no("connected", within=0.01)  # no reconnect happened

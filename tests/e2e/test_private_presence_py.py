"""End to end: private, presence, encrypted and cache channels, client events and sign-in.

``websocket-client`` connections (:class:`tests.wsclient.PusherClient`) to a real node
on 127.0.0.1 port 0 (the ``start_node``/``node`` fixtures of tests/conftest.py); channel and
user auth come from the official python ``pusher`` SDK (``authenticate`` and
``authenticate_user``), as a Python app's auth endpoint would produce them. Every
receive is bounded; "nothing else arrived" is proven with a ping barrier (the pong
comes after anything already queued for that socket).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import nacl.secret
import pusher
import pytest
import websocket

from actors import Node
from tests.wsclient import PusherClient

TIMEOUT = 5.0
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()

INSTANT_REPLICA = (
    "asserts presence replication is instant: a member who joined on one node a moment before is "
    "missing from the next joiner's subscription_succeeded on the other node (the replica lags ~1 ms) "
    "and reaches it as a member_added instead"
)


@pytest.fixture
def sdk():
    return pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", ssl=False,
                         encryption_master_key_base64=MASTER_KEY)


def join_presence(sdk, client: PusherClient, channel: str, user_id: str, user_info: Any = None) -> dict[str, Any]:
    custom = {"user_id": user_id} if user_info is None else {"user_id": user_id, "user_info": user_info}
    return client.subscribe(channel, **sdk.authenticate(channel=channel, socket_id=client.socket_id, custom_data=custom))


def join_private(sdk, client: PusherClient, channel: str) -> dict[str, Any]:
    auth = sdk.authenticate(channel=channel, socket_id=client.socket_id)
    return client.subscribe(channel, auth=auth["auth"])


def signin(sdk, client: PusherClient, user_id: str) -> None:
    assert json.loads(client.signin(sdk, user_id)["data_decoded"]["user_data"]) == {"id": user_id}


def event_data(message: dict[str, Any]) -> Any:
    """An event's data as pusher-js hands it to the app (it parses a JSON string)."""
    data = message["data"]
    return json.loads(data) if isinstance(data, str) else data


def assert_subscription_auth_error(message: dict[str, Any], channel: str) -> None:
    assert message["event"] == "pusher:subscription_error", message
    assert message["channel"] == channel
    assert message["data_decoded"]["type"] == "AuthError"
    assert message["data_decoded"]["status"] == 401
    assert isinstance(message["data_decoded"]["error"], str) and message["data_decoded"]["error"]


# --- private channels ---------------------------------------------------------------


def test_private_channel_subscription_with_sdk_auth_succeeds_and_gets_events(sdk, node, connect):
    a = connect()
    assert join_private(sdk, a, "private-room")["data_decoded"] == {}
    node.broadcast("1", "private-room", "news", {"x": 1})
    assert json.loads(a.expect("news", "private-room")["data"]) == {"x": 1}


def _wrong_auths(sdk, socket_id: str) -> dict[str, dict[str, Any]]:
    good = sdk.authenticate(channel="private-room", socket_id=socket_id)["auth"]
    key, signature = good.split(":")
    return {
        "missing": {},
        "empty": {"auth": ""},
        "no-colon": {"auth": signature},
        "other-key": {"auth": f"other-key:{signature}"},
        "bad-signature": {"auth": f"{key}:{'0' * 64}"},
        "other-socket": {"auth": sdk.authenticate(channel="private-room", socket_id="1.1")["auth"]},
        "other-channel": {"auth": sdk.authenticate(channel="private-other", socket_id=socket_id)["auth"]},
        "other-secret": {"auth": pusher.Pusher(app_id="1", key="app-key", secret="nope").authenticate(
            channel="private-room", socket_id=socket_id)["auth"]},
    }


@pytest.mark.parametrize("case", ["missing", "empty", "no-colon", "other-key", "bad-signature", "other-socket",
                                  "other-channel", "other-secret"])
def test_private_subscription_with_wrong_auth_is_an_auth_error_and_the_socket_keeps_working(sdk, connect, case):
    a = connect()
    a.send_event("pusher:subscribe", {"channel": "private-room", **_wrong_auths(sdk, a.socket_id)[case]})
    assert_subscription_auth_error(a.recv(), "private-room")
    assert a.until_pong() == []
    a.subscribe("public-room")
    join_private(sdk, a, "private-room")  # the right auth still works on the same socket


def test_presence_subscription_with_tampered_channel_data_is_an_auth_error(sdk, connect):
    a = connect()
    auth = sdk.authenticate(channel="presence-room", socket_id=a.socket_id, custom_data={"user_id": "u1"})
    a.send_event("pusher:subscribe", {"channel": "presence-room", "auth": auth["auth"],
                                "channel_data": json.dumps({"user_id": "admin"})})
    assert_subscription_auth_error(a.recv(), "presence-room")
    assert a.until_pong() == []


# --- presence -----------------------------------------------------------------------------


@pytest.mark.single_node(reason=INSTANT_REPLICA)
def test_presence_subscription_succeeded_carries_ids_hash_and_count(sdk, connect):
    a, b = connect(), connect()
    first = join_presence(sdk, a, "presence-room", "u1", {"name": "Ann"})
    assert first["data_decoded"] == {"presence": {"ids": ["u1"], "hash": {"u1": {"name": "Ann"}}, "count": 1}}
    second = join_presence(sdk, b, "presence-room", "u2", {"name": "Bob"})
    presence = second["data_decoded"]["presence"]
    assert sorted(presence["ids"]) == ["u1", "u2"]
    assert presence["hash"] == {"u1": {"name": "Ann"}, "u2": {"name": "Bob"}}
    assert presence["count"] == 2


@pytest.mark.single_node(reason=INSTANT_REPLICA)
def test_numeric_user_id_is_a_string_in_presence_events(sdk, connect):
    a, b = connect(), connect()
    join_presence(sdk, a, "presence-room", "u1")
    auth = sdk.authenticate(channel="presence-room", socket_id=b.socket_id, custom_data={"user_id": 42})
    assert sorted(b.subscribe("presence-room", **auth)["data_decoded"]["presence"]["ids"]) == ["42", "u1"]
    added = a.expect("pusher_internal:member_added", "presence-room")
    assert added["data_decoded"]["user_id"] == "42"


@pytest.mark.single_node(reason=INSTANT_REPLICA)
def test_member_added_goes_to_the_others_once_per_user_never_to_the_joiner(sdk, connect):
    a, b1, b2 = connect(), connect(), connect()
    join_presence(sdk, a, "presence-room", "u1")
    join_presence(sdk, b1, "presence-room", "u2", {"name": "Bob"})
    added = a.expect("pusher_internal:member_added", "presence-room")
    assert added["data_decoded"] == {"user_id": "u2", "user_info": {"name": "Bob"}}
    second = join_presence(sdk, b2, "presence-room", "u2", {"name": "Bob"})  # the same user's second socket
    assert second["data_decoded"]["presence"]["count"] == 2
    assert a.until_pong() == []  # no second member_added for u2
    assert b1.until_pong() == []  # the user is not told about its own second socket
    assert b2.until_pong() == []


def wait_for_subscribers(node, channel: str, count: int) -> None:
    """Poll (bounded) until the node counts ``count`` subscribers of ``channel``."""
    deadline = time.monotonic() + TIMEOUT
    while node.subscription_count("1", channel) != count:
        assert time.monotonic() < deadline, f"{channel} never reached {count} subscribers"
        time.sleep(0.01)


@pytest.mark.single_node(reason=INSTANT_REPLICA)
def test_member_removed_only_when_the_users_last_socket_unsubscribes(sdk, node, connect):
    a, b1, b2 = connect(), connect(), connect()
    join_presence(sdk, a, "presence-room", "u1")
    join_presence(sdk, b1, "presence-room", "u2")
    join_presence(sdk, b2, "presence-room", "u2")
    a.expect("pusher_internal:member_added", "presence-room")
    b1.unsubscribe("presence-room")
    assert b1.until_pong() == []  # unsubscribe has no reply
    wait_for_subscribers(node, "presence-room", 2)  # the channel has seen b1 leave
    assert a.until_pong() == []  # u2 still has a socket in the channel
    b2.unsubscribe("presence-room")
    removed = a.expect("pusher_internal:member_removed", "presence-room")
    assert removed["data_decoded"] == {"user_id": "u2"}


def test_member_removed_only_when_the_users_last_socket_disconnects(sdk, node, connect):
    a, b1, b2 = connect(), connect(), connect()
    join_presence(sdk, a, "presence-room", "u1")
    join_presence(sdk, b1, "presence-room", "u2")
    join_presence(sdk, b2, "presence-room", "u2")
    a.expect("pusher_internal:member_added", "presence-room")
    b1.close()
    wait_for_subscribers(node, "presence-room", 2)  # the channel has seen b1 leave: a and b2 remain
    assert a.until_pong() == []  # u2 still has b2 in the channel
    b2.close()
    removed = a.expect("pusher_internal:member_removed", "presence-room")
    assert removed["data_decoded"] == {"user_id": "u2"}


def test_presence_member_limit_refuses_a_new_user_but_admits_a_members_second_socket(start_node, open_client, sdk):
    node = start_node(max_presence_members=2)
    a, b, c, a2 = (open_client(node) for _ in range(4))
    join_presence(sdk, a, "presence-room", "u1")
    join_presence(sdk, b, "presence-room", "u2")
    a.expect("pusher_internal:member_added", "presence-room")
    c.send_event("pusher:subscribe", {"channel": "presence-room", **sdk.authenticate(
        channel="presence-room", socket_id=c.socket_id, custom_data={"user_id": "u3"})})
    refused = c.recv()
    assert refused["event"] == "pusher:subscription_error" and refused["channel"] == "presence-room", refused
    assert refused["data_decoded"]["status"] in (403, 429), refused
    assert a.until_pong() == []  # no member_added for the refused user
    assert c.until_pong() == []
    assert join_presence(sdk, a2, "presence-room", "u1")["data_decoded"]["presence"]["count"] == 2


def test_client_event_from_a_socket_refused_by_the_presence_limit_is_a_pusher_error(start_node, open_client, sdk):
    node = start_node(max_presence_members=1)
    member, refused = open_client(node), open_client(node)
    join_presence(sdk, member, "presence-room", "u1")
    refused.send_event("pusher:subscribe", {"channel": "presence-room", **sdk.authenticate(
        channel="presence-room", socket_id=refused.socket_id, custom_data={"user_id": "u2"})})
    assert refused.expect("pusher:subscription_error", "presence-room")["data_decoded"]["status"] == 403
    refused.send_event("client-hi", {"x": 1}, channel="presence-room")
    replies = refused.until_pong()
    assert member.until_pong() == []  # nothing relayed, whatever the bug
    assert [m["event"] for m in replies] == ["pusher:error"], replies


def test_presence_user_info_over_the_limit_is_refused_and_nobody_hears_of_it(sdk, connect):
    a, b = connect(), connect()
    join_presence(sdk, a, "presence-room", "u1")
    auth = sdk.authenticate(channel="presence-room", socket_id=b.socket_id,
                            custom_data={"user_id": "u2", "user_info": {"bio": "x" * 3000}})
    b.send_event("pusher:subscribe", {"channel": "presence-room", **auth})
    refused = b.recv()
    if refused["event"] == "pusher:error":
        assert refused["data"]["code"] == 4303, refused
    else:
        assert refused["event"] == "pusher:subscription_error" and refused["channel"] == "presence-room", refused
        assert refused["data_decoded"]["status"] in (400, 403, 413), refused
    assert a.until_pong() == []
    assert b.until_pong() == []


# --- client events ------------------------------------------------------------------


def test_client_event_on_a_private_channel_reaches_the_others_but_not_the_sender(sdk, connect):
    sender, receiver = connect(), connect()
    join_private(sdk, sender, "private-chat")
    join_private(sdk, receiver, "private-chat")
    sender.send_event("client-typing", {"who": "me"}, channel="private-chat")
    message = receiver.expect("client-typing", "private-chat")
    assert event_data(message) == {"who": "me"}
    assert "user_id" not in message
    assert sender.until_pong() == []


@pytest.mark.single_node(reason=INSTANT_REPLICA)
def test_client_event_on_a_presence_channel_carries_the_senders_user_id(sdk, connect):
    sender, receiver = connect(), connect()
    join_presence(sdk, receiver, "presence-chat", "u2")
    join_presence(sdk, sender, "presence-chat", "u1")
    receiver.expect("pusher_internal:member_added", "presence-chat")
    sender.send_event("client-hello", {"text": "hi"}, channel="presence-chat")
    message = receiver.expect("client-hello", "presence-chat")
    assert event_data(message) == {"text": "hi"}
    assert message["user_id"] == "u1"
    assert sender.until_pong() == []


def test_client_event_over_max_event_bytes_is_refused_and_not_relayed(sdk, connect):
    sender, receiver = connect(), connect()
    join_private(sdk, sender, "private-chat")
    join_private(sdk, receiver, "private-chat")
    sender.send_event("client-big", {"blob": "x" * (10 * 1024 + 600)}, channel="private-chat")
    error = sender.expect("pusher:error")
    assert "10240" in error["data"]["message"]
    assert sender.until_pong() == []
    sender.send_event("client-small", {"n": 1}, channel="private-chat")
    receiver.expect("client-small", "private-chat")  # the next thing relayed: the big one never was


def _assert_client_event_refused(node: Node, sender: PusherClient, receiver: PusherClient, channel: str) -> None:
    sender.send_event("client-nope", {"x": 1}, channel=channel)
    error = sender.recv()
    assert error["event"] == "pusher:error", error
    assert isinstance(error["data"]["message"], str) and error["data"]["message"]
    assert sender.until_pong() == []  # the socket stays open
    # A relay, had there been one, left the sender's actor before its pong; a broadcast
    # made now takes the same path after it, so it must be the receiver's next message.
    node.broadcast("1", channel, "marker", "m")
    receiver.expect("marker", channel)


def test_client_event_on_a_public_channel_is_refused(sdk, node, connect):
    sender, receiver = connect(), connect()
    sender.subscribe("public-chat")
    receiver.subscribe("public-chat")
    _assert_client_event_refused(node, sender, receiver, "public-chat")


def test_client_event_on_a_private_encrypted_channel_is_refused(sdk, node, connect):
    sender, receiver = connect(), connect()
    join_private(sdk, sender, "private-encrypted-chat")
    join_private(sdk, receiver, "private-encrypted-chat")
    _assert_client_event_refused(node, sender, receiver, "private-encrypted-chat")


def test_client_event_on_a_channel_the_sender_did_not_join_is_refused(sdk, node, connect):
    sender, receiver = connect(), connect()
    join_private(sdk, receiver, "private-chat")
    _assert_client_event_refused(node, sender, receiver, "private-chat")


def test_client_event_after_unsubscribing_is_refused(sdk, node, connect):
    sender, receiver = connect(), connect()
    join_private(sdk, sender, "private-chat")
    join_private(sdk, receiver, "private-chat")
    sender.unsubscribe("private-chat")
    _assert_client_event_refused(node, sender, receiver, "private-chat")


def test_client_events_are_refused_when_the_app_disables_them(start_node, open_client, sdk):
    node = start_node(enable_client_messages=False)
    sender, receiver = open_client(node), open_client(node)
    join_private(sdk, sender, "private-chat")
    join_private(sdk, receiver, "private-chat")
    _assert_client_event_refused(node, sender, receiver, "private-chat")


@pytest.mark.single_node(reason="the receiver's ping is the barrier for client events relayed from the "
                                "sender's node: across two nodes the pong can overtake them")
def test_client_events_over_the_rate_limit_are_rejected_with_4301(start_node, open_client, sdk):
    node = start_node(client_events_per_second=3)
    sender, receiver = open_client(node), open_client(node)
    join_private(sdk, sender, "private-chat")
    join_private(sdk, receiver, "private-chat")
    started = time.monotonic()
    for n in range(5):
        sender.send_event("client-burst", {"n": n}, channel="private-chat")
    errors = sender.until_pong()
    if time.monotonic() - started >= 1.0:
        pytest.skip("the burst took over a second: the rate window moved on")
    assert [e["event"] for e in errors] == ["pusher:error", "pusher:error"], errors
    assert {e["data"]["code"] for e in errors} == {4301}
    assert [event_data(m)["n"] for m in receiver.until_pong()] == [0, 1, 2]


# --- encrypted channels ---------------------------------------------------------------------


def test_private_encrypted_channel_relays_the_sdks_ciphertext_unchanged(sdk, node, connect):
    a = connect()
    auth = sdk.authenticate(channel="private-encrypted-vault", socket_id=a.socket_id)
    a.subscribe("private-encrypted-vault", auth=auth["auth"])
    server = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port,
                           ssl=False, timeout=TIMEOUT, encryption_master_key_base64=MASTER_KEY)
    server.trigger("private-encrypted-vault", "secret", {"code": 1234})
    message = a.expect("secret", "private-encrypted-vault")
    envelope = json.loads(message["data"])
    assert set(envelope) == {"nonce", "ciphertext"}
    box = nacl.secret.SecretBox(base64.b64decode(auth["shared_secret"]))
    plain = box.decrypt(base64.b64decode(envelope["ciphertext"]), base64.b64decode(envelope["nonce"]))
    assert json.loads(plain) == {"code": 1234}


def test_private_encrypted_channel_needs_auth(sdk, connect):
    a = connect()
    a.send_event("pusher:subscribe", {"channel": "private-encrypted-vault"})
    assert_subscription_auth_error(a.recv(), "private-encrypted-vault")


# --- cache channels ------------------------------------------------------------------------

CACHE_CHANNELS = ["cache-prices", "private-cache-prices", "presence-cache-prices", "private-encrypted-cache-prices"]


def _subscribe_any(sdk, client: PusherClient, channel: str, user_id: str = "u1") -> None:
    if channel.startswith("presence-"):
        join_presence(sdk, client, channel, user_id)
    elif channel.startswith("private-"):
        join_private(sdk, client, channel)
    else:
        client.subscribe(channel)


@pytest.mark.parametrize("channel", CACHE_CHANNELS)
def test_cache_channel_with_nothing_cached_sends_cache_miss_after_subscription_succeeded(sdk, connect, channel):
    a = connect()
    _subscribe_any(sdk, a, channel)
    a.expect("pusher:cache_miss", channel)
    assert a.until_pong() == []


@pytest.mark.parametrize("channel", CACHE_CHANNELS)
def test_cache_channel_sends_the_last_event_to_a_new_subscriber(sdk, node, connect, channel):
    server = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port,
                           ssl=False, timeout=TIMEOUT, encryption_master_key_base64=MASTER_KEY)
    server.trigger(channel, "price", "1")  # nobody subscribed yet: kept anyway
    server.trigger(channel, "price", "2")
    a = connect()
    _subscribe_any(sdk, a, channel)
    cached = a.expect("price", channel)
    assert a.until_pong() == []
    if channel.startswith("private-encrypted-"):
        assert set(json.loads(cached["data"])) == {"nonce", "ciphertext"}
    else:
        assert cached["data"] == "2"
    server.trigger(channel, "price", "3")
    b = connect()
    _subscribe_any(sdk, b, channel, "u2")
    latest = b.expect("price", channel)
    assert latest != cached
    assert b.until_pong() == []


@pytest.mark.single_node(reason="expects an event answered 200 before the subscribe never to reach the "
                                "subscriber; across nodes it may still be on its way to the subscriber's node")
def test_a_name_merely_containing_cache_is_not_a_cache_channel(sdk, node, connect):
    server = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port,
                           ssl=False, timeout=TIMEOUT)
    server.trigger(["xcache-y", "my-cache-z"], "price", "1")
    a = connect()
    a.subscribe("xcache-y")
    a.subscribe("my-cache-z")
    assert a.until_pong() == []  # neither a cache_miss nor a replayed event


# --- subscription_count -------------------------------------------------------------------


def _wait_for_count(client: PusherClient, channel: str, count: int, timeout: float = 4.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no subscription_count {count} on {channel}"
        message = client.recv(remaining)
        if message["event"] == "pusher_internal:subscription_count":
            assert message["channel"] == channel
            assert set(message["data_decoded"]) == {"subscription_count"}
            if message["data_decoded"]["subscription_count"] == count:
                return


def test_subscribers_hear_the_subscription_count_after_joins_and_leaves_when_the_app_enables_it(start_node, open_client):
    node = start_node(enable_subscription_count=True)
    a, b = open_client(node), open_client(node)
    a.subscribe("room")
    b.subscribe("room")
    _wait_for_count(a, "room", 2)
    _wait_for_count(b, "room", 2)
    b.unsubscribe("room")
    _wait_for_count(a, "room", 1)  # and again when one leaves


def test_no_subscription_count_events_unless_the_app_enables_them(node, connect):
    a, b = connect(), connect()
    a.subscribe("room")
    b.subscribe("room")
    with pytest.raises(websocket.WebSocketTimeoutException):
        a.recv(timeout=1.3)  # longer than the 1 s throttle: a count would have come by now


# --- names, reserved channels and sign-in ------------------------------------------------------


@pytest.mark.parametrize(
    "channel",
    ["bad channel", "caf\u00e9", "c" * 201, "", "#server-to-user-"],
    ids=["space", "non-ascii", "too-long", "empty", "server-to-user-no-id"],
)
def test_invalid_channel_name_is_a_pusher_error_and_the_connection_keeps_working(connect, channel):
    a = connect()
    a.send_event("pusher:subscribe", {"channel": channel})
    error = a.expect("pusher:error")
    assert error["data"]["code"] == 4302, error
    assert a.until_pong() == []
    a.subscribe("fine")


def test_client_event_with_a_too_long_name_is_a_pusher_error_and_the_connection_keeps_working(sdk, connect):
    a, b = connect(), connect()
    join_private(sdk, a, "private-chat")
    join_private(sdk, b, "private-chat")
    a.send_event("client-" + "x" * 200, {}, channel="private-chat")
    assert a.expect("pusher:error")["data"]["code"] == 4302
    assert a.until_pong() == []
    assert b.until_pong() == []
    a.send_event("client-ok", {}, channel="private-chat")
    b.expect("client-ok", "private-chat")


def test_server_to_user_channel_is_refused_unless_signed_in_as_that_user(sdk, connect):
    a = connect()
    a.send_event("pusher:subscribe", {"channel": "#server-to-user-u1"})
    assert a.expect("pusher:error")["data"]["code"] == 4302  # not signed in
    signin(sdk, a, "u2")
    a.send_event("pusher:subscribe", {"channel": "#server-to-user-u1"})
    assert a.expect("pusher:error")["data"]["code"] == 4302  # signed in as someone else
    assert a.until_pong() == []
    a.subscribe("#server-to-user-u2")  # its own channel is fine


def test_signin_with_bad_auth_closes_the_connection_with_4009(sdk, connect):
    a = connect()
    good = sdk.authenticate_user(a.socket_id, {"id": "u1"})
    a.send_event("pusher:signin", {"auth": good["auth"], "user_data": json.dumps({"id": "admin"})})
    code, before = a.expect_close()
    assert code == 4009
    assert [m["event"] for m in before] == ["pusher:error"]
    assert before[0]["data"]["code"] == 4009


def test_signin_with_auth_made_for_another_socket_closes_with_4009(sdk, connect):
    a = connect()
    a.send_event("pusher:signin", sdk.authenticate_user("1.2", {"id": "u1"}))
    assert a.expect_close()[0] == 4009

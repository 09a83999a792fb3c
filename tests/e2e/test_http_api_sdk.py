"""End to end: the official python ``pusher`` SDK drives a real node's HTTP API.

A node listens on 127.0.0.1 port 0; WebSocket subscribers use ``websocket-client``
(:class:`tests.wsclient.PusherClient`);
the server side is ``pusher.Pusher`` talking HTTP to the same port. Every receive is
bounded, and "nothing else arrived" is proven with a ping barrier: the connection
answers ``pusher:pong`` in order, after anything already queued for it.
"""

from __future__ import annotations

import json
from typing import Any

import pusher
import pusher.errors
import pytest
import requests

from tests.conftest import wait_until
from tests.wsclient import PusherClient
from transport.http_signing import sign_request

TIMEOUT = 5.0


@pytest.fixture
def sdk(node):
    return pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port,
                         ssl=False, timeout=TIMEOUT)


def presence_auth(sdk: pusher.Pusher, client: PusherClient, channel: str, user_id: str) -> dict[str, Any]:
    return sdk.authenticate(channel=channel, socket_id=client.socket_id, custom_data={"user_id": user_id})


# --- trigger -----------------------------------------------------------------------


def test_trigger_reaches_every_subscriber_of_the_channel_and_no_other(sdk, connect):
    a, b, other = connect(), connect(), connect()
    a.subscribe("news")
    b.subscribe("news")
    other.subscribe("sport")
    assert sdk.trigger("news", "headline", {"title": "hi/there", "n": 1}) == {}
    for client in (a, b):
        message = client.expect("headline", "news")
        assert isinstance(message["data"], str)  # data travels as a string
        assert json.loads(message["data"]) == {"title": "hi/there", "n": 1}
    sdk.trigger("sport", "marker", "m")
    other.expect("marker", "sport")  # its next message: the headline never came


def test_trigger_to_several_channels_reaches_each_channels_subscribers(sdk, connect):
    a, b = connect(), connect()
    a.subscribe("ch-a")
    b.subscribe("ch-b")
    sdk.trigger(["ch-a", "ch-b"], "update", "plain")
    assert a.expect("update", "ch-a")["data"] == "plain"
    assert b.expect("update", "ch-b")["data"] == "plain"


def test_string_data_is_delivered_verbatim_not_encoded_again(sdk, connect):
    a = connect()
    a.subscribe("news")
    sdk.trigger("news", "text", 'already "json"? {no}')
    sdk.trigger("news", "json-text", '{"x": 1}')
    assert a.expect("text", "news")["data"] == 'already "json"? {no}'
    assert a.expect("json-text", "news")["data"] == '{"x": 1}'


def test_trigger_with_socket_id_skips_that_subscriber_only(sdk, connect):
    sender, receiver = connect(), connect()
    sender.subscribe("room")
    receiver.subscribe("room")
    sdk.trigger("room", "said", {"x": 1}, socket_id=sender.socket_id)
    receiver.expect("said", "room")
    assert sender.until_pong() == []


def test_trigger_batch_delivers_every_event_in_order(sdk, connect):
    a, b = connect(), connect()
    a.subscribe("batch-a")
    b.subscribe("batch-b")
    sdk.trigger_batch([
        {"channel": "batch-a", "name": "first", "data": {"n": 1}},
        {"channel": "batch-b", "name": "second", "data": "two"},
        {"channel": "batch-a", "name": "third", "data": "three"},
    ])
    assert json.loads(a.expect("first", "batch-a")["data"]) == {"n": 1}
    assert a.expect("third", "batch-a")["data"] == "three"
    assert b.expect("second", "batch-b")["data"] == "two"


# --- channel queries ----------------------------------------------------------------


def test_channels_info_filters_by_prefix_and_reports_attributes(sdk, connect):
    a, b, c = connect(), connect(), connect()
    a.subscribe("pub-one")
    b.subscribe("pub-one")
    b.subscribe("pub-two")
    c.subscribe("other")
    a.subscribe("presence-room", **presence_auth(sdk, a, "presence-room", "u1"))
    b.subscribe("presence-room", **presence_auth(sdk, b, "presence-room", "u1"))  # same user, second socket
    c.subscribe("presence-room", **presence_auth(sdk, c, "presence-room", "u2"))

    assert sdk.channels_info() == {
        "channels": {"pub-one": {}, "pub-two": {}, "other": {}, "presence-room": {}}
    }
    assert sdk.channels_info(prefix_filter="pub-", attributes=["subscription_count"]) == {
        "channels": {"pub-one": {"subscription_count": 2}, "pub-two": {"subscription_count": 1}}
    }
    assert sdk.channels_info(prefix_filter="presence-", attributes=["user_count", "subscription_count"]) == {
        "channels": {"presence-room": {"user_count": 2, "subscription_count": 3}}
    }
    with pytest.raises(pusher.errors.PusherBadRequest):
        sdk.channels_info(attributes=["user_count"])  # user_count needs the presence- prefix


def test_channel_info_is_occupied_while_subscribed_and_unoccupied_after_the_last_leaves(sdk, connect):
    assert sdk.channel_info("lonely") == {"occupied": False}
    a = connect()
    a.subscribe("lonely")
    assert sdk.channel_info("lonely", ["subscription_count"]) == {"occupied": True, "subscription_count": 1}
    a.unsubscribe("lonely")
    wait_until(lambda: sdk.channel_info("lonely") == {"occupied": False}, message="channel still occupied")


def test_channel_info_of_a_presence_channel_counts_users(sdk, connect):
    a, b = connect(), connect()
    a.subscribe("presence-x", **presence_auth(sdk, a, "presence-x", "u1"))
    b.subscribe("presence-x", **presence_auth(sdk, b, "presence-x", "u2"))
    assert sdk.channel_info("presence-x", ["user_count", "subscription_count"]) == {
        "occupied": True, "user_count": 2, "subscription_count": 2,
    }


def test_users_info_lists_the_members_of_a_presence_channel(sdk, connect):
    a, b, c = connect(), connect(), connect()
    for client, user in ((a, "u1"), (b, "u2"), (c, "u1")):
        client.subscribe("presence-room", **presence_auth(sdk, client, "presence-room", user))
    users = sdk.users_info("presence-room")["users"]
    assert sorted(user["id"] for user in users) == ["u1", "u2"]
    with pytest.raises(pusher.errors.PusherBadRequest):
        sdk.users_info("not-presence")


def test_channel_names_with_every_allowed_punctuation_work_through_the_sdk(sdk, connect):
    channel = "presence-a@b;c,d=e.f_g-h"
    a, b = connect(), connect()
    a.subscribe(channel, **presence_auth(sdk, a, channel, "u1"))
    b.subscribe("x=y;z,w@v")
    assert sdk.channel_info(channel, ["user_count"]) == {"occupied": True, "user_count": 1}
    assert sdk.users_info(channel) == {"users": [{"id": "u1"}]}
    assert sdk.channels_info(prefix_filter="x=y;") == {"channels": {"x=y;z,w@v": {}}}
    sdk.trigger(["x=y;z,w@v", channel], "e", "d")
    b.expect("e", "x=y;z,w@v")
    a.expect("e", channel)


def test_trigger_with_info_answers_the_live_counts_of_each_channel(node, sdk, connect):
    a, b, c = connect(), connect(), connect()
    a.subscribe("news")
    b.subscribe("news")
    a.subscribe("presence-room", **presence_auth(sdk, a, "presence-room", "u1"))
    b.subscribe("presence-room", **presence_auth(sdk, b, "presence-room", "u1"))
    c.subscribe("presence-room", **presence_auth(sdk, c, "presence-room", "u2"))
    body = json.dumps({"name": "e", "channels": ["news", "presence-room", "empty"], "data": "x",
                       "info": "subscription_count,user_count"}).encode()
    query = sign_request("POST", "/apps/1/events", {}, "app-key", "app-secret", body)
    response = requests.post(f"http://127.0.0.1:{node.port}/apps/1/events", params=query, data=body,
                             headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json() == {"channels": {
        "news": {"subscription_count": 2},
        "presence-room": {"subscription_count": 3, "user_count": 2},
        "empty": {"subscription_count": 0},
    }}


# --- users ------------------------------------------------------------------------


def test_terminate_user_connections_closes_every_socket_of_that_user_with_4009(sdk, connect):
    first, second, bystander, anonymous = connect(), connect(), connect(), connect()
    first.signin(sdk, "u1")
    second.signin(sdk, "u1")
    bystander.signin(sdk, "u2")
    assert sdk.terminate_user_connections("u1") == {}
    assert first.expect_close()[0] == 4009
    assert second.expect_close()[0] == 4009
    assert bystander.until_pong() == []
    assert anonymous.until_pong() == []


def test_send_to_user_reaches_the_signed_in_user_on_the_server_to_user_channel(sdk, connect):
    user, other = connect(), connect()
    user.signin(sdk, "u1")
    user.subscribe("#server-to-user-u1")  # pusher-js subscribes after signin_success
    other.signin(sdk, "u2")
    other.subscribe("#server-to-user-u2")
    assert sdk.send_to_user("u1", "private-note", {"text": "for you"}) == {}
    message = user.expect("private-note", "#server-to-user-u1")
    assert json.loads(message["data"]) == {"text": "for you"}
    sdk.send_to_user("u2", "marker", "m")
    other.expect("marker", "#server-to-user-u2")  # its next message: u1's note never came


def test_send_to_user_is_not_in_the_channel_list(sdk, connect):
    user = connect()
    user.signin(sdk, "u1")
    user.subscribe("#server-to-user-u1")
    assert sdk.channels_info() == {"channels": {}}


# --- errors as the SDK sees them ---------------------------------------------------------


def test_payload_over_max_event_bytes_makes_the_sdk_raise_413(sdk, connect):
    a = connect()
    a.subscribe("news")
    with pytest.raises(pusher.errors.PusherBadStatus, match="413"):
        sdk.trigger("news", "big", "x" * (10 * 1024 + 1))
    assert a.until_pong() == []


def test_wrong_secret_makes_the_sdk_raise_401(node, connect):
    a = connect()
    a.subscribe("news")
    wrong = pusher.Pusher(app_id="1", key="app-key", secret="not-the-secret", host="127.0.0.1", port=node.port,
                          ssl=False, timeout=TIMEOUT)
    with pytest.raises(pusher.errors.PusherBadAuth):
        wrong.trigger("news", "e", "x")
    with pytest.raises(pusher.errors.PusherBadAuth):
        wrong.channels_info()
    assert a.until_pong() == []


def test_unknown_app_id_makes_the_sdk_raise_404(node):
    stranger = pusher.Pusher(app_id="42", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port,
                             ssl=False, timeout=TIMEOUT)
    with pytest.raises(pusher.errors.PusherBadStatus, match="404"):
        stranger.trigger("news", "e", "x")

"""A real Node on 127.0.0.1:0 and real WebSocket clients: the Pusher protocol end to end."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pykka
import pytest

from actors import ActorcastError, App, ProtocolError
from tests.wsclient import OP_PING, OP_PONG, OP_TEXT, PusherClient, RawClient, frame_bytes

SOCKET_ID_RE = re.compile(r"^\d+\.\d+$")


def read_until(client, event: str, timeout: float = 5.0) -> list[dict]:
    """Messages before the first ``event`` (bounded: every read has a timeout)."""
    deadline = time.monotonic() + timeout
    got = []
    while True:
        message = client.recv(max(deadline - time.monotonic(), 0.001))
        if message["event"] == event:
            return got
        got.append(message)


# --- connecting ----------------------------------------------------------------


def test_connect_gets_connection_established_with_socket_id_and_activity_timeout(node):
    with PusherClient.connect(node.port, established=False) as client:
        message = client.expect("pusher:connection_established")
    assert "channel" not in message
    assert isinstance(message["data"], str)  # double-encoded, as pusher-js expects
    data = json.loads(message["data"])
    assert SOCKET_ID_RE.match(data["socket_id"])
    assert data["activity_timeout"] == 120


def test_every_connection_gets_its_own_socket_id(node, open_client):
    ids = {open_client(node).socket_id for _ in range(10)}
    assert len(ids) == 10


def test_activity_timeout_comes_from_the_app(make_node, open_client):
    node = make_node(App(activity_timeout=45))
    assert open_client(node).established["activity_timeout"] == 45


def test_connection_count_follows_connects_and_disconnects(node, open_client, wait_until):
    clients = [open_client(node) for _ in range(3)]
    wait_until(lambda: node.connection_count() == 3)
    clients[0].close()
    wait_until(lambda: node.connection_count() == 2)
    assert node.connection_count("1") == 2


def test_unknown_app_key_gets_pusher_error_4001_then_close_4001(node, wait_until):
    with PusherClient.connect(node.port, key="no-such-key", established=False) as client:
        code, before = client.expect_close()
    assert [m["event"] for m in before] == ["pusher:error"]
    assert before[0]["data"]["code"] == 4001
    assert code == 4001
    assert node.connection_count() == 0


@pytest.mark.parametrize(
    ("path", "query", "code"),
    [
        ("/not-an-app", "protocol=7", 4005),
        ("/app/app-key/extra", "protocol=7", 4005),
        ("/app/app-key", None, 4008),
        ("/app/app-key", "client=js&version=8.4.0", 4008),
        ("/app/app-key", "protocol=6", 4007),
        ("/app/app-key", "protocol=abc", 4006),
    ],
)
def test_bad_connect_requests_get_pusher_error_then_close_with_the_same_code(node, path, query, code):
    with PusherClient.connect(node.port, path=path, query=query, established=False) as client:
        close_code, before = client.expect_close()
    assert [(m["event"], m["data"]["code"]) for m in before] == [("pusher:error", code)]
    assert close_code == code
    assert node.connection_count() == 0


def test_a_disabled_app_is_refused_with_4003(make_node):
    node = make_node(App(enabled=False))
    with PusherClient.connect(node.port, established=False) as client:
        code, before = client.expect_close()
    assert code == 4003
    assert before[0]["data"]["code"] == 4003


# --- subscribing and broadcasting ------------------------------------------------


def test_subscribe_is_confirmed_with_subscription_succeeded(node, open_client):
    client = open_client(node)
    message = client.subscribe("news")
    assert message == {"event": "pusher_internal:subscription_succeeded", "channel": "news", "data": "{}",
                       "data_decoded": {}}
    assert node.subscription_count("1", "news") == 1


def test_subscribe_data_may_arrive_json_encoded_as_a_string(node, open_client):
    client = open_client(node)
    client.send_json({"event": "pusher:subscribe", "data": json.dumps({"channel": "news"})})
    client.expect("pusher_internal:subscription_succeeded", "news")


def test_broadcast_reaches_every_subscriber_exactly_once_and_in_order(node, open_client):
    clients = [open_client(node) for _ in range(20)]
    for client in clients:
        client.subscribe("news")
    assert node.subscription_count("1", "news") == 20
    for i in range(50):
        node.broadcast("1", "news", "tick", {"i": i})
    node.broadcast("1", "news", "end", {})  # a marker: everything before it has arrived
    for client in clients:
        got = read_until(client, "end")
        assert [(m["event"], m["channel"]) for m in got] == [("tick", "news")] * 50
        assert [json.loads(m["data"])["i"] for m in got] == list(range(50))


def test_broadcasts_from_several_threads_each_arrive_once(node, open_client):
    import threading

    clients = [open_client(node) for _ in range(3)]
    for client in clients:
        client.subscribe("news")

    def publish(name: str) -> None:
        for i in range(30):
            node.broadcast("1", "news", "tick", {"from": name, "i": i})

    threads = [threading.Thread(target=publish, args=(name,)) for name in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    node.broadcast("1", "news", "end", {})
    for client in clients:
        data = [json.loads(m["data"]) for m in read_until(client, "end")]
        assert len(data) == 120
        for name in "abcd":  # each publisher's order is kept
            assert [d["i"] for d in data if d["from"] == name] == list(range(30))


@pytest.mark.parametrize(
    "data",
    ["hello", '{"already": "json"}', "", {"title": "hi", "tags": ["a", "b"]}, [1, 2, 3], 42, 1.5, True, None],
    ids=["str", "json-str", "empty-str", "dict", "list", "int", "float", "bool", "none"],
)
def test_str_data_is_sent_as_is_and_other_values_json_encoded_once(node, open_client, data):
    client = open_client(node)
    client.subscribe("news")
    node.broadcast("1", "news", "ev", data)
    message = client.expect("ev", "news")
    assert isinstance(message["data"], str)
    if isinstance(data, str):
        assert message["data"] == data
    else:
        assert json.loads(message["data"]) == data


def test_unicode_data_survives_the_round_trip(node, open_client):
    client = open_client(node)
    client.subscribe("news")
    node.broadcast("1", "news", "ev", {"text": "Zoë ✓ 日本"})
    assert json.loads(client.expect("ev")["data"]) == {"text": "Zoë ✓ 日本"}


def test_broadcast_skips_the_excluded_socket_id(node, open_client):
    sender, other = open_client(node), open_client(node)
    sender.subscribe("news")
    other.subscribe("news")
    node.broadcast("1", "news", "said", "x", socket_id=sender.socket_id)
    node.broadcast("1", "news", "marker", "m")
    assert [m["event"] for m in read_until(other, "marker")] == ["said"]
    assert read_until(sender, "marker") == []


def test_broadcast_to_several_channels_arrives_once_per_subscribed_channel(node, open_client):
    both, only_a = open_client(node), open_client(node)
    both.subscribe("a")
    both.subscribe("b")
    only_a.subscribe("a")
    node.broadcast("1", ["a", "b", "nobody-here"], "ev", "x")
    node.broadcast("1", ["a", "b"], "marker", "m")  # order holds per channel, not across channels
    got = read_until(both, "marker") + read_until(both, "marker")
    assert sorted(m["channel"] for m in got if m["event"] == "ev") == ["a", "b"]
    assert [m["event"] for m in got].count("ev") == 2
    assert [m["channel"] for m in read_until(only_a, "marker")] == ["a"]


def test_subscribing_twice_still_delivers_each_event_once(node, open_client):
    client = open_client(node)
    client.subscribe("news")
    client.subscribe("news")
    assert node.subscription_count("1", "news") == 1
    node.broadcast("1", "news", "ev", "x")
    node.broadcast("1", "news", "marker", "m")
    assert [m["event"] for m in read_until(client, "marker")] == ["ev"]


def test_unsubscribe_stops_delivery_to_that_client_only(node, open_client, wait_until):
    leaver, stayer = open_client(node), open_client(node)
    leaver.subscribe("news")
    stayer.subscribe("news")
    leaver.unsubscribe("news")
    wait_until(lambda: node.subscription_count("1", "news") == 1)
    node.broadcast("1", "news", "after", "x")
    stayer.expect("after", "news")  # delivered to the others: the fan-out is done
    # The leaver's next message is the answer to its ping, not the event ...
    leaver.ping()
    # ... and nothing else turns up in a short bounded read.
    leaver.assert_silent(0.2)


@pytest.mark.single_node(reason="reaches into one node's internals (node._app_actors)")
def test_a_channel_whose_last_subscriber_left_is_retired(node, open_client, wait_until):
    client = open_client(node)
    client.subscribe("news")
    client.unsubscribe("news")
    wait_until(lambda: node.subscription_count("1", "news") == 0)
    wait_until(lambda: "news" not in node.call(lambda: node._app_actors["1"].proxy().channel_names().get(timeout=5)))
    node.broadcast("1", "news", "nobody", "x")  # no channel actor: dropped quietly
    client.subscribe("news")  # and it can be created again
    node.broadcast("1", "news", "again", "y")
    client.expect("again", "news")


def test_a_closed_client_leaves_its_channels(node, open_client, wait_until):
    client, other = open_client(node), open_client(node)
    client.subscribe("a")
    client.subscribe("b")
    other.subscribe("a")
    client.close()
    wait_until(lambda: node.subscription_count("1", "a") == 1 and node.subscription_count("1", "b") == 0)
    wait_until(lambda: node.connection_count() == 1)
    node.broadcast("1", "a", "ev", "x")
    other.expect("ev", "a")


def test_a_client_that_drops_without_a_close_frame_is_cleaned_up(node, open_client, wait_until):
    client = open_client(node)
    client.subscribe("news")
    client.ws.sock.close()  # no close handshake: the TCP connection just ends
    wait_until(lambda: node.connection_count() == 0)
    wait_until(lambda: node.subscription_count("1", "news") == 0)


@pytest.mark.single_node(reason="asserts connection_count() at once; a worker node's count comes from /metrics, "
                                "which its workers flush every 0.5 s", also=("redis2",))
def test_several_apps_on_one_node_keep_their_channels_apart(make_node, open_client):
    node = make_node(App(id="1", key="key-one"), App(id="2", key="key-two"))
    one, two = open_client(node, key="key-one"), open_client(node, key="key-two")
    one.subscribe("news")
    two.subscribe("news")
    node.broadcast("1", "news", "for-one", "x")
    one.expect("for-one", "news")
    two.ping()  # its next message is the pong, not app 1's event
    assert node.connection_count("1") == 1
    assert node.connection_count("2") == 1


def test_broadcast_refuses_bad_names_unknown_apps_and_a_stopped_node(make_node):
    node = make_node()
    with pytest.raises(ProtocolError):
        node.broadcast("1", "bad channel!", "ev", "x")
    with pytest.raises(ProtocolError):
        node.broadcast("1", "news", "e" * 201, "x")
    with pytest.raises(ActorcastError):
        node.broadcast("404", "news", "ev", "x")
    with pytest.raises(ProtocolError):
        node.broadcast("1", "news", "ev\ud800", "x")  # a lone surrogate has no UTF-8 form
    for data in ("x\udfff", {"k": "\ud800"}):
        with pytest.raises(ActorcastError):
            node.broadcast("1", "news", "ev", data)
    node.broadcast("1", "news", "ev", "still serving \U0001f600")
    node.stop()
    with pytest.raises(ActorcastError):
        node.broadcast("1", "news", "ev", "x")


# --- pings, errors and bad input -------------------------------------------------


def test_pusher_ping_is_answered_with_pusher_pong(node, open_client):
    client = open_client(node)
    pong = client.ping()
    assert pong["data"] == "{}"


def test_a_websocket_ping_frame_is_answered_with_a_pong_frame(node, open_client):
    client = open_client(node)
    client.ws.ping("are you there")
    assert client.recv_frame() == (OP_PONG, b"are you there")


def test_server_sends_pusher_ping_after_activity_timeout_of_silence(make_node, open_client):
    node = make_node(App(activity_timeout=1, pong_timeout=1))
    client = open_client(node)
    connected = time.monotonic()
    client.expect("pusher:ping", timeout=3)
    assert time.monotonic() - connected >= 0.8  # not before the activity timeout


def test_a_client_that_does_not_answer_the_ping_is_closed_with_4201(make_node, open_client, wait_until):
    node = make_node(App(activity_timeout=1, pong_timeout=1))
    client = open_client(node)
    client.expect("pusher:ping", timeout=3)
    code, before = client.expect_close(timeout=3)
    assert code == 4201
    assert [(m["event"], m["data"]["code"]) for m in before] == [("pusher:error", 4201)]
    wait_until(lambda: node.connection_count() == 0)


def test_a_client_answering_server_pings_stays_connected(make_node, open_client):
    node = make_node(App(activity_timeout=1, pong_timeout=1))
    client = open_client(node)
    client.subscribe("news")
    for _ in range(2):
        client.expect("pusher:ping", timeout=3)
        client.send_json({"event": "pusher:pong", "data": {}})
    assert node.connection_count() == 1
    node.broadcast("1", "news", "still-here", "x")
    client.expect("still-here", "news")


def test_unknown_events_are_ignored(node, open_client):
    client = open_client(node)
    client.send_json({"event": "pusher:something_new", "data": {}})
    client.send_json({"event": "whatever", "data": "x"})
    client.ping()  # the next message is the pong: no error, no disconnect


def test_invalid_json_gets_pusher_error_and_the_node_keeps_serving(node, open_client):
    bad, good = open_client(node), open_client(node)
    bad.subscribe("news")
    good.subscribe("news")
    bad.send_text("this is not json")
    error = bad.expect("pusher:error")
    assert error["data"]["code"] is None
    assert "JSON" in error["data"]["message"]
    bad.ping()
    node.broadcast("1", "news", "ev", "x")
    bad.expect("ev", "news")
    good.expect("ev", "news")


def test_a_binary_frame_gets_pusher_error_and_the_connection_is_kept(node, open_client):
    client = open_client(node)
    client.subscribe("news")
    client.ws.send_binary(b"\x00\x01\x02")
    assert client.expect("pusher:error")["data"]["code"] is None
    node.broadcast("1", "news", "ev", "x")
    client.expect("ev", "news")


def test_an_oversized_message_closes_that_connection_only(make_node, open_client, wait_until):
    node = make_node(App(max_message_bytes=1024))
    big, other = open_client(node), open_client(node)
    big.subscribe("news")
    other.subscribe("news")
    big.send_text(json.dumps({"event": "pusher:ping", "data": {"pad": "x" * 4096}}))
    code, _ = big.expect_close()
    assert code == 1009
    wait_until(lambda: node.connection_count() == 1)
    node.broadcast("1", "news", "ev", "x")
    other.expect("ev", "news")
    other.ping()


def test_a_message_at_the_size_limit_is_accepted(make_node, open_client):
    node = make_node(App(max_message_bytes=1024))
    client = open_client(node)
    text = json.dumps({"event": "pusher:ping", "data": {"pad": ""}})
    text = json.dumps({"event": "pusher:ping", "data": {"pad": "x" * (1024 - len(text))}})
    assert len(text) == 1024
    client.send_text(text)
    client.expect("pusher:pong")


def test_an_unmasked_client_frame_is_closed_with_1002(node, wait_until):
    with RawClient.connect(node.port) as client:
        client.expect("pusher:connection_established")
        client.send_frame(OP_TEXT, b'{"event":"pusher:ping"}', mask=False)
        code, _ = client.expect_close()
    assert code == 1002
    wait_until(lambda: node.connection_count() == 0)


def test_fragmented_and_byte_by_byte_frames_are_assembled(node):
    with RawClient.connect(node.port) as client:
        client.expect("pusher:connection_established")
        subscribe = json.dumps({"event": "pusher:subscribe", "data": {"channel": "news"}}).encode()
        client.send_raw(
            frame_bytes(OP_TEXT, subscribe[:10], fin=False)
            + frame_bytes(OP_PING, b"in-between")
            + frame_bytes(0x0, subscribe[10:20], fin=False)
            + frame_bytes(0x0, subscribe[20:])
        )
        assert client.recv_frame() == (OP_PONG, b"in-between")
        client.expect("pusher_internal:subscription_succeeded", "news")
        for byte in frame_bytes(OP_TEXT, b'{"event":"pusher:ping","data":{}}'):
            client.send_raw(bytes([byte]))
        client.expect("pusher:pong")


# --- HTTP and shutdown -----------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), [("/", b"OK"), ("/health", b'{"ok":true}')])
def test_http_get_root_and_health_answer_200(node, path, body):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}{path}", timeout=5) as response:
        assert response.status == 200
        assert response.read() == body


def test_http_get_of_the_websocket_path_without_upgrade_is_426(node):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{node.port}/app/app-key?protocol=7", timeout=5)
    assert info.value.code == 426


def test_http_get_of_an_unknown_path_is_404(node):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{node.port}/no-such-page", timeout=5)
    assert info.value.code == 404


def test_node_stop_closes_every_client_with_4200_and_every_actor(node, open_client, wait_until):
    clients = [open_client(node) for _ in range(3)]
    for client in clients:
        client.subscribe("news")
    started = time.monotonic()
    node.stop()
    assert time.monotonic() - started < 3
    for client in clients:
        code, before = client.expect_close()
        assert code == 4200
        assert [(m["event"], m["data"]["code"]) for m in before] == [("pusher:error", 4200)]
    wait_until(lambda: pykka.ActorRegistry.get_all() == [], timeout=3)


def test_a_stopped_node_refuses_new_connections(make_node):
    node = make_node()
    port = node.port
    node.stop()
    with pytest.raises(OSError):
        PusherClient.connect(port, timeout=2)


def test_node_works_as_a_context_manager():
    from actors import Node

    with Node(apps=[App()], host="127.0.0.1", port=0, metrics_port=None) as node:
        with PusherClient.connect(node.port) as client:
            client.subscribe("news")
            node.broadcast("1", "news", "ev", "x")
            client.expect("ev", "news")
    assert not node.running


@pytest.mark.single_node(reason="reaches into one node's internals (node._routes.open_sockets)")
def test_connections_over_the_app_quota_are_refused_with_4004(make_node, open_client, wait_until):
    from actors import App
    from tests.wsclient import PusherClient

    node = make_node(App(max_connections=2))
    first, second = open_client(node), open_client(node)
    third = PusherClient.connect(node.port, established=False)
    code, before = third.expect_close()
    assert code == 4004
    assert before[0]["event"] == "pusher:error" and before[0]["data"]["code"] == 4004
    first.close()
    wait_until(lambda: node.connection_count() == 1, message="the first connection is gone")
    wait_until(lambda: node.call(lambda: node._routes.open_sockets) == 1, message="its socket is closed")
    fourth = open_client(node)  # room again
    assert fourth.socket_id
    second.ping()


@pytest.mark.single_node(reason="reaches into one node's internals (node._app_actors)")
def test_a_channel_whose_actor_crashed_is_replaced_on_the_next_join(node, open_client, wait_until):
    from actors.messages import Broadcast

    first = open_client(node)
    first.subscribe("fragile")

    def crash_channel() -> None:
        app_actor = node._app_actors["1"]
        ref = app_actor.proxy().channel_ref("fragile").get(timeout=5)
        ref.tell(Broadcast(None, None, 0, 0.0))  # not bytes: the send loop raises

    node.call(crash_channel)
    def gone() -> bool:
        ref = node._app_actors["1"].proxy().channel_ref("fragile").get(timeout=5)
        return ref is None or not ref.is_alive()  # its supervisor drops a dead channel at once

    wait_until(lambda: node.call(gone), message="the channel actor died")
    second = open_client(node)
    second.subscribe("fragile")  # answered by a fresh channel actor
    node.broadcast("1", "fragile", "after", "ok")
    assert second.expect("after", "fragile")["data"] == "ok"


@pytest.mark.parametrize("data", [object(), {1, 2}, float("nan"), b"bytes"])
def test_broadcast_of_data_json_cannot_carry_fails_in_the_caller_and_the_node_keeps_serving(node, open_client, data):
    from actors import ActorcastError

    client = open_client(node)
    client.subscribe("news")
    with pytest.raises(ActorcastError, match="JSON"):
        node.broadcast("1", "news", "bad", data)
    node.broadcast("1", "news", "good", {"ok": True})
    assert client.expect("good", "news")["data"] == '{"ok":true}'


def test_a_client_event_with_nan_data_gets_an_error_and_the_connection_lives_on(node, open_client):
    from transport.auth import make_channel_auth

    sender, other = open_client(node), open_client(node)
    for client in (sender, other):
        auth = make_channel_auth("app-key", "app-secret", client.socket_id, "private-room")
        client.send_json({"event": "pusher:subscribe", "data": {"channel": "private-room", "auth": auth}})
        client.expect("pusher_internal:subscription_succeeded", "private-room")
    sender.send_text('{"event": "client-x", "channel": "private-room", "data": {"v": NaN}}')
    error = sender.expect("pusher:error")
    assert "NaN" in error["data"]["message"]
    sender.ping()
    other.ping()  # nothing was relayed before the pong

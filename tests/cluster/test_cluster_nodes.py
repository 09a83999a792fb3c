"""Several nodes behave as one (issue 6/9), joined by the in-memory bus and by a real redis-server.

Each node runs on its own hub thread, as in separate processes (the
``cluster`` fixture of conftest.py). Heartbeats are fast (0.1 s) so death is
detected in well under a second.
"""

from __future__ import annotations

import json
import urllib.request
from urllib.parse import urlencode

import pusher
import pytest

from tests.cluster.conftest import HEARTBEAT
from tests.conftest import wait_until
from tests.wsclient import Closed, PusherClient
from transport.http_signing import sign_request


def sdk(node) -> pusher.Pusher:
    return pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port, ssl=False)


def api_get(node, path: str, **params: str) -> dict:
    query = sign_request("GET", path, params, "app-key", "app-secret")
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}{path}?{urlencode(query)}", timeout=5) as response:
        return json.loads(response.read())


def join_presence(client: PusherClient, node, channel: str, user_id: str, info=None) -> dict:
    custom = {"user_id": user_id, "user_info": info or {"name": user_id}}
    auth = sdk(node).authenticate(channel=channel, socket_id=client.socket_id, custom_data=custom)
    return client.subscribe(channel, **auth)


def events(client: PusherClient, event: str, count: int) -> list[dict]:
    got = []
    while len(got) < count:
        message = client.recv()
        if message.get("event") == event:
            got.append(message)
    return got


def test_socket_ids_name_their_node(cluster, open_client):
    a, b = cluster(2)
    ids = {open_client(a).socket_id.split(".")[0], open_client(b).socket_id.split(".")[0]}
    assert ids == {a.node_id, b.node_id} and len(ids) == 2


def test_a_broadcast_or_trigger_on_one_node_reaches_subscribers_on_every_node_once(cluster, open_client):
    a, b, c = cluster(3)
    wait_until(lambda: all(len(node.cluster.live_nodes()) == 3 for node in (a, b, c)), message="all met")
    subscribers = [open_client(node) for node in (a, b, c)]
    for client in subscribers:
        client.subscribe("news")
    a.broadcast("1", "news", "from-a", "1")
    sdk(b).trigger("news", "from-b", "2")
    for client in subscribers:  # two publishers: no order between them, each exactly once
        got = sorted((m["event"], m["data"]) for m in (client.recv(), client.recv()))
        assert got == [("from-a", "1"), ("from-b", "2")]
        client.assert_silent(0.1)


def test_socket_id_exclusion_works_across_nodes(cluster, open_client):
    a, b = cluster(2)
    sender, other = open_client(a), open_client(b)
    sender.subscribe("news")
    other.subscribe("news")
    sdk(b).trigger("news", "ev", "x", socket_id=sender.socket_id)
    assert other.expect("ev", "news")["data"] == "x"
    sender.assert_silent(0.2)


def test_presence_lists_members_of_every_node_and_announces_each_user_once(cluster, open_client):
    a, b = cluster(2)
    ann = open_client(a)
    join_presence(ann, a, "presence-room", "ann")
    wait_until(lambda: b.call(lambda: b._app_actors["1"].proxy().presence_users("presence-room").get(timeout=5))
               == ["ann"], message="b heard of ann")
    bob = open_client(b)
    succeeded = join_presence(bob, b, "presence-room", "bob")["data_decoded"]["presence"]
    assert sorted(succeeded["ids"]) == ["ann", "bob"] and succeeded["count"] == 2
    assert succeeded["hash"]["ann"] == {"name": "ann"}
    added = ann.expect("pusher_internal:member_added", "presence-room")["data_decoded"]
    assert added["user_id"] == "bob"
    # bob's second socket, on the other node: nobody is told again
    bob2 = open_client(a)
    join_presence(bob2, a, "presence-room", "bob")
    ann.assert_silent(0.3)
    bob2.close()  # bob still has a socket on b: not removed
    ann.assert_silent(0.3)
    bob.close()  # his last socket anywhere
    removed = ann.expect("pusher_internal:member_removed", "presence-room")["data_decoded"]
    assert removed == {"user_id": "bob"}


def test_presence_limits_count_the_members_of_every_node(cluster, open_client):
    a, b = cluster(2, max_presence_members=2)
    for node, user in ((a, "u1"), (b, "u2")):
        join_presence(open_client(node), node, "presence-full", user)
    wait_until(lambda: a.call(lambda: len(a._app_actors["1"].proxy().presence_users("presence-full").get(timeout=5)))
               == 2)
    third = open_client(a)
    auth = sdk(a).authenticate(channel="presence-full", socket_id=third.socket_id, custom_data={"user_id": "u3"})
    third.send_event("pusher:subscribe", {"channel": "presence-full", **auth})
    error = third.expect("pusher:subscription_error", "presence-full")["data_decoded"]
    assert error["type"] == "LimitReached"


def test_a_node_that_starts_later_receives_the_presence_state(cluster, make_node, open_client):
    from actors import App

    a, = cluster(1)
    ann = open_client(a)
    join_presence(ann, a, "presence-room", "ann")
    late = make_node(App(), adapter=cluster.new_bus(), heartbeat_interval=HEARTBEAT)
    wait_until(lambda: late.call(lambda: late._app_actors["1"].proxy().presence_users("presence-room")
                                 .get(timeout=5)) == ["ann"], message="the late node synced")
    bob = open_client(late)
    assert join_presence(bob, late, "presence-room", "bob")["data_decoded"]["presence"]["count"] == 2


def test_a_silent_node_is_declared_dead_and_its_members_removed_once(cluster, open_client):
    a, b = cluster(2)
    watcher = open_client(a)
    join_presence(watcher, a, "presence-room", "watcher")
    ghost = open_client(b)
    join_presence(ghost, b, "presence-room", "ghost")
    watcher.expect("pusher_internal:member_added", "presence-room")
    b.call(lambda: b.adapter.stop())  # b goes silent, as after kill -9: no goodbye
    removed = watcher.expect("pusher_internal:member_removed", "presence-room", timeout=3)
    assert removed["data_decoded"] == {"user_id": "ghost"}
    watcher.assert_silent(0.3)
    assert api_get(a, "/apps/1/channels/presence-room/users") == {"users": [{"id": "watcher"}]}


def test_a_clean_stop_removes_the_nodes_members_at_once(cluster, open_client):
    a, b = cluster(2)
    watcher = open_client(a)
    join_presence(watcher, a, "presence-room", "watcher")
    leaver = open_client(b)
    join_presence(leaver, b, "presence-room", "leaver")
    watcher.expect("pusher_internal:member_added", "presence-room")
    b.stop()
    removed = watcher.expect("pusher_internal:member_removed", "presence-room", timeout=1)
    assert removed["data_decoded"] == {"user_id": "leaver"}


def test_queries_answer_for_the_whole_cluster_and_a_dead_node_never_hangs_them(cluster, open_client):
    a, b = cluster(2)
    for node, channel in ((a, "both"), (b, "both"), (b, "only-b")):
        open_client(node).subscribe(channel)
    join_presence(open_client(b), b, "presence-x", "ann")
    wait_until(lambda: api_get(a, "/apps/1/channels", info="subscription_count")["channels"] == {
        "both": {"subscription_count": 2}, "only-b": {"subscription_count": 1},
        "presence-x": {"subscription_count": 1}})
    assert api_get(a, "/apps/1/channels/both", info="subscription_count") == {"occupied": True,
                                                                              "subscription_count": 2}
    assert api_get(a, "/apps/1/channels", filter_by_prefix="presence-", info="user_count") == {
        "channels": {"presence-x": {"user_count": 1}}}
    b.call(lambda: b.adapter.stop())  # dead, not yet noticed: the query waits its bounded time only
    listing = api_get(a, "/apps/1/channels")["channels"]
    assert "both" in listing


def test_client_events_and_send_to_user_and_terminate_cross_nodes(cluster, open_client):
    a, b = cluster(2)
    sender, receiver = open_client(a), open_client(b)
    for client, node in ((sender, a), (receiver, b)):
        auth = sdk(node).authenticate(channel="private-chat", socket_id=client.socket_id)
        client.subscribe("private-chat", auth=auth["auth"])
    sender.send_json({"event": "client-typing", "channel": "private-chat", "data": {"who": "ann"}})
    assert json.loads(receiver.expect("client-typing", "private-chat")["data"]) == {"who": "ann"}
    sender.assert_silent(0.2)
    receiver.signin(sdk(b), "zed")
    receiver.subscribe("#server-to-user-zed")  # as pusher-js does after signing in
    sdk(a).send_to_user("zed", "hello", {"n": 1})
    assert receiver.expect("hello")["channel"] == "#server-to-user-zed"
    sdk(a).terminate_user_connections("zed")
    with pytest.raises(Closed) as closed:
        while True:
            receiver.recv(timeout=3)
    assert closed.value.code == 4009


def test_the_connection_quota_is_exact_across_nodes(cluster, open_client):
    import threading

    a, b = cluster(2, max_connections=3)
    wait_until(lambda: len(a.cluster.live_nodes()) == 2 and len(b.cluster.live_nodes()) == 2)
    results: list[object] = []

    def connect(node) -> None:
        try:
            results.append(PusherClient.connect(node.port))
        except AssertionError as refused:  # expected pusher:connection_established, got the 4004 error
            results.append(refused)

    threads = [threading.Thread(target=connect, args=(node,)) for node in (a, b) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    admitted = [r for r in results if isinstance(r, PusherClient)]
    assert len(results) == 8 and len(admitted) == 3, results
    admitted[0].close()
    wait_until(lambda: a.connection_count() + b.connection_count() == 2)

    def room_again() -> bool:
        try:
            admitted.append(PusherClient.connect(b.port))
            return True
        except AssertionError:
            return False  # the release is still on its way

    wait_until(room_again, message="a place is free again")
    for client in admitted[1:]:
        client.close()


def test_presence_queries_right_after_a_join_or_leave_on_another_node_count_it(cluster, open_client):
    a, b = cluster(2)
    wait_until(lambda: a.call(a.cluster.synced_peers) == 1 and b.call(b.cluster.synced_peers) == 1, message="met")
    ann = open_client(a)
    join_presence(ann, a, "presence-x", "ann")
    for _ in range(5):  # no waiting for the replica: the answers are as of the question
        # Fresh sockets each time: a leaving socket may still hear of the other's leave
        # (member_removed goes out when the leave comes back from the bus).
        ben, ben2 = open_client(b), open_client(b)
        join_presence(ben, b, "presence-x", "ben")
        join_presence(ben2, b, "presence-x", "ben2")
        assert api_get(a, "/apps/1/channels/presence-x", info="user_count,subscription_count") == {
            "occupied": True, "user_count": 3, "subscription_count": 3}
        assert api_get(a, "/apps/1/channels/presence-x/users") == {
            "users": [{"id": "ann"}, {"id": "ben"}, {"id": "ben2"}]}
        for client in (ben, ben2):
            client.unsubscribe("presence-x")
            client.until_pong()  # b has handled the leave (unsubscribe has no reply)
        assert api_get(a, "/apps/1/channels/presence-x/users") == {"users": [{"id": "ann"}]}


def test_a_node_dropped_for_silence_that_was_only_stalled_gets_its_state_back_everywhere(cluster, open_client):
    import time

    a, b = cluster(2)
    wait_until(lambda: a.call(a.cluster.synced_peers) == 1 and b.call(b.cluster.synced_peers) == 1, message="met")
    join_presence(open_client(a), a, "presence-x", "ann")
    join_presence(open_client(b), b, "presence-x", "ben")

    def users(node) -> list[str]:
        return node.call(lambda: node._app_actors["1"].proxy().presence_users("presence-x").get(timeout=5))

    wait_until(lambda: users(a) == users(b) == ["ann", "ben"], message="both replicas full")
    b.call(time.sleep, 8 * HEARTBEAT)  # b's hub stalls (a blocking call), its bus stays up: a drops b
    # a hears b again and asks for what it forgot; b, which did not hear even its
    # own heartbeats meanwhile, reconnects its bus and syncs anew.
    wait_until(lambda: users(a) == users(b) == ["ann", "ben"], message="the replicas are whole again")

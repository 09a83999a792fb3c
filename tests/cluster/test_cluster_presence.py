"""Presence on two nodes is decided in the bus's one order: no race with the replication.

Each test provokes one race the nodes had while each decided presence
locally from a replica that lags the bus by a hop: two joins on two nodes
passing the member limit together, a member flapping when its first socket
leaves one node right after its second joined another, and a channel list
counting users from the replica.
"""

from __future__ import annotations

from tests.cluster.test_cluster_nodes import api_get, join_presence, sdk
from tests.conftest import wait_until


def _subscribe(client, node, channel: str, user_id: str) -> None:
    """Send a presence subscribe without waiting for the answer."""
    custom = {"user_id": user_id, "user_info": {"name": user_id}}
    auth = sdk(node).authenticate(channel=channel, socket_id=client.socket_id, custom_data=custom)
    client.send_event("pusher:subscribe", {"channel": channel, **auth})


def _answer(client, channel: str) -> str:
    """The subscribe's answer on ``client``: its event name."""
    while True:
        message = client.recv()
        if message.get("channel") == channel and message["event"] in (
                "pusher_internal:subscription_succeeded", "pusher:subscription_error"):
            return message["event"]


def _users(node, channel: str) -> list[str]:
    return node.call(lambda: node._app_actors["1"].proxy().presence_users(channel).get(timeout=5))


def test_joins_on_two_nodes_at_once_never_pass_the_member_limit(cluster, open_client):
    a, b = cluster(2, max_presence_members=1)
    wait_until(lambda: a.call(a.cluster.synced_peers) == 1 and b.call(b.cluster.synced_peers) == 1, message="met")
    for round_ in range(5):
        channel = f"presence-full-{round_}"
        on_a, on_b = open_client(a), open_client(b)
        _subscribe(on_a, a, channel, "ann")  # both sent before either is answered:
        _subscribe(on_b, b, channel, "ben")  # within the bus hop that replicates a join
        answers = sorted([_answer(on_a, channel), _answer(on_b, channel)])
        assert answers == ["pusher:subscription_error", "pusher_internal:subscription_succeeded"], answers
        wait_until(lambda: len(_users(a, channel)) == 1 and _users(a, channel) == _users(b, channel),  # noqa: B023
                   message="both nodes hold the one member admitted")


def test_a_members_first_socket_leaving_right_after_its_second_joined_elsewhere_is_no_flap(cluster, open_client):
    a, b = cluster(2)
    wait_until(lambda: a.call(a.cluster.synced_peers) == 1 and b.call(b.cluster.synced_peers) == 1, message="met")
    watcher = open_client(a)
    join_presence(watcher, a, "presence-room", "watcher")
    for round_ in range(5):
        first, second = open_client(a), open_client(b)
        join_presence(first, a, "presence-room", "u1")
        assert watcher.expect("pusher_internal:member_added", "presence-room")["data_decoded"]["user_id"] == "u1"
        join_presence(second, b, "presence-room", "u1")  # confirmed: the cluster has u1 on b too
        first.close()  # at once, before a could hear of the second socket by itself
        wait_until(lambda: a.call(  # noqa: B023 - a's leave came back from the bus and was applied
            lambda: a._app_actors["1"].proxy().local_users("presence-room").get(timeout=5)) == ["watcher"],
            message="a applied its leave")
        # Anything the channel told the watcher before is ahead of this marker (one order, one channel).
        a.broadcast("1", "presence-room", "marker", str(round_))
        assert watcher.expect("marker", "presence-room")["data"] == str(round_), "u1 flapped"
        second.close()  # u1's last socket anywhere
        assert watcher.expect("pusher_internal:member_removed", "presence-room")["data_decoded"] == {"user_id": "u1"}


def test_the_channel_list_counts_a_user_who_just_joined_on_another_node(cluster, open_client):
    a, b = cluster(2)
    wait_until(lambda: a.call(a.cluster.synced_peers) == 1 and b.call(b.cluster.synced_peers) == 1, message="met")
    join_presence(open_client(a), a, "presence-x", "ann")
    path, query = "/apps/1/channels", {"filter_by_prefix": "presence-", "info": "user_count"}
    for round_ in range(5):  # no waiting for the replica: the answer is as of the question
        ben, ben2 = open_client(b), open_client(b)
        join_presence(ben, b, "presence-x", f"ben-{round_}")
        join_presence(ben2, b, "presence-x", f"ben2-{round_}")
        assert api_get(a, path, **query) == {"channels": {"presence-x": {"user_count": 3}}}
        for client in (ben, ben2):
            client.unsubscribe("presence-x")
            client.until_pong()  # b has handled the leave (unsubscribe has no reply)
        wait_until(lambda: api_get(a, path, **query) == {"channels": {"presence-x": {"user_count": 1}}},
                   message="the leaves counted")


def test_the_channel_list_does_not_hang_on_a_dead_node(cluster, open_client):
    import time

    a, b = cluster(2)
    wait_until(lambda: a.call(a.cluster.synced_peers) == 1 and b.call(b.cluster.synced_peers) == 1, message="met")
    join_presence(open_client(a), a, "presence-x", "ann")
    join_presence(open_client(b), b, "presence-x", "ben")
    wait_until(lambda: _users(a, "presence-x") == ["ann", "ben"], message="a has ben")
    b.call(lambda: b.adapter.stop())  # b goes silent, as after kill -9: it answers nothing
    started = time.monotonic()
    listed = api_get(a, "/apps/1/channels", filter_by_prefix="presence-", info="user_count")
    assert time.monotonic() - started < 3  # the request timeout at most, then the registry
    assert listed["channels"]["presence-x"]["user_count"] in (1, 2)  # 2 until a declares b dead


def test_a_join_while_the_bus_is_down_is_answered_at_once_and_synced_when_it_is_back(make_node, make_redis_server,
                                                                                     open_client):
    import time
    import uuid

    from actors import App
    from actors.cluster_quota import ADMIT_TIMEOUT
    from actors.redis_bus import RedisBus
    from tests.cluster.conftest import HEARTBEAT

    server = make_redis_server()
    prefix = f"presence-down-{uuid.uuid4().hex}"
    a, b = (make_node(App(), adapter=RedisBus(server.url(), prefix=prefix), heartbeat_interval=HEARTBEAT)
            for _ in range(2))
    wait_until(lambda: a.call(a.cluster.synced_peers) == 1 and b.call(b.cluster.synced_peers) == 1, message="met")
    join_presence(open_client(b), b, "presence-room", "ann")
    wait_until(lambda: _users(a, "presence-room") == ["ann"], message="a has ann")
    server.stop()
    wait_until(lambda: not a.call(lambda: a.cluster.connected), message="a saw the bus go")
    started = time.monotonic()
    succeeded = join_presence(open_client(a), a, "presence-room", "bob")["data_decoded"]["presence"]
    assert time.monotonic() - started < ADMIT_TIMEOUT + 1  # decided from what a knows, bounded
    assert "bob" in succeeded["ids"]
    server.start()
    wait_until(lambda: _users(a, "presence-room") == _users(b, "presence-room") == ["ann", "bob"], timeout=15,
               message="the nodes agree again once the bus is back")


def test_a_channel_actor_that_dies_takes_its_members_off_every_node(cluster, open_client, monkeypatch):
    from actors.channel import ChannelActor

    a, b = cluster(2)
    wait_until(lambda: a.call(a.cluster.synced_peers) == 1 and b.call(b.cluster.synced_peers) == 1, message="met")
    on_b = b._app_actors["1"]  # noqa: SLF001 - the bug is planted in b's channel actors only
    original = ChannelActor.broadcast

    def broadcast(self, message):
        if self.app_actor is on_b and b'"event":"crash"' in message.frame:
            raise RuntimeError("planted in b's channel")
        return original(self, message)

    monkeypatch.setattr(ChannelActor, "broadcast", broadcast)
    watcher = open_client(a)
    join_presence(watcher, a, "presence-room", "watcher")
    victim = open_client(b)
    join_presence(victim, b, "presence-room", "victim")
    assert watcher.expect("pusher_internal:member_added", "presence-room")["data_decoded"]["user_id"] == "victim"
    b.broadcast("1", "presence-room", "crash", "x")
    assert victim.expect_close(5)[0] == 4200
    assert watcher.expect("crash", "presence-room")["data"] == "x"  # a's channel is fine
    removed = watcher.expect("pusher_internal:member_removed", "presence-room", timeout=3)
    assert removed["data_decoded"] == {"user_id": "victim"}, "no ghost left on a"
    wait_until(lambda: _users(a, "presence-room") == ["watcher"] == _users(b, "presence-room"),
               message="both nodes hold only the watcher")
    again = open_client(b)  # what pusher-js does on 4200: reconnect and resubscribe
    assert join_presence(again, b, "presence-room", "victim")["data_decoded"]["presence"]["count"] == 2
    assert watcher.expect("pusher_internal:member_added", "presence-room")["data_decoded"]["user_id"] == "victim"


def test_a_channel_actor_that_dies_on_a_node_alone_leaves_no_member_behind(make_node, open_client, monkeypatch):
    from actors import App
    from actors.bus import NoBus
    from actors.channel import ChannelActor

    node = make_node(App(), adapter=NoBus())
    original = ChannelActor.broadcast

    def broadcast(self, message):
        if b'"event":"crash"' in message.frame:
            raise RuntimeError("planted")
        return original(self, message)

    monkeypatch.setattr(ChannelActor, "broadcast", broadcast)
    victim = open_client(node)
    join_presence(victim, node, "presence-room", "victim")
    assert _users(node, "presence-room") == ["victim"]
    node.broadcast("1", "presence-room", "crash", "x")
    assert victim.expect_close(5)[0] == 4200
    wait_until(lambda: _users(node, "presence-room") == [], message="the dead channel's member is gone")
    assert api_get(node, "/apps/1/channels/presence-room/users") == {"users": []}

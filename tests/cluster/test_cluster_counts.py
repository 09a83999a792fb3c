"""Counts and deliveries that mean the whole cluster (memory bus and a real redis-server).

* ``pusher_internal:subscription_count`` carries the channel's subscriptions
  on every node, at most once a second, and a subscribe storm costs the bus a
  few batched messages, not one per subscribe;
* the subscription_count webhook goes out once, with the cluster's count;
* a client event reaches the subscribers on its sender's node once (its copy
  that comes back from the bus is not delivered again), and a publish the
  bus took but never brought back is still delivered on its own node.
"""

from __future__ import annotations

import json
import time
import uuid

from actors import App
from actors.bus import MemoryBus
from tests.cluster.conftest import HEARTBEAT
from tests.cluster.test_cluster_nodes import sdk
from tests.conftest import wait_until
from tests.e2e.test_webhooks import Receiver
from tests.wsclient import PusherClient
from transport import cluster as wire

COUNT_WAIT = 10.0  # a count event comes ~1 s after the change (plus batching); a loaded machine gets slack


def counts_until(client: PusherClient, channel: str, count: int, timeout: float = COUNT_WAIT) -> list[int]:
    """Every subscription_count ``client`` hears on ``channel`` until one says ``count`` (bounded)."""
    heard: list[int] = []
    deadline = time.monotonic() + timeout
    while not heard or heard[-1] != count:
        left = deadline - time.monotonic()
        assert left > 0, f"no subscription_count {count} on {channel} within {timeout} s (heard {heard})"
        message = client.recv(left)
        if message["event"] == "pusher_internal:subscription_count":
            assert message["channel"] == channel
            heard.append(message["data_decoded"]["subscription_count"])
    return heard


def met(*nodes) -> None:
    wait_until(lambda: all(len(node.cluster.live_nodes()) == len(nodes) for node in nodes), message="nodes met")


def test_subscription_count_events_carry_every_nodes_subscribers(cluster, open_client):
    a, b = cluster(2, enable_subscription_count=True)
    met(a, b)
    on_a, on_b, also_b = open_client(a), open_client(b), open_client(b)
    for client in (on_a, on_b, also_b):
        client.subscribe("room")
    counts_until(on_a, "room", 3)
    counts_until(on_b, "room", 3)
    also_b.unsubscribe("room")  # a leave on the other node
    counts_until(on_a, "room", 2)
    counts_until(on_b, "room", 2)
    on_a.assert_silent(1.3)  # nothing moved: no more counts (longer than the 1 s throttle)


def test_a_node_that_joins_later_learns_the_counts_and_a_dead_nodes_stop_counting(cluster, make_node, open_client):
    a, = cluster(1, enable_subscription_count=True)
    for client in (open_client(a), open_client(a)):
        client.subscribe("room")
    late = make_node(App(enable_subscription_count=True), adapter=cluster.new_bus(), heartbeat_interval=HEARTBEAT)
    met(a, late)
    newcomer = open_client(late)
    newcomer.subscribe("room")
    counts_until(newcomer, "room", 3)  # a's two, from its sync, and its own
    a.call(lambda: a.adapter.stop())  # a goes silent (as after kill -9): dead after 3 heartbeats
    counts_until(newcomer, "room", 1)


def test_a_subscribe_storm_is_one_count_event_and_a_few_bus_messages():
    from actors import Node

    name = uuid.uuid4().hex
    seen: list[bytes] = []
    listener = MemoryBus.shared(name)  # a member that only listens, on the publishers' threads
    listener.start(seen.append, lambda func, *args: func(*args))
    # Heartbeats at 1 s: a storm on a loaded machine must not look like a dead node.
    nodes = [Node(apps=[App(enable_subscription_count=True)], host="127.0.0.1", port=0, metrics_port=None,
                  adapter=MemoryBus.shared(name), heartbeat_interval=1.0).start() for _ in range(2)]
    clients: list[PusherClient] = []
    try:
        met(*nodes)
        watcher = PusherClient.connect(nodes[1].port)
        clients.append(watcher)
        watcher.subscribe("storm")
        counts_until(watcher, "storm", 1)
        before = len(seen)
        for _ in range(40):
            client = PusherClient.connect(nodes[0].port)
            clients.append(client)
            client.send_event("pusher:subscribe", {"channel": "storm"})  # not waiting: a storm
        for client in clients[1:]:
            client.expect("pusher_internal:subscription_succeeded", "storm")
        heard = counts_until(watcher, "storm", 41)
        assert len(heard) <= 3, heard  # at most once a second while the storm lasts
        shared = [m for m in (wire.decode(data) for data in seen[before:]) if isinstance(m, wire.SubscriptionCounts)]
        assert 1 <= len(shared) <= 10, shared  # batched: far fewer than the 40 subscribes
        assert shared[-1].counts == {"storm": 40} and shared[-1].origin == nodes[0].node_id
    finally:
        for client in clients:
            client.ws.shutdown()
        for node in nodes:
            node.stop()
        listener.stop()


def test_the_subscription_count_webhook_is_sent_once_with_the_clusters_count(cluster, open_client):
    r = Receiver()
    try:
        a, b = cluster(2, enable_subscription_count=True,
                       webhooks=[{"url": r.url, "event_types": ["subscription_count"]}])
        met(a, b)
        on_a, on_b = open_client(a), open_client(b)
        on_a.subscribe("room")
        on_b.subscribe("room")
        counts_until(on_a, "room", 2)
        counts_until(on_b, "room", 2)
        wait_until(lambda: ("subscription_count", "room", 2) in counts(r), message="the webhook with 2")
        time.sleep(0.3)  # a second copy would be on its way by now: asserting silence, bounded
        assert counts(r).count(("subscription_count", "room", 2)) == 1, counts(r)
    finally:
        r.close()


def counts(receiver: Receiver) -> list[tuple]:
    return [(e["name"], e["channel"], e["subscription_count"]) for e in receiver.events()]


def test_a_client_event_reaches_each_subscriber_once_on_both_nodes(cluster, open_client):
    a, b = cluster(2)
    met(a, b)
    sender, neighbour, remote = open_client(a), open_client(a), open_client(b)
    for client, node in ((sender, a), (neighbour, a), (remote, b)):
        client.subscribe("private-chat", **sdk(node).authenticate(channel="private-chat", socket_id=client.socket_id))
    sender.send_json({"event": "client-typing", "channel": "private-chat", "data": {"who": "ann"}})
    for client in (neighbour, remote):
        assert json.loads(client.expect("client-typing", "private-chat")["data"]) == {"who": "ann"}
    # The sender's own copy comes back from the bus to node a: it must not go out again.
    a.broadcast("1", "private-chat", "marker", {})  # after the client event on the bus, so after its copy
    for client in (neighbour, remote):
        assert client.expect("marker", "private-chat")
        client.assert_silent(0.2)
    assert sender.expect("marker", "private-chat")


class _LosingOwnPublishes(MemoryBus):
    """A bus that takes a node's publishes (the result says so) and loses them on the way back to it."""

    owner = ""  # the node whose publishes are lost (set once it is known)

    def _receive(self, data: bytes) -> None:
        message = wire.decode(data)
        if not (isinstance(message, wire.Publish) and message.origin == self.owner):
            super()._receive(data)


def test_an_own_publish_the_bus_took_but_lost_is_still_delivered_on_its_node(make_node, open_client):
    bus = _LosingOwnPublishes()
    node = make_node(App(), adapter=bus, heartbeat_interval=HEARTBEAT)
    bus.owner = node.node_id
    client = open_client(node)
    client.subscribe("news")
    node.broadcast("1", "news", "late", "1")
    started = time.monotonic()
    assert client.expect("late", "news", timeout=3)["data"] == "1"  # after 3 heartbeats of waiting for it
    assert time.monotonic() - started >= 2 * HEARTBEAT
    wait_until(lambda: node.cluster.publishes_in_flight == 0, message="nothing left in flight")

"""Webhooks mean the whole cluster: one occupied, one vacated, one member event per user (memory bus and Redis)."""

from __future__ import annotations

import time

from tests.cluster.test_cluster_nodes import cluster, join_presence  # noqa: F401 - the fixture
from tests.conftest import wait_until
from tests.e2e.test_webhooks import Receiver


def test_two_nodes_send_each_webhook_once(cluster, open_client):  # noqa: F811 - the imported fixture
    r = Receiver()
    try:
        a, b = cluster(2, webhooks=[{"url": r.url}], webhook_delay_seconds=0.2)
        wait_until(lambda: len(a.cluster.live_nodes()) == 2 and len(b.cluster.live_nodes()) == 2, message="met")
        on_a, on_b, also_b = open_client(a), open_client(b), open_client(b)
        for client, user in ((on_a, "u1"), (on_b, "u1"), (also_b, "u2")):
            client.subscribe("news")
            join_presence(client, a if client is on_a else b, "presence-room", user)
        expected = {
            ("channel_occupied", "news", None),
            ("channel_occupied", "presence-room", None),
            ("member_added", "presence-room", "u1"),
            ("member_added", "presence-room", "u2"),
        }
        wait_until(lambda: set(r.names()) >= expected, message="occupied and added")
        for client in (on_a, on_b, also_b):
            client.close()
        gone = {
            ("channel_vacated", "news", None),
            ("channel_vacated", "presence-room", None),
            ("member_removed", "presence-room", "u1"),
            ("member_removed", "presence-room", "u2"),
        }
        wait_until(lambda: set(r.names()) >= expected | gone, message="vacated and removed")
        # Past the delay and a few heartbeats: no second copy of anything.
        wait_until(lambda: a.cluster.is_leader() != b.cluster.is_leader(), message="one leader")
        open_client(a).ping()  # a round trip to each node: what was queued has been handled
        open_client(b).ping()
        time.sleep(0.5)  # past the delay: asserting silence (bounded), not synchronising
        names = r.names()
        assert sorted(names) == sorted(expected | gone), names
    finally:
        r.close()

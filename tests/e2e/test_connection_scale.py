"""Behaviour at scale (issue 5/9): mass disconnects clean up everything, queries over many channels stay right.

Speed is measured by perf/connections.py; these tests guard what must hold.
"""

from __future__ import annotations

import json
import socket
import struct
import urllib.request
from urllib.parse import urlencode

import pusher
import pytest

from tests.e2e.test_private_presence_py import join_presence
from tests.wsclient import RawClient
from transport.http_signing import sign_request


def api_get(node, path: str, **params: str) -> dict:
    query = sign_request("GET", path, params, "app-key", "app-secret")
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}{path}?{urlencode(query)}", timeout=5) as response:
        return json.loads(response.read())


def raw_subscriber(node, *channels: str) -> RawClient:
    client = RawClient.connect(node.port)
    client.expect("pusher:connection_established")
    for channel in channels:
        client.send_json({"event": "pusher:subscribe", "data": {"channel": channel}})
        client.expect("pusher_internal:subscription_succeeded", channel)
    return client


def reset(client: RawClient) -> None:
    # SO_LINGER 0: the close sends a reset, as when a client process or a load balancer dies.
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()


@pytest.mark.single_node(reason="reaches into one node's internals (node._app_actors, node._routes)")
def test_a_mass_disconnect_leaves_no_channel_connection_or_socket_behind_and_survivors_keep_receiving(
    node, open_client, wait_until
):
    survivors = [open_client(node) for _ in range(5)]
    for client in survivors:
        client.subscribe("big")
    dropped = [raw_subscriber(node, "big", f"own-{i}") for i in range(400)]
    assert node.subscription_count("1", "big") == 405
    node.broadcast("1", "big", "before", "0")
    for i, client in enumerate(dropped):
        reset(client) if i % 2 else client.sock.close()
    for n in range(1, 6):  # broadcasts while the node cleans up
        node.broadcast("1", "big", "tick", str(n))
    for client in survivors:
        assert client.expect("before", "big")["data"] == "0"
        assert [client.expect("tick", "big")["data"] for _ in range(5)] == ["1", "2", "3", "4", "5"]
    wait_until(lambda: node.connection_count() == 5, message="the dropped connections are gone")
    wait_until(lambda: node.subscription_count("1", "big") == 5, message="their leaves reached the channel")
    app_actor = node._app_actors["1"]
    wait_until(lambda: node.call(lambda: app_actor.proxy().channel_names().get(timeout=5)) == ["big"],
               message="every own-N channel retired")
    assert node.call(lambda: node._routes.open_sockets) == 5
    assert api_get(node, "/apps/1/channels", info="subscription_count") == {
        "channels": {"big": {"subscription_count": 5}}
    }
    fresh = open_client(node)  # the node serves new clients as before
    fresh.subscribe("big")
    node.broadcast("1", "big", "after", "x")
    assert fresh.expect("after", "big")["data"] == "x"


def test_queries_over_many_channels_answer_every_channel_with_its_counts(node, open_client, wait_until):
    clients = [raw_subscriber(node, f"chan-{i}") for i in range(600)]
    presence = open_client(node)
    sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port, ssl=False)
    join_presence(sdk, presence, "presence-lobby", "ann")
    listing = api_get(node, "/apps/1/channels", info="subscription_count")["channels"]
    assert len(listing) == 601
    assert all(listing[f"chan-{i}"] == {"subscription_count": 1} for i in range(600))
    assert api_get(node, "/apps/1/channels", filter_by_prefix="presence-", info="user_count") == {
        "channels": {"presence-lobby": {"user_count": 1}}
    }
    assert api_get(node, "/apps/1/channels/chan-7", info="subscription_count") == {
        "occupied": True, "subscription_count": 1,
    }
    for client in clients[:300]:
        client.sock.close()
    wait_until(lambda: len(api_get(node, "/apps/1/channels")["channels"]) == 301, message="half the channels vacated")
    assert api_get(node, "/apps/1/channels/chan-7") == {"occupied": False}
    for client in clients[300:]:
        client.close()

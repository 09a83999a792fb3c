"""Metrics end to end: exact counts through node.metrics_totals() and a /metrics scrape."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors import App
from transport.protocol import event_frame

K, N = 20, 5  # broadcasts, subscribers

PER_NODE_METRICS = (
    "each of the two Redis nodes has its own /metrics; the test reads one endpoint as the node's"
)
OVER_THE_HTTP_LIMIT = (
    "broadcasts 100 KB events; a worker node's broadcast goes through the HTTP API, whose "
    "max_event_bytes is 10 KB"
)


def scrape(node) -> dict[tuple[str, str], float]:
    """``{(sample name, app_id): value}`` from the node's /metrics endpoint."""
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, sample.labels.get("app_id", "")] = sample.value
    return samples


def scraped(node, name: str, app_id: str = "1") -> float:
    return scrape(node).get((name, app_id), 0.0)


def total(node, name: str, app_id: str = "1") -> int:
    return node.metrics_totals().get(app_id, {}).get(name, 0)


@pytest.fixture
def subscribers(node, open_client):
    clients = [open_client(node) for _ in range(N)]
    for client in clients:
        client.subscribe("news")
    return clients


@pytest.mark.single_node(reason=PER_NODE_METRICS + "; and under workers2 its counts-before are read "
                         "at once, while a worker node's /metrics lags its workers by up to 0.5 s")
def test_sent_counter_grows_by_exactly_broadcasts_times_subscribers(node, subscribers, wait_until):
    sent_before = total(node, "sent")
    scraped_before = scraped(node, "actorcast_messages_sent_total")
    for i in range(K):
        node.broadcast("1", "news", "tick", {"i": i})
    for client in subscribers:
        for i in range(K):
            assert json.loads(client.expect("tick", "news")["data"]) == {"i": i}
    wait_until(lambda: total(node, "sent") - sent_before >= K * N)
    assert total(node, "sent") - sent_before == K * N
    assert scraped(node, "actorcast_messages_sent_total") - scraped_before == K * N


@pytest.mark.single_node(reason=PER_NODE_METRICS, also=("workers2",))
def test_each_broadcast_is_counted_once_with_one_fanout_observation(node, subscribers, wait_until):
    broadcasts_before = scraped(node, "actorcast_broadcasts_total")
    fanouts_before = scraped(node, "actorcast_broadcast_fanout_seconds_count")
    for i in range(K):
        node.broadcast("1", "news", "tick", i)
    for client in subscribers:
        for _ in range(K):
            client.expect("tick")
    wait_until(lambda: scraped(node, "actorcast_broadcast_fanout_seconds_count") - fanouts_before >= K)
    assert scraped(node, "actorcast_broadcast_fanout_seconds_count") - fanouts_before == K
    assert scraped(node, "actorcast_broadcasts_total") - broadcasts_before == K
    assert total(node, "broadcasts") == scraped(node, "actorcast_broadcasts_total")


@pytest.mark.single_node(reason=PER_NODE_METRICS, also=("workers2",))
def test_connections_gauge_tracks_open_connections(node, open_client, wait_until):
    clients = [open_client(node) for _ in range(3)]
    wait_until(lambda: scraped(node, "actorcast_connections") == 3)
    clients[0].close()
    clients[1].close()
    wait_until(lambda: scraped(node, "actorcast_connections") == 1)
    assert total(node, "opened") == 3
    assert total(node, "closed") == 2


@pytest.mark.single_node(reason=PER_NODE_METRICS, also=("workers2",))
def test_received_counter_counts_client_messages(node, open_client, wait_until):
    client = open_client(node)
    before = total(node, "received")
    for _ in range(7):
        client.ping()
    wait_until(lambda: total(node, "received") - before >= 7)
    assert total(node, "received") - before == 7
    assert scraped(node, "actorcast_messages_received_total") == total(node, "received")


def test_metrics_endpoint_answers_404_elsewhere(node):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/nope", timeout=5)
    assert info.value.code == 404


BIG = "x" * 100_000
BIG_K, BIG_N = 40, 3


@pytest.fixture
def queued_broadcasts(make_node, open_client, wait_until):
    """BIG_K large broadcasts to BIG_N clients with small receive windows that read only afterwards,
    so most frames wait in the writers' queues; returns (node, clients, counts before)."""
    node = make_node(App(max_buffer_bytes=64 << 20))
    clients = [
        open_client(node, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 16384),)) for _ in range(BIG_N)
    ]
    for client in clients:
        client.subscribe("news")
    before = {name: total(node, name) for name in ("sent", "sent_bytes")}
    fanouts_before = scraped(node, "actorcast_broadcast_fanout_seconds_count")
    for i in range(BIG_K):
        node.broadcast("1", "news", "big", BIG)
    wait_until(lambda: scraped(node, "actorcast_broadcast_fanout_seconds_count") - fanouts_before >= BIG_K)
    # Offered to every writer, but not all written yet: the clients have not read.
    assert total(node, "sent") - before["sent"] < BIG_K * BIG_N
    for client in clients:
        for _ in range(BIG_K):
            assert client.expect("big", "news", timeout=10)["data"] == BIG
    return node, before


@pytest.mark.single_node(reason=OVER_THE_HTTP_LIMIT, also=("redis2",))
def test_sent_counter_is_exact_when_frames_wait_in_queues(queued_broadcasts, wait_until):
    node, before = queued_broadcasts
    wait_until(lambda: total(node, "sent") - before["sent"] >= BIG_K * BIG_N)
    assert total(node, "sent") - before["sent"] == BIG_K * BIG_N


@pytest.mark.single_node(reason=OVER_THE_HTTP_LIMIT, also=("redis2",))
def test_sent_bytes_counter_is_exact_when_frames_wait_in_queues(queued_broadcasts, wait_until):
    node, before = queued_broadcasts
    frame_len = len(event_frame("news", "big", BIG))
    wait_until(lambda: total(node, "sent") - before["sent"] >= BIG_K * BIG_N)
    assert total(node, "sent_bytes") - before["sent_bytes"] == BIG_K * BIG_N * frame_len

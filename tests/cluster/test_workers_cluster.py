"""``actorcast serve --workers 2`` as one node: start-up, subscription counts, metrics (real processes).

Helpers are tests/cluster/worker_node.py (which worker holds a client is
read from /proc), the ``workers`` and ``clients`` fixtures conftest.py's. Also here: a node that expects peers listens only
once it has their state (two in-process nodes on the memory bus).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid

from actors import App
from actors.bus import MemoryBus
from tests.cluster.conftest import HEARTBEAT
from tests.cluster.test_cluster_counts import counts_until
from tests.cluster.worker_node import TIMEOUT, Workers, spread, trigger_via, wait_until
from tests.wsclient import PusherClient


def config(tmp_path, **settings) -> str:
    path = tmp_path / "apps.json"
    path.write_text(json.dumps({"apps": [{"id": "1", "key": "app-key", "secret": "app-secret", **settings}]}))
    return str(path)


def scrape(node: Workers) -> dict[str, float]:
    """``{sample name: value}`` of app 1 from the parent's /metrics (200, or the test fails)."""
    with urllib.request.urlopen(node.metrics_url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.match(r'^(\w+)\{app_id="1"\} (\S+)$', line)
        if match:
            samples[match[1]] = float(match[2])
    return samples


def api(node: Workers, path: str, **params: str) -> dict:
    from urllib.parse import urlencode

    from transport.http_signing import sign_request

    query = sign_request("GET", path, params, "app-key", "app-secret")
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}{path}?{urlencode(query)}", timeout=5) as response:
        return json.loads(response.read())


def met_before_listening(node: Workers, worker: int, since: int = 0) -> bool:
    """Worker ``worker`` logged that it met another before its parent logged it ready (it listens then)."""
    lines = node.serve.output[since:]
    joined = next(i for i, line in enumerate(lines)
                  if f" worker-{worker} actors.cluster: node" in line and "joined the cluster" in line)
    ready = next(i for i, line in enumerate(lines) if re.search(rf"actors\.workers: worker {worker} (re)?started", line))
    return joined < ready


# --- a worker listens once it knows the others --------------------------------------


def test_each_worker_meets_the_others_before_it_listens_and_the_first_requests_see_both(workers, clients):
    node = workers(2)
    for worker in (1, 2):
        assert met_before_listening(node, worker), node.serve.output
    # At once (no waiting for the workers to meet): clients on both workers, then one question to each.
    group: list[PusherClient] = clients(node.port, 2)
    while len(spread(node, group)) < 2:
        assert len(group) < 40, "every client landed on one worker"
        group += clients(node.port)
    for client in group:
        client.subscribe("room")
    answers = []
    for _ in range(20):  # fresh HTTP connections: the kernel spreads them over both workers too
        answers.append(api(node, "/apps/1/channels/room", info="subscription_count")["subscription_count"])
    assert answers == [len(group)] * 20


def test_a_restarted_worker_meets_the_survivor_before_it_listens(workers, clients):
    node = workers(2)
    victim = sorted(node.pids())[0]
    since = len(node.serve.output)
    os.kill(victim, signal.SIGKILL)
    died = node.serve.wait_for(re.compile(rf"worker (\d) \(pid {victim}\) died"))
    node.serve.wait_for(re.compile(rf"worker {died[1]} restarted \(pid \d+\)"))
    assert met_before_listening(node, int(died[1]), since), node.serve.output[since:]


def test_a_node_that_expects_peers_listens_only_once_it_has_their_state(make_node, open_client):
    name = uuid.uuid4().hex
    first = make_node(App(), adapter=MemoryBus.shared(name), heartbeat_interval=HEARTBEAT)
    ann = open_client(first)
    ann.subscribe("room")
    late = make_node(App(), adapter=MemoryBus.shared(name), heartbeat_interval=HEARTBEAT, expect_peers=1)
    assert late.call(late.cluster.synced_peers) == 1  # start() returned: the peer's state is here
    assert late.call(lambda: late._backend.channel_info(late.apps.by_id("1"), "room")) == {"subscription_count": 1}


def test_a_node_that_expects_a_peer_that_never_comes_listens_after_a_bounded_wait(make_node, monkeypatch, caplog):
    import actors.cluster

    monkeypatch.setattr(actors.cluster, "MEET_PEERS_SECONDS", 0.3)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="actors.cluster"):
        node = make_node(App(), adapter=MemoryBus.shared(uuid.uuid4().hex), expect_peers=1)
    assert 0.3 <= time.monotonic() - started < 5
    assert node.port and "met 0 of the 1 other nodes expected" in caplog.text


# --- subscription counts across workers ----------------------------------------------


def test_subscription_count_counts_the_subscribers_of_every_worker(workers, clients, tmp_path):
    node = workers(2, "--config", config(tmp_path, enable_subscription_count=True))
    group = clients(node.port, 8)
    by_worker = spread(node, group)
    assert len(by_worker) == 2
    for client in group:
        client.subscribe("room")
    for client in group:
        counts_until(client, "room", 8)
    leaving = min(by_worker.values(), key=len)  # every client of one worker goes
    for client in leaving:
        client.close()
    staying = [c for c in group if c not in leaving]
    for client in staying:
        counts_until(client, "room", len(staying))


# --- /metrics means the whole node ---------------------------------------------------


def test_metrics_count_each_broadcast_once_and_each_written_message_across_workers(workers, clients):
    node = workers(2)
    group = clients(node.port, 10)
    by_worker = spread(node, group)
    assert len(by_worker) == 2
    for client in group:
        client.subscribe("news")
    # connection_established and subscription_succeeded: two messages written per client so far.
    wait_until(lambda: scrape(node).get("actorcast_messages_sent_total") == 2 * len(group), message="2 per client")
    k = 6
    for i in range(k):  # through both workers in turn
        trigger_via(node, sorted(by_worker)[i % 2], None, "tick", str(i))
    for client in group:
        for _ in range(k):
            client.expect("tick", "news")

    expected = {
        "actorcast_broadcasts_total": k,  # once each, by the worker that accepted it
        "actorcast_broadcast_fanout_seconds_count": k,  # one observation each, there
        "actorcast_remote_fanout_seconds_count": k,  # and the other worker's share, apart
        "actorcast_messages_sent_total": 2 * len(group) + k * len(group),  # each write once
    }

    def flushed() -> dict[str, float] | None:  # workers flush every 0.5 s; counts only grow
        samples = scrape(node)
        return samples if all(samples.get(name, 0) >= value for name, value in expected.items()) else None

    samples = wait_until(flushed, message=f"the counts reached {expected}")
    assert {name: samples[name] for name in expected} == expected


def test_an_empty_metrics_file_left_by_a_worker_killed_as_it_made_it_does_not_break_scrapes(workers, clients):
    node = workers(2)
    clients(node.port, 4)
    wait_until(lambda: scrape(node).get("actorcast_connections") == 4, message="4 connections")
    metrics_dir = _metrics_dir(node)
    for name in ("counter_999999.db", "gauge_livesum_999999.db", "histogram_999999.db"):
        open(os.path.join(metrics_dir, name), "wb").close()  # created, never sized (prometheus-client #1199)
    samples = scrape(node)
    assert samples["actorcast_connections"] == 4 and samples["actorcast_connections_opened_total"] == 4


def _metrics_dir(node: Workers) -> str:
    """The parent's metrics directory, as its workers were told."""
    with open(f"/proc/{min(node.pids())}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return env[b"PROMETHEUS_MULTIPROC_DIR"].decode()


def test_scrapes_stay_200_while_workers_are_killed_and_restarted(workers, clients):
    node = workers(2)
    failures: list[str] = []
    scrapes = 0
    done = threading.Event()

    def scraper() -> None:
        nonlocal scrapes
        while not done.is_set():
            try:
                urllib.request.urlopen(node.metrics_url, timeout=5).read()
            except (urllib.error.URLError, OSError) as exc:
                failures.append(repr(exc))
            scrapes += 1

    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            victim = sorted(node.pids())[0]
            os.kill(victim, signal.SIGKILL)
            died = node.serve.wait_for(re.compile(rf"worker (\d) \(pid {victim}\) died"))
            node.serve.wait_for(re.compile(rf"worker {died[1]} restarted \(pid \d+\)"), timeout=TIMEOUT)
            for client in clients(node.port, 4):  # the new worker counts, so it makes its files
                client.ping()
    finally:
        done.set()
        thread.join(TIMEOUT)
    assert scrapes > 10 and not failures, failures[:5]

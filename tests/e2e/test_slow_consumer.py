"""A client that never reads must cost the others nothing, and is closed with 4100."""

from __future__ import annotations

import json
import threading
import time

import pytest

from actors import App
from tests.wsclient import RawClient

MESSAGES = 300
PAD = "x" * 32_000  # 300 x 32 KB = 9.6 MB per subscriber: far past the socket buffers + the writer's cap
MAX_BUFFER = 256 * 1024
FAST_CLIENTS = 3
# The publisher stays at most WINDOW messages ahead of the slowest *reading* client, so
# the readers never hold a backlog near the cap; only the client that never reads does.
WINDOW = 4

OVER_THE_HTTP_LIMIT = (
    "broadcasts 32 KB events; a worker node's broadcast goes through the HTTP API, whose "
    "max_event_bytes is 10 KB"
)


@pytest.mark.single_node(reason=OVER_THE_HTTP_LIMIT, also=("redis2",))
def test_a_client_that_never_reads_does_not_delay_the_others_and_is_closed_with_4100(
    make_node, open_client, wait_until
):
    node = make_node(App(max_buffer_bytes=MAX_BUFFER))
    # A tiny receive buffer, set before connect so the TCP window stays tiny.
    stalled = RawClient.connect(node.port, rcvbuf=4096)
    try:
        stalled.expect("pusher:connection_established")
        stalled.send_json({"event": "pusher:subscribe", "data": {"channel": "news"}})  # and never reads again
        fast = [open_client(node) for _ in range(FAST_CLIENTS)]
        for client in fast:
            client.subscribe("news")
        wait_until(lambda: node.subscription_count("1", "news") == FAST_CLIENTS + 1)

        received: dict[int, list[int]] = {i: [] for i in range(FAST_CLIENTS)}
        finished: dict[int, float] = {}
        errors: list[BaseException] = []
        progress = threading.Condition()

        def read_all(i: int) -> None:
            try:
                for _ in range(MESSAGES):
                    n = json.loads(fast[i].expect("big", "news", timeout=10)["data"])["i"]
                    with progress:
                        received[i].append(n)
                        progress.notify_all()
                finished[i] = time.monotonic()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
            finally:
                with progress:
                    progress.notify_all()

        def readers_caught_up_to(n: int) -> bool:
            return bool(errors) or all(len(r) >= n for r in received.values())

        readers = [threading.Thread(target=read_all, args=(i,), daemon=True) for i in range(FAST_CLIENTS)]
        for reader in readers:
            reader.start()
        started = time.monotonic()
        for i in range(MESSAGES):
            with progress:
                assert progress.wait_for(lambda: readers_caught_up_to(i - WINDOW), timeout=10), "readers stuck"
            assert not errors, errors
            node.broadcast("1", "news", "big", {"i": i, "pad": PAD})
        for reader in readers:
            reader.join(20)
            assert not reader.is_alive(), "a fast client is still reading after 20 s"
        assert not errors, errors
        # Every fast client got every broadcast, in order, promptly.
        for i in range(FAST_CLIENTS):
            assert received[i] == list(range(MESSAGES))
            assert finished[i] - started < 10

        # The stalled client was dropped from the node ...
        wait_until(lambda: node.connection_count() == FAST_CLIENTS)
        wait_until(lambda: node.subscription_count("1", "news") == FAST_CLIENTS)
        assert node.metrics_totals()["1"].get("dropped") == 1
        # ... and once it reads, the last things it finds are pusher:error 4100 and a 4100 close.
        code, before = stalled.expect_close(timeout=10)
        assert code == 4100
        assert before[-1]["event"] == "pusher:error"
        assert before[-1]["data"]["code"] == 4100
        assert len(before) - 1 < MESSAGES  # it did not get everything: its backlog was dropped
    finally:
        stalled.close()

    # The others are still served normally.
    node.broadcast("1", "news", "after", "x")
    for client in fast:
        client.expect("after", "news")


@pytest.mark.single_node(reason=OVER_THE_HTTP_LIMIT, also=("redis2",))
def test_a_slow_reader_within_the_buffer_cap_gets_everything(make_node, open_client, wait_until):
    node = make_node(App(max_buffer_bytes=16 << 20))
    slow = RawClient.connect(node.port, rcvbuf=4096)
    try:
        slow.expect("pusher:connection_established")
        slow.send_json({"event": "pusher:subscribe", "data": {"channel": "news"}})
        wait_until(lambda: node.subscription_count("1", "news") == 1)
        for i in range(50):
            node.broadcast("1", "news", "big", {"i": i, "pad": PAD})  # 1.6 MB: queued, not dropped
        slow.expect("pusher_internal:subscription_succeeded", "news")
        got = [json.loads(slow.expect("big", "news", timeout=10)["data"])["i"] for _ in range(50)]
        assert got == list(range(50))
        assert node.connection_count() == 1
    finally:
        slow.close()

"""Subscribe, unsubscribe and disconnect racing with broadcasts.

Clients run in plain threads against a real node; the publisher fires a
bounded burst of numbered broadcasts while other clients join, leave and
drop. Every connection must see a strictly increasing sequence (no
duplicate, nothing out of order), steady subscribers must see all of it,
and the node must end with exactly the subscriptions that are left.
"""

from __future__ import annotations

import random
import threading

import pytest
import websocket

from tests.conftest import wait_until
from tests.wsclient import Closed, PusherClient

CHANNEL = "race"
MESSAGES = 300


def _seq(message: dict) -> int | None:
    if message.get("event") == "seq" and message.get("channel") == CHANNEL:
        return int(message["data"].split(":")[1])
    return None


def _read_seqs(client: PusherClient, want: int, timeout: float = 10.0) -> list[int]:
    seqs: list[int] = []
    while len(seqs) < want:
        seq = _seq(client.recv(timeout))
        if seq is not None:
            seqs.append(seq)
    return seqs


def test_churn_during_a_burst_loses_nothing_for_steady_subscribers_and_duplicates_nothing(node):
    steady = [PusherClient.connect(node.port) for _ in range(8)]
    for client in steady:
        client.subscribe(CHANNEL)
    errors: list[BaseException] = []
    seen: list[list[int]] = []
    start = threading.Event()

    def publish() -> None:
        start.wait(5)
        for seq in range(1, MESSAGES + 1):
            node.broadcast("1", CHANNEL, "seq", f"n:{seq}")

    def churn(rounds: int, rng: random.Random) -> None:
        try:
            start.wait(5)
            for _ in range(rounds):
                client = PusherClient.connect(node.port)
                got: list[int] = []
                seen.append(got)
                client.subscribe(CHANNEL)
                for _ in range(rng.randint(0, 3)):
                    try:
                        seq = _seq(client.recv(0.2))
                    except websocket.WebSocketTimeoutException:
                        break  # the burst is over
                    if seq is not None:
                        got.append(seq)
                action = rng.choice(["unsubscribe", "resubscribe", "drop", "close"])
                if action in ("unsubscribe", "resubscribe"):
                    client.unsubscribe(CHANNEL)
                if action == "resubscribe":
                    client.send_json({"event": "pusher:subscribe", "data": {"channel": CHANNEL}})
                if action == "drop":
                    client.ws.shutdown()  # no close handshake: the socket just goes
                else:
                    client.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=publish)]
    threads += [threading.Thread(target=churn, args=(12, random.Random(i))) for i in range(6)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors

    for client in steady:
        assert _read_seqs(client, MESSAGES) == list(range(1, MESSAGES + 1))
    for got in seen:
        assert got == sorted(set(got)), f"duplicate or out of order: {got}"
    wait_until(lambda: node.connection_count() == len(steady), message="churned connections are gone")
    wait_until(lambda: node.subscription_count("1", CHANNEL) == len(steady), message="only steady ones left")
    for client in steady:
        client.ping()  # still served
        client.close()


def test_no_event_reaches_a_socket_after_its_unsubscribe_took_effect(node):
    leaving, staying = PusherClient.connect(node.port), PusherClient.connect(node.port)
    leaving.subscribe(CHANNEL)
    staying.subscribe(CHANNEL)
    leaving.unsubscribe(CHANNEL)
    wait_until(lambda: node.subscription_count("1", CHANNEL) == 1, message="the unsubscribe took effect")
    node.broadcast("1", CHANNEL, "seq", "n:1")
    assert _seq(staying.recv()) == 1
    # The channel's send loop never yields, so once a subscriber has the event
    # the loop is done; the pong is written after it: anything sent to
    # ``leaving`` would arrive before the pong.
    leaving.send_json({"event": "pusher:ping", "data": {}})
    assert leaving.recv()["event"] == "pusher:pong"
    leaving.close()
    staying.close()


def test_a_client_dropping_mid_burst_does_not_disturb_the_others(node):
    victims = [PusherClient.connect(node.port) for _ in range(5)]
    steady = PusherClient.connect(node.port)
    for client in [*victims, steady]:
        client.subscribe(CHANNEL)
    for seq in range(1, 101):
        node.broadcast("1", CHANNEL, "seq", f"n:{seq}")
        if seq % 20 == 0:
            victims.pop().ws.shutdown()
    assert _read_seqs(steady, 100) == list(range(1, 101))
    wait_until(lambda: node.connection_count() == 1, message="dropped sockets are cleaned up")
    try:
        steady.ping()
    except Closed as closed:  # pragma: no cover - would be the bug this test is for
        raise AssertionError(f"steady client was closed: {closed}") from None
    steady.close()


@pytest.mark.single_node(reason="monkeypatches ChannelActor.fanout_slice in this process", also=("redis2",))
def test_a_channel_served_in_slices_keeps_every_subscriber_in_order(node, monkeypatch):
    from actors.channel import ChannelActor

    # Tiny slices: every broadcast to these 7 subscribers yields between
    # slices, while a second channel's broadcasts run in between.
    monkeypatch.setattr(ChannelActor, "fanout_slice", 2)
    big = [PusherClient.connect(node.port) for _ in range(7)]
    other = PusherClient.connect(node.port)
    for client in big:
        client.subscribe(CHANNEL)
    other.subscribe("other")
    for seq in range(1, 51):
        node.broadcast("1", CHANNEL, "seq", f"n:{seq}", socket_id=big[0].socket_id if seq % 10 == 0 else None)
        node.broadcast("1", "other", "seq", f"n:{seq}")
    expected = list(range(1, 51))
    assert _read_seqs(big[0], 45) == [n for n in expected if n % 10]  # excluded from every tenth
    for client in big[1:]:
        assert _read_seqs(client, 50) == expected
    got = []
    while len(got) < 50:
        message = other.recv()
        assert message["event"] == "seq" and message["channel"] == "other"
        got.append(int(message["data"].split(":")[1]))
    assert got == expected
    for client in [*big, other]:
        client.close()

"""Supervision end to end: a real node whose actors are made to raise on purpose.

A bug is planted for one special name (a channel, an event), so the rest of
the node runs normally. Each test proves four things: one ERROR line names
the dead actor and where it raised; the affected clients are closed with the
right code (4200: reconnect now, 1011: internal error); a fresh actor serves
them afterwards; and a healthy client elsewhere keeps receiving throughout.
The node logs from its own thread, so a handler on the root logger collects.
"""

from __future__ import annotations

import logging

import pusher
import pytest

from actors import App
from actors.app import AppActor
from actors.channel import ChannelActor
from actors.connection import ConnectionActor
from tests.wsclient import PusherClient
from transport import protocol

TIMEOUT = 5.0
RECONNECT = 4200
INTERNAL_ERROR = 1011


class PlantedBug(RuntimeError):
    """The exception these tests raise on purpose."""


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def error_log():
    """``error_log()``: every ERROR record logged so far, from any thread."""
    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: list(handler.records)
    root.removeHandler(handler)


def one_error_line(error_log, wait_until, *parts: str) -> str:
    """Wait for the death's line; assert it is the only ERROR, has no traceback, and says ``parts``."""
    wait_until(error_log, message="the supervisor logged the death")
    records = error_log()
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.exc_info is None and record.name != "pykka"
    text = record.getMessage()
    for part in parts:
        assert part in text, text
    return text


def expect_closed_with(client: PusherClient, code: int, racing: tuple[str, ...] = ()) -> None:
    """The client hears ``pusher:error`` with ``code``, then a close frame with ``code``.

    ``racing``: events broadcast while the bug struck, which may or may not
    reach the client first.
    """
    close_code, before = client.expect_close(TIMEOUT)
    assert close_code == code
    assert [m["event"] for m in before[:-1]] == [e for e in racing if e in {m["event"] for m in before}]
    assert (before[-1]["event"], before[-1]["data"]["code"]) == ("pusher:error", code)


# --- a channel actor dies ---------------------------------------------------------------


@pytest.fixture
def fragile_channel(monkeypatch):
    """A broadcast of the event ``crash`` kills the channel actor it reaches."""
    original = ChannelActor.broadcast

    def broadcast(self, message):
        if b'"event":"crash"' in message.frame:
            raise PlantedBug(f"planted in channel {self.name}")
        return original(self, message)

    monkeypatch.setattr(ChannelActor, "broadcast", broadcast)


@pytest.mark.single_node(reason="plants a bug by monkeypatching actor classes in this process, and "
                                "expects one ERROR line: with two nodes the event kills each node's channel actor")
def test_a_dead_channel_actor_sends_its_subscribers_4200_and_a_fresh_actor_serves_the_resubscribe(
    node, open_client, fragile_channel, error_log, wait_until
):
    steady = open_client(node)
    steady.subscribe("steady")
    victims = [open_client(node) for _ in range(2)]
    for victim in victims:
        victim.subscribe("fragile")
    victims[0].subscribe("elsewhere")
    node.broadcast("1", "steady", "before", "1")
    assert steady.expect("before", "steady")["data"] == "1"

    node.broadcast("1", "fragile", "crash", "x")
    node.broadcast("1", "steady", "during", "2")
    for victim in victims:
        expect_closed_with(victim, RECONNECT)
    assert steady.expect("during", "steady")["data"] == "2"
    one_error_line(
        error_log, wait_until, "channel actor fragile of app 1 died", "PlantedBug: planted in channel fragile",
        "e2e/test_supervision.py:",
    )

    # What pusher-js does on 4200: reconnect at once and resubscribe.
    again = [open_client(node) for _ in victims]
    for client in again:
        client.subscribe("fragile")
    node.broadcast("1", "fragile", "after", "3")
    node.broadcast("1", "steady", "after", "4")
    for client in again:
        assert client.expect("after", "fragile")["data"] == "3"
    assert steady.expect("after", "steady")["data"] == "4"
    assert node.subscription_count("1", "fragile") == 2
    wait_until(lambda: node.connection_count() == 3)
    assert len(error_log()) == 1


# --- a connection actor dies ------------------------------------------------------------


@pytest.mark.single_node(reason="plants a bug by monkeypatching actor classes in this process", also=("redis2",))
def test_a_dead_connection_actor_closes_its_client_with_1011_and_leaves_its_channels(
    node, open_client, monkeypatch, error_log, wait_until
):
    original = ConnectionActor.subscribe

    def subscribe(self, message):
        if message.channel == "crash-me":
            raise PlantedBug("planted in subscribe")
        return original(self, message)

    monkeypatch.setattr(ConnectionActor, "subscribe", subscribe)
    steady, victim = open_client(node), open_client(node)
    for client in (steady, victim):
        client.subscribe("news")

    victim.send_event("pusher:subscribe", {"channel": "crash-me"})
    node.broadcast("1", "news", "during", "1")
    expect_closed_with(victim, INTERNAL_ERROR, racing=("during",))
    assert steady.expect("during", "news")["data"] == "1"
    one_error_line(
        error_log, wait_until, f"connection actor {victim.socket_id} of app 1 died", "PlantedBug: planted in subscribe",
        "e2e/test_supervision.py:",
    )
    wait_until(lambda: node.subscription_count("1", "news") == 1, message="the dead connection left its channel")
    wait_until(lambda: node.connection_count() == 1)

    fresh = open_client(node)  # the client reconnects and is served as before
    fresh.subscribe("news")
    node.broadcast("1", "news", "after", "2")
    for client in (steady, fresh):
        assert client.expect("after", "news")["data"] == "2"
    assert len(error_log()) == 1


@pytest.mark.single_node(reason="plants a bug by monkeypatching actor classes in this process", also=("redis2",))
def test_a_connection_actor_that_dies_while_starting_closes_with_1011_and_the_next_one_works(
    node, open_client, monkeypatch, error_log, wait_until
):
    steady = open_client(node)
    steady.subscribe("news")
    original = protocol.connection_established_frame
    calls: list = []

    def established(socket_id, activity_timeout):
        calls.append(socket_id)
        if len(calls) == 1:
            raise PlantedBug("planted in on_start")
        return original(socket_id, activity_timeout)

    monkeypatch.setattr(protocol, "connection_established_frame", established)
    with PusherClient.connect(node.port, established=False) as victim:
        expect_closed_with(victim, INTERNAL_ERROR)
    one_error_line(error_log, wait_until, f"connection actor {calls[0]} of app 1 died", "planted in on_start")
    wait_until(lambda: node.connection_count() == 1)

    fresh = open_client(node)
    fresh.subscribe("news")
    node.broadcast("1", "news", "after", "1")
    for client in (steady, fresh):
        assert client.expect("after", "news")["data"] == "1"
    assert len(error_log()) == 1


# --- an app actor dies -------------------------------------------------------------------


@pytest.mark.single_node(reason="reaches into one node's internals (node._app_actors)")
def test_a_dead_app_actor_closes_its_clients_with_4200_and_the_node_starts_a_fresh_one(
    make_node, open_client, monkeypatch, error_log, wait_until
):
    original = AppActor.publish_frames

    def publish_frames(self, frames, *args):
        if any(b'"kill-app"' in frame for _, frame in frames):
            raise PlantedBug("planted in publish")
        return original(self, frames, *args)

    monkeypatch.setattr(AppActor, "publish_frames", publish_frames)
    node = make_node(App(), App(id="2", key="key-2", secret="secret-2"))
    sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port,
                        ssl=False, timeout=TIMEOUT)
    healthy = open_client(node, key="key-2")  # another app on the same node
    healthy.subscribe("steady")
    victims = [open_client(node) for _ in range(2)]
    for victim in victims:
        victim.subscribe("news")
    dead = node._app_actors["1"]

    assert sdk.trigger("news", "kill-app", "x") == {}  # accepted; the app actor dies handling it
    node.broadcast("2", "steady", "during", "1")
    for victim in victims:
        expect_closed_with(victim, RECONNECT)
    assert healthy.expect("during", "steady")["data"] == "1"
    one_error_line(
        error_log, wait_until, "app actor 1 died", "PlantedBug: planted in publish", "e2e/test_supervision.py:",
        "restarted",
    )
    assert not dead.is_alive()
    assert node._app_actors["1"] is not dead and node._app_actors["1"].is_alive()

    # New clients and the HTTP API are served by the fresh app actor.
    again = [open_client(node) for _ in victims]
    for client in again:
        client.subscribe("news")
    assert sdk.trigger("news", "after", "2") == {}
    for client in again:
        assert client.expect("after", "news")["data"] == "2"
    assert sdk.channels_info() == {"channels": {"news": {}}}
    node.broadcast("2", "steady", "after", "3")
    assert healthy.expect("after", "steady")["data"] == "3"
    wait_until(lambda: node.connection_count("1") == 2)
    assert len(error_log()) == 1

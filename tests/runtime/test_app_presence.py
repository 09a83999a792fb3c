"""The app actor decides a cluster's presence when its Members come back from the bus (actors.app_presence).

The bus is a fake that records what the app actor sends; the test plays it
back (or not) as ``RemoteMember`` messages, in the order it chooses.
"""

from __future__ import annotations

import json

import gevent.event
import pytest

from actors import app_presence
from actors.app import AppActor
from actors.messages import Join, Leave, RemoteMember
from tests.conftest import wait_until
from tests.runtime.test_supervision import FakeWriter, Inbox, Sink, _message
from transport import cluster as wire
from transport.auth import PresenceMember
from transport.config import App

TIMEOUT = 2.0
P = "presence-room"


class FakeCluster:
    """A node with one peer whose bus takes everything and brings nothing back by itself."""

    def __init__(self) -> None:
        self.node_id = "me"
        self.solo = False
        self.peers = {"peer": 0.0}
        self.sent: list = []

    def send(self, message):
        self.sent.append(message)
        taken = gevent.event.AsyncResult()
        taken.set(True)
        return taken

    def members(self) -> list[wire.Member]:
        return [m for m in list(self.sent) if isinstance(m, wire.Member)]


@pytest.fixture
def node():
    cluster = FakeCluster()
    return AppActor.start(App(max_presence_members=2), Sink.start(), cluster=cluster), cluster


def join(app_actor, socket_id: str, user_id: str) -> FakeWriter:
    writer = FakeWriter()
    app_actor.tell(Join(P, socket_id, writer, Inbox.start(), PresenceMember(user_id, {"n": user_id}, "{}")))
    return writer


def echo(app_actor, member: wire.Member, node: str = "me") -> None:
    """``member`` comes back from the bus (from ``node``)."""
    app_actor.tell(RemoteMember(node, member.channel, member.user_id, member.user_info, member.joined,
                                member.ask, member.seq))


def presence_of(writer: FakeWriter) -> dict:
    for _, message in map(_message, writer.frames):
        if message.get("event") == "pusher_internal:subscription_succeeded":
            return json.loads(message["data"])["presence"]
    raise AssertionError(f"no subscription_succeeded in {writer.events()}")


def test_a_first_socket_waits_for_its_join_to_come_back_then_gets_the_members_at_that_point(node):
    app_actor, cluster = node
    writer = join(app_actor, "1.1", "ann")
    wait_until(lambda: len(cluster.members()) == 1, message="the join went on the bus")
    (asked,) = cluster.members()
    assert asked.ask and asked.joined and asked.seq > 0
    assert writer.events() == []  # nothing before the cluster's answer
    echo(app_actor, wire.Member("peer", "1", P, "ben", {"n": "ben"}, True, True, 1), node="peer")  # ahead of ours
    echo(app_actor, asked)
    wait_until(lambda: writer.events() == [("pusher_internal:subscription_succeeded", P)])
    assert presence_of(writer)["ids"] == ["ben", "ann"]
    second = join(app_actor, "1.2", "ann")  # a member here already: at once
    wait_until(lambda: second.events() == [("pusher_internal:subscription_succeeded", P)])
    assert len(cluster.members()) == 1


def test_the_limit_is_decided_in_the_order_and_refuses_with_no_leave(node):
    app_actor, cluster = node
    for user in ("ben", "cat"):
        echo(app_actor, wire.Member("peer", "1", P, user, None, True, True, 1), node="peer")
    writer = join(app_actor, "1.1", "ann")
    wait_until(lambda: len(cluster.members()) == 1)
    echo(app_actor, cluster.members()[0])
    wait_until(lambda: writer.events() == [("pusher:subscription_error", P)])
    assert app_actor.proxy().presence_users(P).get(timeout=TIMEOUT) == ["ben", "cat"]
    assert app_actor.proxy().local_presence().get(timeout=TIMEOUT) == {}  # a Sync does not count it
    assert len(cluster.members()) == 1


def test_join_leave_join_before_the_echoes_resolve_in_order(node):
    app_actor, cluster = node
    watcher = join(app_actor, "1.0", "wat")
    wait_until(lambda: len(cluster.members()) == 1)
    echo(app_actor, cluster.members()[0])
    wait_until(lambda: watcher.events() == [("pusher_internal:subscription_succeeded", P)])
    first = join(app_actor, "1.1", "ann")
    app_actor.tell(Leave(P, "1.1"))
    again = join(app_actor, "1.2", "ann")
    wait_until(lambda: len(cluster.members()) == 4, message="join, leave, join on the bus")
    sent = cluster.members()[1:]
    assert [(m.joined, m.ask) for m in sent] == [(True, True), (False, False), (True, True)]
    for member in sent:
        echo(app_actor, member)
    wait_until(lambda: again.events() == [("pusher_internal:subscription_succeeded", P)])
    assert first.events() == []  # it left before any answer
    assert [e for e, _ in watcher.events()][1:] == [
        "pusher_internal:member_added", "pusher_internal:member_removed", "pusher_internal:member_added"]


def test_a_join_that_does_not_come_back_is_decided_here_and_the_others_told(node, monkeypatch):
    monkeypatch.setattr(app_presence, "ADMIT_TIMEOUT", 0.05)
    app_actor, cluster = node
    writer = join(app_actor, "1.1", "ann")
    wait_until(lambda: writer.events() == [("pusher_internal:subscription_succeeded", P)], timeout=TIMEOUT)
    asked, decided = cluster.members()
    assert decided == wire.Member("me", "1", P, "ann", {"n": "ann"}, True)  # seq 0: ours already
    echo(app_actor, asked)  # back too late: decided already, nothing changes
    assert app_actor.proxy().presence_users(P).get(timeout=TIMEOUT) == ["ann"]
    assert writer.events() == [("pusher_internal:subscription_succeeded", P)]

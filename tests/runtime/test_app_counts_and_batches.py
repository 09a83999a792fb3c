"""The app actor keeps every channel's counts and batches the leaves of a disconnect burst (5/9)."""

from __future__ import annotations

import pytest

from actors.app import AppActor
from actors.channel import ChannelActor
from actors.messages import Join, LeaveAll, Publish
from tests.runtime.test_supervision import FakeWriter, Inbox, Sink
from transport.auth import PresenceMember
from tests.conftest import wait_until
from transport.config import App

TIMEOUT = 2.0


@pytest.fixture
def app_actor():
    return AppActor.start(App(), Sink.start())


@pytest.fixture
def leave_batches(monkeypatch):
    """The socket ids of every LeaveMany a channel handled, per call."""
    calls: list[tuple[str, int]] = []
    original = ChannelActor.leave_many

    def recording(self, socket_ids):
        calls.append((self.name, len(socket_ids)))
        return original(self, socket_ids)

    monkeypatch.setattr(ChannelActor, "leave_many", recording)
    return calls


def join(app_actor, channel: str, socket_id: str, member=None) -> FakeWriter:
    writer = FakeWriter()
    app_actor.tell(Join(channel, socket_id, writer, Inbox.start(), member))
    return writer


def test_counts_are_kept_by_the_app_actor_as_channels_report_them(app_actor):
    for i in range(5):
        join(app_actor, "news", f"1.{i}")
    join(app_actor, "presence-room", "2.1", PresenceMember("ann", None, "{}"))
    join(app_actor, "presence-room", "2.2", PresenceMember("ann", None, "{}"))
    join(app_actor, "presence-room", "2.3", PresenceMember("bob", None, "{}"))
    app = app_actor.proxy()
    # Counts arrive as the channels report them, right after each join.
    wait_until(lambda: app.channels_info().get(timeout=TIMEOUT) == {"news": (5, 0), "presence-room": (3, 2)})
    assert app.channel_info("news").get(timeout=TIMEOUT) == (5, 0)
    assert app.channel_info("nobody-here").get(timeout=TIMEOUT) is None


def test_a_burst_of_disconnects_reaches_each_channel_as_one_batch(app_actor, leave_batches):
    for i in range(300):
        join(app_actor, "big", f"1.{i}")
        join(app_actor, f"own-{i}", f"1.{i}")
    app = app_actor.proxy()
    wait_until(lambda: app.channel_info("big").get(timeout=TIMEOUT) == (300, 0))
    for i in range(300):  # all queued before the app actor runs: one burst
        app_actor.tell(LeaveAll(("big", f"own-{i}"), f"1.{i}"))
    survivor = join(app_actor, "big", "9.9")
    wait_until(lambda: app.channel_info("big").get(timeout=TIMEOUT) == (1, 0))
    assert [n for name, n in leave_batches if name == "big"] == [300]
    assert survivor.events()[0] == ("pusher_internal:subscription_succeeded", "big")
    # The emptied channels retire when their actors report empty, which may come after big's count.
    wait_until(lambda: sorted(app.channel_names().get(timeout=TIMEOUT)) == ["big"])


def test_held_leaves_go_first_when_anything_else_reaches_their_channel(app_actor, leave_batches):
    watcher = join(app_actor, "news", "1.1")
    join(app_actor, "news", "1.2")
    app_actor.tell(LeaveAll(("news",), "1.2"))
    app_actor.tell(Publish(("news",), "after-leave", "{}", None, 0.0))
    app = app_actor.proxy()
    wait_until(lambda: app.channel_info("news").get(timeout=TIMEOUT) == (1, 0))
    assert leave_batches == [("news", 1)]
    assert [event for event, _ in watcher.events()][-1] == "after-leave"


def test_presence_members_leave_once_per_user_in_a_batch(app_actor):
    watcher = join(app_actor, "presence-room", "1.0", PresenceMember("watcher", None, "{}"))
    for i in range(3):
        join(app_actor, "presence-room", f"2.{i}", PresenceMember("ann", None, "{}"))
    join(app_actor, "presence-room", "3.0", PresenceMember("bob", None, "{}"))
    for socket_id in ("2.0", "2.1", "2.2", "3.0"):
        app_actor.tell(LeaveAll(("presence-room",), socket_id))
    app = app_actor.proxy()
    wait_until(lambda: app.channel_info("presence-room").get(timeout=TIMEOUT) == (1, 1))
    removed = [e for e, _ in watcher.events() if e == "pusher_internal:member_removed"]
    assert len(removed) == 2  # ann once (her last socket), bob once

"""Supervision on the test's hub: an actor that dies of a bug is reported on one
line by its supervisor, and service is restored.

Actors here are real (GeventActor, AppActor, ChannelActor, ConnectionActor);
sockets are fakes (:class:`FakeWriter` records frames), connections seen by
the app actor are :class:`Inbox` actors that record what they are told. The
bugs are planted on purpose (a method made to raise for one name).
"""

from __future__ import annotations

import json
import logging
import struct

import pykka
import pytest

from actors.app import AppActor
from actors.channel import ChannelActor
from actors.connection import ConnectionActor
from actors.messages import Broadcast, ClientText, Connected, Join, Publish, Terminate
from actors.runtime import GeventActor, describe_failure
from transport import protocol
from transport.config import App

TIMEOUT = 2.0
RECONNECT = 4200
INTERNAL_ERROR = 1011


class PlantedBug(RuntimeError):
    """The exception the tests raise on purpose."""


class FakeWriter:
    """What actors need of a SocketWriter: ``offer`` and ``close``, recorded."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.final: bytes | None = None
        self.on_sent = None
        self.on_overflow = None

    def offer(self, frame: bytes) -> bool:
        if self.final is not None:
            return False
        self.frames.append(frame)
        return True

    def close(self, final: bytes = b"", *, drop_queued: bool = False) -> None:
        if self.final is None:
            self.final = final

    def events(self) -> list[tuple[str | None, str | None]]:
        """(event, channel) of every frame offered (they are unmasked text frames)."""
        return [(m.get("event"), m.get("channel")) for _, m in map(_message, self.frames)]


def _server_frames(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if length == 126:
            length, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif length == 127:
            length, pos = struct.unpack_from("!Q", data, pos)[0], pos + 8
        out.append((opcode, data[pos : pos + length]))
        pos += length
    return out


def _message(frame: bytes) -> tuple[int, dict]:
    ((opcode, payload),) = _server_frames(frame)
    return opcode, json.loads(payload)


def _final_codes(final: bytes) -> tuple[int, int]:
    """(pusher:error code, close code) of a writer's final bytes."""
    (text_op, text), (close_op, close) = _server_frames(final)
    assert (text_op, close_op) == (0x1, 0x8)
    error = json.loads(text)
    assert error["event"] == "pusher:error"
    return error["data"]["code"], struct.unpack("!H", close[:2])[0]


class Inbox(GeventActor):
    """Stands in for a connection actor: records what it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list = []

    def on_receive(self, message):
        self.told.append(message)

    def received(self) -> list:
        return list(self.told)


class Sink(GeventActor):
    """Stands in for the metrics actor: takes anything."""

    def on_receive(self, message):
        return None


@pytest.fixture
def errors(caplog):
    """The ERROR records logged during the test (the traceback goes to DEBUG)."""
    caplog.set_level(logging.DEBUG)
    return lambda: [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def app():
    return App()


@pytest.fixture
def metrics():
    return Sink.start()


def connect(app_actor, socket_id: str) -> tuple:
    """A recorded stand-in connection, known to the app actor."""
    ref, writer = Inbox.start(), FakeWriter()
    app_actor.tell(Connected(socket_id, ref))
    return ref, writer


def join(app_actor, channel: str, socket_id: str, ref, writer) -> None:
    app_actor.tell(Join(channel, socket_id, writer, ref))


def publish(app_actor, channel: str, event: str, data: str = "{}") -> None:
    app_actor.tell(Publish((channel,), event, data, None, 0.0))


def terminations(ref) -> list[Terminate]:
    return [m for m in ref.proxy().received().get(timeout=TIMEOUT) if type(m) is Terminate]


@pytest.fixture
def fragile_channel(monkeypatch):
    """ChannelActor.broadcast raises for the event ``crash`` on any channel."""
    original = ChannelActor.broadcast

    def broadcast(self, message):
        if b'"event":"crash"' in message.frame:
            raise PlantedBug(f"planted in {self.name}")
        return original(self, message)

    monkeypatch.setattr(ChannelActor, "broadcast", broadcast)


# --- the runtime -----------------------------------------------------------------------


def _raise_here() -> None:
    raise PlantedBug("where am I")


def test_describe_failure_names_type_message_and_the_innermost_frame():
    try:
        _raise_here()
    except PlantedBug as exc:
        text = describe_failure(type(exc), exc, exc.__traceback__)
    line = _raise_here.__code__.co_firstlineno + 1
    assert text == f"PlantedBug: where am I at runtime/test_supervision.py:{line}"


def test_describe_failure_is_one_printable_line_whatever_the_message_holds():
    exc = RuntimeError("evt\ud800\r\nforged line " + "x" * 1000)
    text = describe_failure(RuntimeError, exc, None)
    assert "\n" not in text and "\r" not in text and len(text) < 400
    text.encode("utf-8")  # no lone surrogate left: a log file can take it
    assert text.startswith("RuntimeError: evt\\ud800\\r\\nforged line xxx") and text.endswith("...")


class Fragile(GeventActor):
    def __init__(self, fail_in: str = "", died: list | None = None) -> None:
        super().__init__()
        self.fail_in = fail_in
        self.died = died if died is not None else []

    def on_start(self) -> None:
        if self.fail_in == "start":
            raise PlantedBug("in on_start")

    def on_stop(self) -> None:
        if self.fail_in == "stop":
            raise PlantedBug("in on_stop")

    def on_receive(self, message):
        if message == "boom":
            raise PlantedBug("in on_receive")
        return message


def test_an_actor_without_supervisor_logs_its_death_on_one_error_line_and_the_traceback_at_debug(
    errors, caplog, wait_until
):
    ref = Fragile.start()
    ref.tell("boom")
    wait_until(lambda: not ref.is_alive())
    (line,) = errors()
    text = line.getMessage()
    assert "Fragile" in text and "PlantedBug: in on_receive at runtime/test_supervision.py:" in text
    assert line.exc_info is None  # one line, no traceback at ERROR
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)
    assert not [r for r in caplog.records if r.name == "pykka" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("fail_in", ["start", "stop"])
def test_a_failing_on_start_or_on_stop_also_reaches_on_died(fail_in, errors, wait_until):
    died: list = []

    class Reporting(Fragile):
        def on_died(self, reason: str) -> None:
            self.died.append(reason)

    ref = Reporting.start(fail_in, died)
    if fail_in == "stop":
        ref.stop(block=False)
    wait_until(lambda: died)
    assert not ref.is_alive()
    assert died == [died[0]] and f"PlantedBug: in on_{fail_in}" in died[0]
    assert errors() == []  # the supervisor (here: the test) is the one to log
    assert ref not in pykka.ActorRegistry.get_all()


def test_an_on_died_that_raises_is_still_one_error_line(errors, wait_until):
    class BadSupervision(Fragile):
        def on_died(self, reason: str) -> None:
            raise KeyError("supervisor")

    ref = BadSupervision.start()
    ref.tell("boom")
    wait_until(lambda: not ref.is_alive())
    (line,) = errors()
    assert "in on_receive" in line.getMessage() and "KeyError" in line.getMessage()


def test_ask_exceptions_return_to_the_caller_and_kill_nobody(errors):
    ref = Fragile.start()
    with pytest.raises(PlantedBug):
        ref.ask("boom", timeout=TIMEOUT)
    assert ref.ask("still here", timeout=TIMEOUT) == "still here"
    assert errors() == []


# --- a channel actor dies: its app actor restores service ---------------------------------


def test_a_dead_channel_is_logged_once_its_subscribers_get_4200_and_the_next_join_gets_a_fresh_actor(
    app, metrics, fragile_channel, errors, wait_until
):
    app_actor = AppActor.start(app, metrics)
    victim, victim_writer = connect(app_actor, "1.1")
    steady, steady_writer = connect(app_actor, "2.2")
    join(app_actor, "fragile", "1.1", victim, victim_writer)
    join(app_actor, "steady", "2.2", steady, steady_writer)
    dead = app_actor.proxy().channel_ref("fragile").get(timeout=TIMEOUT)

    publish(app_actor, "fragile", "crash")
    wait_until(lambda: terminations(victim))
    assert [t.code for t in terminations(victim)] == [RECONNECT]
    assert not dead.is_alive()
    (line,) = errors()
    text = line.getMessage()
    assert "channel actor fragile of app 1 died" in text
    assert "PlantedBug: planted in fragile at runtime/test_supervision.py:" in text
    assert app_actor.proxy().channel_ref("fragile").get(timeout=TIMEOUT) is None

    # The client reconnects and resubscribes: a fresh actor serves it.
    again, again_writer = connect(app_actor, "1.3")
    join(app_actor, "fragile", "1.3", again, again_writer)
    publish(app_actor, "fragile", "after")
    publish(app_actor, "steady", "still")
    wait_until(lambda: ("after", "fragile") in again_writer.events())
    wait_until(lambda: ("still", "steady") in steady_writer.events())
    fresh = app_actor.proxy().channel_ref("fragile").get(timeout=TIMEOUT)
    assert fresh is not dead and fresh.is_alive()
    assert terminations(steady) == []
    assert app_actor.is_alive() and len(errors()) == 1


def test_joins_queued_behind_the_crash_are_told_to_reconnect_too(app, metrics, fragile_channel, wait_until):
    app_actor = AppActor.start(app, metrics)
    first, first_writer = connect(app_actor, "1.1")
    late, late_writer = connect(app_actor, "1.2")
    join(app_actor, "fragile", "1.1", first, first_writer)
    channel = app_actor.proxy().channel_ref("fragile").get(timeout=TIMEOUT)
    # The crash and a join land in the channel's inbox together (told without a yield between).
    channel.tell(Broadcast(protocol.event_frame("fragile", "crash", "{}"), None, 1, 0.0))
    channel.tell(Join("fragile", "1.2", late_writer, late))
    wait_until(lambda: terminations(late))
    assert ("pusher_internal:subscription_succeeded", "fragile") not in late_writer.events()
    assert [t.code for t in terminations(first)] == [RECONNECT]


def test_a_join_sent_to_a_channel_already_dead_starts_a_fresh_actor(app, metrics, wait_until):
    app_actor = AppActor.start(app, metrics)
    ref, writer = connect(app_actor, "1.1")
    join(app_actor, "news", "1.1", ref, writer)
    dead = app_actor.proxy().channel_ref("news").get(timeout=TIMEOUT)
    dead.stop(timeout=TIMEOUT)  # as if it had just died, its report not yet handled
    other, other_writer = connect(app_actor, "1.2")
    join(app_actor, "news", "1.2", other, other_writer)
    wait_until(lambda: ("pusher_internal:subscription_succeeded", "news") in other_writer.events())
    assert app_actor.proxy().channel_ref("news").get(timeout=TIMEOUT) is not dead


# --- a connection actor dies: 1011 for its client, one line from the app actor -------------


@pytest.fixture
def connection(app, metrics):
    """``connection()``: a real ConnectionActor on a FakeWriter, its app actor and writer."""
    app_actor = AppActor.start(app, metrics)

    def make(socket_id: str = "7.7"):
        writer = FakeWriter()
        ref = ConnectionActor.start(app, writer, app_actor, metrics, socket_id)
        return ref, writer

    make.app_actor = app_actor
    return make


def _subscribe(ref, channel: str) -> None:
    ref.tell(ClientText(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}})))


def test_a_dead_connection_closes_with_1011_leaves_its_channels_and_is_logged_once_by_the_app_actor(
    connection, monkeypatch, errors, wait_until
):
    original = ConnectionActor.subscribe

    def subscribe(self, message):
        if message.channel == "crash-me":
            raise PlantedBug("planted in subscribe")
        return original(self, message)

    monkeypatch.setattr(ConnectionActor, "subscribe", subscribe)
    app_actor = connection.app_actor
    ref, writer = connection("7.7")
    _subscribe(ref, "news")
    wait_until(lambda: ("pusher_internal:subscription_succeeded", "news") in writer.events())
    _subscribe(ref, "crash-me")
    wait_until(lambda: not ref.is_alive())
    assert _final_codes(writer.final) == (INTERNAL_ERROR, INTERNAL_ERROR)
    wait_until(lambda: app_actor.proxy().connection_count().get(timeout=TIMEOUT) == 0)
    news = app_actor.proxy().channel_ref("news").get(timeout=TIMEOUT)
    assert news is None or news.proxy().subscription_count().get(timeout=TIMEOUT) == 0
    (line,) = errors()
    assert "connection actor 7.7 of app 1 died: PlantedBug: planted in subscribe" in line.getMessage()
    assert "test_supervision.py:" in line.getMessage()

    other, other_writer = connection("8.8")  # the next connection is served as usual
    _subscribe(other, "news")
    wait_until(lambda: ("pusher_internal:subscription_succeeded", "news") in other_writer.events())


def test_a_connection_that_dies_in_on_start_is_closed_with_1011_and_cleaned_up(
    connection, monkeypatch, errors, wait_until
):
    def established(socket_id, activity_timeout):
        raise PlantedBug("planted in on_start")

    monkeypatch.setattr(protocol, "connection_established_frame", established)
    ref, writer = connection("7.7")
    wait_until(lambda: writer.final is not None)
    assert not ref.is_alive()
    assert _final_codes(writer.final) == (INTERNAL_ERROR, INTERNAL_ERROR)
    wait_until(lambda: errors())
    assert connection.app_actor.proxy().connection_count().get(timeout=TIMEOUT) == 0
    (line,) = errors()
    assert "connection actor 7.7 of app 1 died: PlantedBug: planted in on_start" in line.getMessage()


def test_a_connection_whose_app_actor_is_dead_closes_with_4200_instead_of_dying(connection, errors, wait_until):
    ref, writer = connection("7.7")
    wait_until(lambda: writer.frames)  # established
    connection.app_actor.stop(timeout=TIMEOUT)
    _subscribe(ref, "news")
    wait_until(lambda: not ref.is_alive())
    assert _final_codes(writer.final) == (RECONNECT, RECONNECT)
    assert errors() == []


# --- an app actor dies: its connections get 4200, its supervisor restarts it ---------------


@pytest.fixture
def fragile_app(monkeypatch):
    """AppActor.publish raises for the event ``kill-app``."""
    original = AppActor.publish

    def publish_(self, message):
        if message.event == "kill-app":
            raise PlantedBug("planted in publish")
        return original(self, message)

    monkeypatch.setattr(AppActor, "publish", publish_)


def test_a_dead_app_actor_closes_its_connections_stops_its_channels_and_calls_its_supervisor(
    app, metrics, fragile_app, errors, wait_until
):
    calls: list = []
    app_actor = AppActor.start(app, metrics, supervisor=lambda app_id, reason: calls.append((app_id, reason)))
    a, a_writer = connect(app_actor, "1.1")
    b, b_writer = connect(app_actor, "1.2")
    join(app_actor, "news", "1.1", a, a_writer)
    channel = app_actor.proxy().channel_ref("news").get(timeout=TIMEOUT)
    publish(app_actor, "news", "kill-app")
    c, _ = connect(app_actor, "1.3")  # queued behind the crash: told too
    wait_until(lambda: calls)
    ((app_id, reason),) = calls
    assert app_id == "1" and reason.startswith("PlantedBug: planted in publish at runtime/test_supervision.py:")
    for ref in (a, b, c):
        wait_until(lambda ref=ref: terminations(ref))
        assert [t.code for t in terminations(ref)] == [RECONNECT]
    wait_until(lambda: not channel.is_alive())
    assert not app_actor.is_alive()
    assert errors() == []  # the supervisor logs the line


def test_a_dead_app_actor_without_supervisor_logs_one_line(app, metrics, fragile_app, errors, wait_until):
    app_actor = AppActor.start(app, metrics)
    publish(app_actor, "news", "kill-app")
    wait_until(lambda: not app_actor.is_alive())
    wait_until(lambda: errors())
    (line,) = errors()
    assert "app actor 1 died: PlantedBug: planted in publish" in line.getMessage()


# --- the metrics actor ---------------------------------------------------------------------


def test_a_dead_metrics_actor_is_replaced_at_the_same_ref_and_counting_goes_on(app, monkeypatch, errors, wait_until):
    from actors.metrics import MetricsActor
    from prometheus_client import CollectorRegistry

    original = MetricsActor._fanout_done
    planted = [True]

    def fanout_done(self, message):
        if planted:
            planted.clear()
            raise PlantedBug("planted in metrics")
        return original(self, message)

    monkeypatch.setattr(MetricsActor, "_fanout_done", fanout_done)
    registry = CollectorRegistry()
    metrics = MetricsActor.start(registry, flush_interval=0)
    first = metrics.actor_urn
    app_actor = AppActor.start(app, metrics)
    ref, writer = connect(app_actor, "1.1")
    join(app_actor, "news", "1.1", ref, writer)
    publish(app_actor, "news", "first")  # its FanoutDone kills the metrics actor
    wait_until(lambda: errors())
    publish(app_actor, "news", "after")
    wait_until(lambda: ("after", "news") in writer.events())
    assert metrics.actor_urn != first and metrics.is_alive()  # the same ref, a fresh actor
    wait_until(lambda: metrics.proxy().totals().get(timeout=TIMEOUT).get("1", {}).get("sent", 0) >= 1)
    assert registry.get_sample_value("actorcast_messages_sent_total", {"app_id": "1"}) >= 1  # the same instruments
    (line,) = errors()
    assert line.getMessage().startswith("metrics actor died: PlantedBug: planted in metrics at ")
    assert "restarted" in line.getMessage()
    metrics.stop()


# --- the webhook actor -----------------------------------------------------------------------


def test_a_dead_webhook_actor_is_replaced_at_the_same_ref_and_gets_what_was_queued_behind_the_crash(
    metrics, monkeypatch, errors, wait_until
):
    from actors.webhooks import Hook, WebhookActor
    from actors.refs import webhook_proxy

    def offer(self, event):
        raise PlantedBug("planted in offer")

    monkeypatch.setattr(WebhookActor, "offer", offer)
    app = App(webhooks=[{"url": "http://127.0.0.1:9/hook"}])
    ref = WebhookActor.start(app, metrics)
    first = ref.actor_urn
    ref.tell(Hook({"name": "channel_occupied", "channel": "news"}))  # kills it
    status = webhook_proxy(ref).status()  # queued behind the crash: answered by the fresh actor
    assert status.get(timeout=TIMEOUT)["queued"] == 0
    assert ref.actor_urn != first and ref.is_alive()
    ref.stop(timeout=TIMEOUT)  # reaches the fresh actor too: nothing is left running
    assert not [r for r in pykka.ActorRegistry.get_by_class(WebhookActor)]
    (line,) = errors()
    assert line.getMessage().startswith("webhook actor of app 1 died: PlantedBug: planted in offer at ")

"""GeventActor: Pykka's actor model on greenlets of the test thread's hub.

Every wait here is gevent-aware (``ask``/``get`` with a timeout, or
``wait_until``), so the actors' greenlets run while the test waits.
"""

from __future__ import annotations

import time

import gevent
import gevent.event
import pykka
import pytest

from actors.runtime import GeventActor, GeventFuture, call_later, sleep, spawn, tell_if_alive

TIMEOUT = 2.0


class Recorder(GeventActor):
    """Records what it receives; answers ``"get"`` with the record."""

    def __init__(self, events: list | None = None) -> None:
        super().__init__()
        self.events = events if events is not None else []
        self.received: list = []
        self.value = 0

    def on_start(self) -> None:
        self.events.append(("start", gevent.getcurrent()))

    def on_stop(self) -> None:
        self.events.append(("stop", None))

    def on_failure(self, exc_type, exc_value, tb) -> None:
        self.events.append(("failure", exc_value))

    def on_receive(self, message):
        if message == "get":
            return list(self.received)
        if message == "boom":
            raise ValueError("boom")
        if isinstance(message, tuple) and message[0] == "sleep":
            gevent.sleep(message[1])
            return "slept"
        self.received.append(message)
        return None

    def add(self, n: int) -> int:
        self.value += n
        return self.value

    def fail(self) -> None:
        raise KeyError("from a proxy call")


def test_start_runs_on_start_in_its_own_greenlet_before_any_message():
    events: list = []
    ref = Recorder.start(events)
    assert ref.ask("get", timeout=TIMEOUT) == []
    assert events[0][0] == "start"
    assert events[0][1] is not gevent.getcurrent()


def test_started_actor_is_registered_and_alive():
    ref = Recorder.start()
    assert ref.is_alive()
    assert ref in pykka.ActorRegistry.get_all()


def test_tell_delivers_messages_in_the_order_they_were_sent():
    ref = Recorder.start()
    for i in range(1000):
        ref.tell(i)
    assert ref.ask("get", timeout=TIMEOUT) == list(range(1000))


def test_messages_from_several_greenlets_keep_each_senders_order():
    ref = Recorder.start()

    def sender(name: str) -> None:
        for i in range(100):
            ref.tell((name, i))
            if i % 10 == 0:
                gevent.sleep(0)  # interleave the senders

    gevent.joinall([gevent.spawn(sender, name) for name in "abc"], timeout=TIMEOUT, raise_error=True)
    received = ref.ask("get", timeout=TIMEOUT)
    assert len(received) == 300
    for name in "abc":
        assert [i for n, i in received if n == name] == list(range(100))


def test_ask_returns_what_on_receive_returns():
    ref = Recorder.start()
    ref.tell("x")
    assert ref.ask("get", timeout=TIMEOUT) == ["x"]


def test_ask_without_block_returns_a_gevent_future():
    ref = Recorder.start()
    future = ref.ask("get", block=False)
    assert isinstance(future, GeventFuture)
    assert future.get(timeout=TIMEOUT) == []


def test_ask_raises_pykka_timeout_when_the_answer_is_late():
    ref = Recorder.start()
    started = time.monotonic()
    with pytest.raises(pykka.Timeout):
        ref.ask(("sleep", 0.3), timeout=0.05)
    assert time.monotonic() - started < 0.25
    # The actor finishes the slow message and keeps serving.
    assert ref.ask("get", timeout=TIMEOUT) == []


def test_exception_in_ask_propagates_to_the_caller_and_the_actor_survives():
    events: list = []
    ref = Recorder.start(events)
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", timeout=TIMEOUT)
    assert ref.is_alive()
    assert ref.ask("get", timeout=TIMEOUT) == []
    assert not [e for e in events if e[0] == "failure"]


def test_exception_in_told_message_calls_on_failure_and_stops_the_actor(wait_until):
    events: list = []
    ref = Recorder.start(events)
    ref.tell("boom")
    wait_until(lambda: not ref.is_alive())
    failures = [e for e in events if e[0] == "failure"]
    assert len(failures) == 1
    assert isinstance(failures[0][1], ValueError)
    assert ("stop", None) not in events  # on_failure instead of on_stop, as Pykka documents
    assert ref not in pykka.ActorRegistry.get_all()
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("x")


def test_failing_on_start_stops_the_actor_and_answers_pending_asks_with_actor_dead():
    class BadStart(GeventActor):
        def on_start(self) -> None:
            raise RuntimeError("cannot start")

        def on_receive(self, message):
            return "answered"

    ref = BadStart.start()
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("hello", timeout=TIMEOUT)
    assert not ref.is_alive()


def test_proxy_method_call_returns_a_future_of_the_result():
    proxy = Recorder.start().proxy()
    future = proxy.add(2)
    assert isinstance(future, GeventFuture)
    assert future.get(timeout=TIMEOUT) == 2
    assert proxy.add(3).get(timeout=TIMEOUT) == 5


def test_proxy_reads_and_writes_attributes():
    proxy = Recorder.start().proxy()
    assert proxy.value.get(timeout=TIMEOUT) == 0
    proxy.value = 41
    assert proxy.add(1).get(timeout=TIMEOUT) == 42
    assert proxy.value.get(timeout=TIMEOUT) == 42


def test_proxy_call_exception_is_raised_by_get():
    proxy = Recorder.start().proxy()
    with pytest.raises(KeyError, match="from a proxy call"):
        proxy.fail().get(timeout=TIMEOUT)


def test_blocking_stop_runs_on_stop_and_returns_true():
    events: list = []
    ref = Recorder.start(events)
    assert ref.stop(block=True, timeout=TIMEOUT) is True
    assert events[-1] == ("stop", None)
    assert not ref.is_alive()
    assert ref not in pykka.ActorRegistry.get_all()


def test_stopping_a_stopped_actor_returns_false():
    ref = Recorder.start()
    ref.stop(timeout=TIMEOUT)
    assert ref.stop(timeout=TIMEOUT) is False


def test_non_blocking_stop_returns_a_future_that_resolves_once_stopped(wait_until):
    events: list = []
    ref = Recorder.start(events)
    future = ref.stop(block=False)
    assert future.get(timeout=TIMEOUT) is True
    assert ("stop", None) in events
    wait_until(lambda: not ref.is_alive())


def test_messages_sent_before_stop_are_handled_first():
    ref = Recorder.start()
    ref.tell(1)
    ref.tell(2)
    future = ref.ask("get", block=False)
    ref.stop(timeout=TIMEOUT)
    assert future.get(timeout=TIMEOUT) == [1, 2]


def test_tell_ask_and_proxy_raise_actor_dead_error_after_stop():
    ref = Recorder.start()
    proxy = ref.proxy()
    ref.stop(timeout=TIMEOUT)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("x")
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("get", timeout=TIMEOUT)
    with pytest.raises(pykka.ActorDeadError):
        proxy.add(1).get(timeout=TIMEOUT)
    with pytest.raises(pykka.ActorDeadError):
        ref.proxy()


def test_ask_queued_behind_a_stop_gets_actor_dead_error():
    ref = Recorder.start()
    stopping = ref.stop(block=False)
    late = ref.ask("get", block=False)  # queued after the stop message
    assert stopping.get(timeout=TIMEOUT) is True
    with pytest.raises(pykka.ActorDeadError):
        late.get(timeout=TIMEOUT)


def test_a_busy_actor_does_not_block_another_actor():
    slow, fast = Recorder.start(), Recorder.start()
    pending = slow.ask(("sleep", 0.5), block=False)
    started = time.monotonic()
    assert fast.ask("get", timeout=TIMEOUT) == []
    assert time.monotonic() - started < 0.4
    assert pending.get(timeout=TIMEOUT) == "slept"


def test_an_actor_can_ask_another_actor_with_a_timeout():
    class Asker(GeventActor):
        def __init__(self, other) -> None:
            super().__init__()
            self.other = other

        def on_receive(self, message):
            return self.other.ask(message, timeout=TIMEOUT)

    target = Recorder.start()
    target.tell("hello")
    asker = Asker.start(target)
    assert asker.ask("get", timeout=TIMEOUT) == ["hello"]


def test_stop_all_stops_every_gevent_actor():
    refs = [Recorder.start() for _ in range(5)]
    pykka.ActorRegistry.stop_all(block=True, timeout=TIMEOUT)
    assert not any(ref.is_alive() for ref in refs)
    assert pykka.ActorRegistry.get_all() == []


def test_tell_if_alive_tells_a_live_actor_and_reports_a_dead_one():
    ref = Recorder.start()
    assert tell_if_alive(ref, "x") is True
    assert ref.ask("get", timeout=TIMEOUT) == ["x"]
    ref.stop(timeout=TIMEOUT)
    assert tell_if_alive(ref, "y") is False


def test_call_later_runs_after_the_delay_and_can_be_cancelled():
    fired, later = gevent.event.Event(), gevent.event.Event()
    cancelled: list = []
    call_later(0.05, fired.set)
    timer = call_later(0.05, cancelled.append, "ran")
    timer.kill()
    call_later(0.1, later.set)  # fires after the cancelled timer's deadline
    assert fired.wait(TIMEOUT)
    assert later.wait(TIMEOUT)
    assert cancelled == []


def test_spawn_runs_concurrently_and_sleep_yields():
    seen: list = []
    greenlet = spawn(seen.append, 1)
    assert seen == []  # not yet: spawn only schedules
    sleep(0)
    greenlet.join(TIMEOUT)
    assert seen == [1]

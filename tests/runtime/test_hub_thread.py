"""HubThread: a gevent hub in an OS thread of its own, entered from any thread."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import gevent
import pykka
import pytest

from actors.hub import HubThread
from actors.runtime import GeventActor

TIMEOUT = 2.0
REPO = Path(__file__).resolve().parents[2]


def keep_busy():
    """Setup for a hub that stays up: a timer, as a node's listening socket would be.

    A hub with no I/O or timer at all ends its thread (see
    test_an_idle_hub_thread_keeps_serving_calls).
    """
    return gevent.spawn(gevent.sleep, 60)


@pytest.fixture
def hub():
    hub = HubThread(name="test-hub")
    keepalive = hub.start(keep_busy)
    yield hub
    if hub._thread is not None and hub._thread.is_alive():
        hub.call(keepalive.kill, timeout=TIMEOUT)
    hub.stop(timeout=TIMEOUT)


def test_start_runs_setup_on_a_new_os_thread_and_returns_its_result():
    hub = HubThread(name="test-hub")
    try:
        name, ident = hub.start(lambda: (threading.current_thread().name, threading.get_ident()))
    finally:
        hub.stop(timeout=TIMEOUT)
    assert name == "test-hub"
    assert ident != threading.get_ident()


def test_an_exception_in_setup_is_raised_by_start_and_the_thread_ends():
    hub = HubThread(name="test-hub")

    def setup() -> None:
        raise ValueError("bad setup")

    with pytest.raises(ValueError, match="bad setup"):
        hub.start(setup)
    assert hub._thread is not None
    hub._thread.join(TIMEOUT)
    assert not hub._thread.is_alive()


def test_stop_ends_the_hub_thread():
    hub = HubThread(name="test-hub")
    hub.start(keep_busy)
    thread = hub._thread
    assert thread.is_alive()
    hub.stop(timeout=TIMEOUT)
    assert not thread.is_alive()
    hub.stop(timeout=TIMEOUT)  # a second stop is harmless


def test_an_idle_hub_thread_keeps_serving_calls():
    hub = HubThread(name="test-hub")
    hub.start(lambda: None)  # nothing on the hub yet, e.g. actors that only wait for messages
    try:
        hub._thread.join(0.5)  # bounded: with the bug the thread ends at once
        assert hub._thread.is_alive(), "the hub thread ended while idle"
        assert hub.call(lambda: "served", timeout=0.5) == "served"
    finally:
        hub.stop(timeout=TIMEOUT)


def test_stop_before_start_is_harmless():
    HubThread().stop(timeout=TIMEOUT)


def test_in_hub_is_false_outside_and_true_inside(hub):
    assert not hub.in_hub()
    assert hub.call(hub.in_hub, timeout=TIMEOUT) is True


def test_call_from_another_thread_runs_in_a_greenlet_on_the_hub(hub):
    def where():
        return threading.get_ident(), gevent.getcurrent() is gevent.get_hub(), gevent.get_hub()

    ident, on_hub_greenlet, that_hub = hub.call(where, timeout=TIMEOUT)
    assert ident == hub.ident != threading.get_ident()
    assert not on_hub_greenlet  # a greenlet of its own, so it may block (ask, sleep)
    assert that_hub is hub.hub


def test_call_passes_arguments_and_returns_the_result(hub):
    assert hub.call(lambda a, b: a + b, 2, 3, timeout=TIMEOUT) == 5


def test_call_can_block_in_gevent_on_the_hub(hub):
    def slow():
        gevent.sleep(0.02)
        return "done"

    assert hub.call(slow, timeout=TIMEOUT) == "done"


def test_call_reraises_the_exception_in_the_calling_thread(hub):
    def boom():
        raise KeyError("in the hub")

    with pytest.raises(KeyError, match="in the hub"):
        hub.call(boom, timeout=TIMEOUT)
    assert hub.call(lambda: "still serving", timeout=TIMEOUT) == "still serving"


def test_call_raises_pykka_timeout_when_the_function_is_too_slow(hub):
    started = time.monotonic()
    with pytest.raises(pykka.Timeout):
        hub.call(gevent.sleep, 0.5, timeout=0.05)
    assert time.monotonic() - started < 0.4


def test_call_inside_the_hub_runs_directly_without_deadlock(hub):
    def outer():
        return hub.call(lambda: threading.get_ident(), timeout=TIMEOUT)

    assert hub.call(outer, timeout=TIMEOUT) == hub.ident


def test_calls_from_many_threads_all_run_on_the_hub(hub):
    counter = {"n": 0, "threads": set()}

    def bump():
        counter["n"] += 1
        counter["threads"].add(threading.get_ident())

    def worker():
        for _ in range(50):
            hub.call(bump, timeout=TIMEOUT)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert counter == {"n": 400, "threads": {hub.ident}}


def test_post_from_another_thread_runs_on_the_hub_without_waiting(hub):
    done = HubThread.os_event()
    seen: list[int] = []

    def record():
        seen.append(threading.get_ident())
        done.set()

    assert hub.post(record) is None
    assert done.wait(TIMEOUT)
    assert seen == [hub.ident]


def test_post_inside_the_hub_runs_immediately(hub):
    def inside():
        seen: list[int] = []
        hub.post(seen.append, 1)
        return seen

    assert hub.call(inside, timeout=TIMEOUT) == [1]


def test_os_event_is_a_real_threading_event():
    event = HubThread.os_event()
    assert isinstance(event, threading.Event)
    assert event.wait(0.01) is False


def test_actors_on_a_hub_thread_are_reached_through_call(hub):
    class Counter(GeventActor):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def on_receive(self, message):
            self.n += message
            return self.n

    ref = hub.call(Counter.start, timeout=TIMEOUT)
    try:
        hub.post(ref.tell, 5)
        assert hub.call(lambda: ref.ask(2, timeout=TIMEOUT), timeout=TIMEOUT) == 7
    finally:
        assert hub.call(lambda: ref.stop(timeout=TIMEOUT), timeout=TIMEOUT) is True
    assert not ref.is_alive()


def test_in_a_monkey_patched_process_the_hub_thread_shares_the_callers_hub():
    script = textwrap.dedent(
        """
        from gevent import monkey
        monkey.patch_all()
        import gevent, threading
        from actors.hub import HubThread

        hub = HubThread()
        assert hub.start(gevent.get_hub) is gevent.get_hub()
        assert hub.in_hub()
        assert hub.call(lambda: 5, timeout=1) == 5
        seen = []
        hub.post(seen.append, 1)
        assert seen == [1]
        event = HubThread.os_event()
        assert not event.wait(0.01)
        hub.stop()
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_stopped_hub_thread_gives_its_loops_descriptors_back():
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    first = HubThread()
    first.start(lambda: None)  # whatever a first hub allocates once per process
    first.stop()
    before = open_fds()
    for _ in range(5):
        thread = HubThread()
        thread.start(lambda: None)
        thread.stop()
    assert open_fds() == before  # each loop's epoll and eventfd are closed with its thread

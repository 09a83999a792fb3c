"""The bus contract (actors/bus.py), run against every bus implementation.

Each case builds ``k`` buses of one kind, each started on a hub thread of its
own (as each node has), and checks what every node relies on: everything
published reaches every member (the publisher too), in publication order per
publisher; ``publish`` results are set on the publisher's hub; ``connected``
turns True once started; ``stop`` is prompt and a stopped bus refuses with
BusDown (and is no longer ``connected``).

The kinds are ``tests.cluster.buses.BUS_FACTORIES`` (name -> factory(k)
returning k unstarted buses, and a cleanup); ``pytest_generate_tests`` runs
every case once per kind, here and nowhere else. A kind whose server cannot
run here is skipped with the reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import gevent.event
import pytest

from actors.bus import BusDown, NoBus
from actors.hub import HubThread
from tests.cluster.buses import BUS_FACTORIES, TIMEOUT


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # At collection, not import: every kind in the table, each exactly once.
    if "bus_kind" in metafunc.fixturenames:
        metafunc.parametrize("bus_kind", sorted(BUS_FACTORIES))


class Member:
    """One started bus on its own hub thread, recording what it is delivered."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.hub = HubThread(name="bus-contract")
        self.received: list[bytes] = []
        self.arrived = threading.Condition()
        self.stopped = False
        self.hub.start(lambda: None)
        self.hub.call(lambda: bus.start(self._deliver, lambda f, *a: self.hub.hub.loop.run_callback_threadsafe(f, *a)))

    def _deliver(self, data: bytes) -> None:
        assert self.hub.in_hub(), "deliver must run on the node's hub"
        with self.arrived:
            self.received.append(data)
            self.arrived.notify_all()

    def publish(self, data: bytes, timeout: float = TIMEOUT) -> Any:
        def send() -> Any:
            result = self.bus.publish(data)
            assert isinstance(result, gevent.event.AsyncResult)
            return result.get(timeout=timeout)
        return self.hub.call(send, timeout=timeout + 1)

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"got {len(self.received)} of {count} messages within {timeout} s")
                self.arrived.wait(left)
            return list(self.received)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.hub.call(self.bus.stop, timeout=TIMEOUT)
        self.hub.stop()


@pytest.fixture
def members(bus_kind):
    """``members(k)``: k started buses of ``bus_kind``, each a :class:`Member`; stopped after the test."""
    made: list[Member] = []
    cleanups: list[Callable[[], None]] = []

    def make(k: int) -> list[Member]:
        buses, cleanup = BUS_FACTORIES[bus_kind](k)
        cleanups.append(cleanup)
        made.extend(Member(bus) for bus in buses)
        return made[-k:]

    yield make
    for member in made:
        member.stop()  # a no-op for one the test stopped already
    for cleanup in cleanups:
        cleanup()


def _wait_connected(members: list[Member]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not all(m.bus.connected for m in members):
        assert time.monotonic() < deadline, "buses did not connect"
        time.sleep(0.01)


def test_the_contract_covers_every_bus_a_node_can_have():
    assert sorted(BUS_FACTORIES) == ["memory", "redis", "workers"]  # NoBus has nobody to reach (tested apart)


def test_every_member_gets_every_message_the_publisher_included(members):
    group = members(3)
    _wait_connected(group)
    assert group[0].publish(b"hello") is True
    for member in group:
        assert member.wait_for(1) == [b"hello"]


def test_one_publishers_messages_arrive_in_order_everywhere(members):
    group = members(2)
    _wait_connected(group)
    sent = [f"m{i}".encode() for i in range(200)]
    for data in sent:
        group[0].publish(data)
    for member in group:
        assert member.wait_for(200) == sent


def test_binary_and_large_messages_arrive_unchanged(members):
    group = members(2)
    _wait_connected(group)
    blob = bytes(range(256)) * 400  # 100 KiB, every byte value
    group[1].publish(blob)
    assert group[0].wait_for(1) == [blob]


def test_a_stopped_bus_refuses_with_bus_down_and_the_others_go_on(members):
    group = members(2)
    _wait_connected(group)
    group[0].stop()
    with pytest.raises(BusDown):
        group[0].bus.publish(b"late").get(timeout=TIMEOUT)
    group[1].publish(b"still")
    assert group[1].wait_for(1) == [b"still"]


def test_connected_turns_true_once_started_and_false_once_stopped(members):
    (member,) = members(1)
    _wait_connected([member])  # within the bound: a node's /ready waits for it
    member.stop()
    assert member.bus.connected is False


def test_a_node_alone_is_always_connected():
    bus = NoBus()
    assert bus.connected is True
    bus.stop()
    assert bus.connected is True

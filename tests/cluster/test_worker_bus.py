"""The workers' bus (actors/worker_bus.py): the bus contract, and what the parent can do to it.

The contract suite of ``test_bus_contract`` runs here against ``WorkerBus``
buses joined by an in-process :class:`Relay` on a temporary Unix socket (the
"workers" entry of ``BUS_FACTORIES``). Its cases are collected in this module
too, with a ``members`` fixture of this module's own: the contract module
fixes its parameters when it is imported, before this module can register.
"""

from __future__ import annotations

import logging
import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from actors.bus import BusDown
from actors.hub import HubThread
from actors.worker_bus import GREETING, MAX_FRAME, Relay, WorkerBus
from tests.cluster import test_bus_contract as contract
from tests.cluster.test_bus_contract import (  # noqa: F401 - collected here against the workers' bus
    test_a_stopped_bus_refuses_with_bus_down_and_the_others_go_on,
    test_binary_and_large_messages_arrive_unchanged,
    test_connected_turns_true_once_started_and_false_once_stopped,
    test_every_member_gets_every_message_the_publisher_included,
    test_one_publishers_messages_arrive_in_order_everywhere,
)

TIMEOUT = contract.TIMEOUT


class RelayThread:
    """A Relay on a hub thread of its own, on a socket in a fresh temp dir."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="actorcast-bus-")
        self.path = str(Path(self.dir) / "bus.sock")
        self.hub = HubThread(name="relay")
        self.relay: Relay | None = None
        self.hub.start(lambda: None)
        self.start()

    def start(self, **kwargs: Any) -> None:
        self.relay = Relay(self.path, **kwargs)
        self.hub.call(self.relay.start, timeout=TIMEOUT)

    def stop_relay(self) -> None:
        self.hub.call(self.relay.stop, timeout=TIMEOUT)

    def peers(self) -> int:
        return self.hub.call(lambda: len(self.relay.peers), timeout=TIMEOUT)

    def close(self) -> None:
        self.stop_relay()
        self.hub.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _workers(k: int) -> tuple[list[Any], Callable[[], None]]:
    relay = RelayThread()
    return [WorkerBus(relay.path) for _ in range(k)], relay.close


contract.BUS_FACTORIES["workers"] = _workers


@pytest.fixture(params=["workers"])
def members(request):
    """The contract's ``members`` fixture, for the workers' bus."""
    made: list[contract.Member] = []
    cleanups: list[Callable[[], None]] = []

    def make(k: int) -> list[contract.Member]:
        buses, cleanup = contract.BUS_FACTORIES[request.param](k)
        cleanups.append(cleanup)
        made.extend(contract.Member(bus) for bus in buses)
        return made[-k:]

    yield make
    for member in made:
        if member.hub._thread is not None:  # noqa: SLF001 - a test may have stopped it already
            member.stop()
    for cleanup in cleanups:
        cleanup()


@pytest.fixture
def relay():
    started = RelayThread()
    yield started
    started.close()


@pytest.fixture
def member_on(relay):
    made: list[contract.Member] = []

    def make(**kwargs: Any) -> contract.Member:
        member = contract.Member(WorkerBus(relay.path, **kwargs))
        made.append(member)
        return member

    yield make
    for member in made:
        member.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = TIMEOUT, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, message or f"{predicate!r} not true within {timeout} s"
        time.sleep(0.01)
    return value


def test_a_restarted_parent_is_reconnected_to_and_the_loss_is_logged_once(relay, member_on, caplog):
    a, b = member_on(retry_max=0.1), member_on(retry_max=0.1)
    wait_for(lambda: a.bus.connected and b.bus.connected and relay.peers() == 2)
    assert a.publish(b"before") is True
    b.wait_for(1)
    with caplog.at_level(logging.DEBUG, logger="actors.worker_bus"):
        relay.stop_relay()
        wait_for(lambda: not a.bus.connected and not b.bus.connected)
        with pytest.raises(BusDown):
            a.publish(b"during")  # refused, not raised into the hub, while the parent is away
        # Several reconnect attempts fail meanwhile; each is logged at DEBUG only.
        wait_for(lambda: sum("connecting failed" in r.getMessage() for r in caplog.records) >= 6)
        relay.start()
        wait_for(lambda: a.bus.connected and b.bus.connected and relay.peers() == 2)
    assert a.publish(b"after") is True
    assert b.wait_for(2) == [b"before", b"after"]
    lost = [r for r in caplog.records if r.levelno == logging.WARNING]
    back = [r for r in caplog.records if "connected to the parent again" in r.getMessage()]
    assert len(lost) == 2 and len(back) == 2, [r.getMessage() for r in caplog.records]  # once per worker


def test_a_worker_that_sends_a_broken_frame_is_dropped_and_the_others_go_on(relay, member_on):
    a, b = member_on(), member_on()
    wait_for(lambda: a.bus.connected and b.bus.connected and relay.peers() == 2)
    with socket.socket(socket.AF_UNIX) as rogue:
        rogue.settimeout(TIMEOUT)
        rogue.connect(relay.path)
        wait_for(lambda: relay.peers() == 3)
        rogue.sendall(struct.pack(">I", MAX_FRAME + 1))
        heard = b""
        while chunk := rogue.recv(4096):  # bounded by the socket timeout
            heard += chunk
        assert heard == GREETING  # and then the relay hung up on it
    wait_for(lambda: relay.peers() == 2)
    a.publish(b"fine")
    assert b.wait_for(1) == [b"fine"]


def test_a_worker_that_stops_reading_is_dropped_past_its_backlog(relay, member_on):
    relay.stop_relay()
    relay.start(backlog_bytes=1 << 20)
    a = member_on()
    with socket.socket(socket.AF_UNIX) as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(relay.path)
        wait_for(lambda: a.bus.connected and relay.peers() == 2)
        blob = b"x" * (256 << 10)
        for i in range(40):  # 10 MiB: more than the socket buffers plus the 1 MiB backlog
            a.publish(blob)
            a.wait_for(i + 1)  # the reading worker keeps up: it is never more than one message behind
        wait_for(lambda: relay.peers() == 1, message="the stalled reader was not dropped")
    assert a.bus.connected


def test_frames_split_anywhere_are_reassembled(relay, member_on):
    a = member_on()
    wait_for(lambda: a.bus.connected and relay.peers() == 1)
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(relay.path)
        wait_for(lambda: relay.peers() == 2)
        frames = b"".join(struct.pack(">I", len(m)) + m for m in (b"one", b"", b"three"))
        for i in range(len(frames)):  # one byte at a time
            raw.sendall(frames[i : i + 1])
        assert a.wait_for(3) == [b"one", b"", b"three"]


def test_a_bus_is_connected_only_once_the_relay_counts_it_in(relay, member_on):
    # A Unix connect succeeds before the relay accepts: were that "connected",
    # a message published right then would miss the newcomer.
    for round_ in range(5):
        group = [member_on() for _ in range(3)]
        wait_for(lambda: all(m.bus.connected for m in group))
        group[0].publish(f"round {round_}".encode())
        for member in group:
            assert member.wait_for(1) == [f"round {round_}".encode()]

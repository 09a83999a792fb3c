"""The workers' bus (actors/worker_bus.py): the bus contract, and what the parent can do to it.

The bus contract runs against ``WorkerBus`` buses joined by an in-process
:class:`Relay` on a temporary Unix socket in test_bus_contract.py (its
"workers" kind); here: what the parent can do to them.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from actors.bus import BusDown
from actors.worker_bus import GREETING, MAX_FRAME, WorkerBus
from tests.cluster import test_bus_contract as contract
from tests.cluster.buses import RelayThread

TIMEOUT = contract.TIMEOUT


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

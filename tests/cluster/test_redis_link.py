"""The Redis bus's write side (actors/redis_link.py): the hub writes PUBLISHes, the I/O thread reads answers.

Against a real redis-server: what the kernel does not take at once still goes
out in order, and the socket-pair path (TLS) carries the same traffic.
"""

from __future__ import annotations

import socket
import uuid

import pytest

from actors import redis_link
from actors.redis_bus import RedisBus
from tests.cluster import test_bus_contract as contract
from tests.conftest import wait_until

TIMEOUT = contract.TIMEOUT


@pytest.fixture
def started():
    """``started(bus)``: the bus started on a hub thread of its own (a Member), stopped after the test."""
    made: list[contract.Member] = []

    def start(bus: RedisBus) -> contract.Member:
        member = contract.Member(bus)
        made.append(member)
        return member

    yield start
    for member in made:
        if member.hub._thread is not None:  # noqa: SLF001 - not stopped by the test already
            member.stop()


def _burst(member: contract.Member, messages: list[bytes]) -> list[bool]:
    """Publish every message in one go on the hub (one loop turn); wait for every result."""
    def on_hub() -> list:
        return [member.bus.publish(data) for data in messages]

    results = member.hub.call(on_hub, timeout=TIMEOUT)
    return [result.get(timeout=TIMEOUT) for result in results]


def test_a_burst_bigger_than_the_socket_buffer_goes_out_in_order_and_every_publish_is_answered(redis_server, started):
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    a, b = started(RedisBus(redis_server.url(), prefix)), started(RedisBus(redis_server.url(), prefix))
    wait_until(lambda: a.bus.connected and b.bus.connected)
    # 16 MiB in one loop turn: the kernel takes part of it, the io watcher sends the rest.
    messages = [b"%06d" % number + bytes([number % 251]) * (64 * 1024) for number in range(256)]
    assert _burst(a, messages) == [True] * len(messages)
    assert b.wait_for(len(messages), timeout=30) == messages
    assert a.wait_for(len(messages), timeout=30) == messages


def test_over_a_socket_pair_as_for_tls_the_same_traffic_arrives_in_order(redis_server, started, monkeypatch):
    # Every socket counts as TLS here: the hub writes to a socket pair, the I/O thread sends on.
    monkeypatch.setattr(redis_link.ssl, "SSLSocket", socket.socket)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    a, b = started(RedisBus(redis_server.url(), prefix)), started(RedisBus(redis_server.url(), prefix))
    wait_until(lambda: a.bus.connected and b.bus.connected)
    small = [b"one", b"two", b"three"]
    assert _burst(a, small) == [True] * 3
    big = [bytes([number]) * (256 * 1024) for number in range(32)]  # 8 MiB: more than the pair buffers
    assert _burst(a, big) == [True] * len(big)
    assert b.wait_for(3 + len(big), timeout=30) == small + big
    assert a.publish(b"after") is True
    assert b.wait_for(4 + len(big))[-1] == b"after"

"""The Redis bus's hub end (actors/redis_link.py): the hub writes the PUBLISHes and reads everything back.

Against a real redis-server: what the kernel does not take at once still goes
out in order, the socket-pair path (TLS) carries the same traffic, what Redis
refuses (an ACL) fails alone, and a node's failing deliver costs only itself.
"""

from __future__ import annotations

import logging
import socket
import uuid

import pytest

from actors import redis_link
from actors.bus import BusDown
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


def _user_url(redis_server, name: str, password: str) -> str:
    return f"redis://{name}:{password}@127.0.0.1:{redis_server.port}/0"


def test_a_publish_redis_refuses_fails_alone_and_the_link_stays(redis_server, started):
    import redis

    prefix = f"test-{uuid.uuid4().hex[:12]}"
    name = f"nopub-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_server.url(), socket_timeout=TIMEOUT)
    admin.execute_command("ACL", "SETUSER", name, "on", ">pw-nopub", "~*", "&*", "+@all", "-publish")
    try:
        listener = started(RedisBus(_user_url(redis_server, name, "pw-nopub"), prefix))
        talker = started(RedisBus(redis_server.url(), prefix))
        wait_until(lambda: listener.bus.connected and talker.bus.connected)
        with pytest.raises(BusDown, match="NOPERM"):
            listener.publish(b"refused")
        assert listener.bus.connected, "a refused PUBLISH does not end the link"
        assert talker.publish(b"allowed") is True
        assert listener.wait_for(1) == [b"allowed"]
    finally:
        admin.execute_command("ACL", "DELUSER", name)
        admin.close()


def test_a_refused_subscribe_is_logged_once_and_never_connects(redis_server, started, caplog, capfd):
    import redis

    caplog.set_level(logging.DEBUG, logger="actors.redis_bus")
    name = f"nosub-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_server.url(), socket_timeout=TIMEOUT)
    admin.execute_command("ACL", "SETUSER", name, "on", ">pw-nosub", "~*", "&*", "+@all", "-subscribe")
    try:
        member = started(RedisBus(_user_url(redis_server, name, "pw-nosub"), f"test-{uuid.uuid4().hex[:12]}"))
        wait_until(lambda: [r for r in caplog.records if r.levelno == logging.WARNING],
                   message="the refusal is reported")
        [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "NOPERM" in warning.getMessage() and "cannot connect" in warning.getMessage()
        assert not member.bus.connected
        with pytest.raises(BusDown):
            member.publish(b"early")
    finally:
        admin.execute_command("ACL", "DELUSER", name)
        admin.close()
    assert "Traceback" not in capfd.readouterr().err


def test_a_deliver_that_raises_costs_only_its_message(redis_server, started, caplog, monkeypatch):
    take = contract.Member._deliver  # noqa: SLF001 - every member's deliver, made to fail on one message

    def deliver(member: contract.Member, data: bytes) -> None:
        if data == b"poison":
            raise ValueError("a bug in the node")
        take(member, data)

    monkeypatch.setattr(contract.Member, "_deliver", deliver)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    a, b = started(RedisBus(redis_server.url(), prefix)), started(RedisBus(redis_server.url(), prefix))
    wait_until(lambda: a.bus.connected and b.bus.connected)
    assert _burst(a, [b"one", b"poison", b"two"]) == [True] * 3
    assert b.wait_for(2) == [b"one", b"two"]
    assert a.wait_for(2) == [b"one", b"two"]
    assert b.bus.connected and a.bus.connected
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, "one line per bus"
    assert all("deliver raised" in r.getMessage() and "ValueError" in r.getMessage() for r in errors)
    assert all(r.exc_info is None for r in errors), "one line, no traceback"


def _paired_link() -> tuple[redis_link.Link, socket.socket, socket.socket, list[bytes], list[str]]:
    """A started Link on socket pairs that stand in for Redis's two connections: the link, Redis's
    ends of the publisher and subscription connections, what it delivered, and why it ended."""
    import gevent

    pub_hub, pub_redis = socket.socketpair()
    sub_hub, sub_redis = socket.socketpair()
    for end in (pub_hub, sub_hub):
        end.setblocking(False)
    link = redis_link.Link(1, pub_hub, sub_hub, redis_link.publish_head(b"bus"), "test", 1.0, 2.0)
    got: list[bytes] = []
    ended: list[str] = []
    link.start(gevent.get_hub().loop, got.append, lambda _link: None, lambda lk: ended.append(lk.reason))
    return link, pub_redis, sub_redis, got, ended


def test_when_the_publisher_connection_ends_first_the_subscription_is_still_read_to_its_end():
    # Redis stopping closes both connections; the hub may see the publisher's end first. What
    # Redis had already sent on the subscription (a message whose PUBLISH it acknowledged) is
    # delivered before the link closes.
    link, pub_redis, sub_redis, got, ended = _paired_link()
    sub_redis.sendall(b"*3\r\n$7\r\nmessage\r\n$3\r\nbus\r\n$3\r\none\r\n*3\r\n$7\r\nmessage\r\n$3\r\nbus\r\n$3\r\ntwo\r\n")
    sub_redis.close()
    pub_redis.close()
    link._read_pub()  # noqa: SLF001 - the publisher's end, handled before the subscription's bytes
    assert got == [b"one", b"two"]
    assert ended == ["ConnectionError: Redis closed the connection"]
    assert link.broken


def test_bytes_that_are_not_resp_end_the_link_with_a_reason_not_a_traceback():
    link, _pub_redis, sub_redis, got, _ended = _paired_link()
    sub_redis.sendall(b"*3\r\n$7\r\nmessage\r\n$3\r\nbus\r\n$3\r\none\r\n?not resp\r\n")
    link._read_sub()  # noqa: SLF001 - what the read watcher calls
    assert got == [b"one"]
    assert link.broken and link.reason.startswith("unreadable answer on the subscription")

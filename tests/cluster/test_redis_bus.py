"""The Redis bus (actors/redis_bus.py) against a real redis-server: the contract, faults, isolation, the hop.

The bus contract runs against RedisBus in test_bus_contract.py (its "redis" kind).
Fault tests run their own Redis (``make_redis_server``) so that stopping,
restarting or pausing it (SIGSTOP: open connections that answer nothing)
never disturbs another test.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest

from actors.bus import BusDown
from actors.redis_bus import RedisBus
from tests.cluster import test_bus_contract as contract
from tests.conftest import wait_until
from transport.errors import ConfigError

TIMEOUT = contract.TIMEOUT
LOGGER = "actors.redis_bus"


def _stop_all(made: list[contract.Member]) -> None:
    for member in made:
        if member.hub._thread is not None:  # noqa: SLF001 - not stopped by the test already
            member.stop()


class TimedMember(contract.Member):
    """A member that also notes when each message arrived (perf_counter, on its hub)."""

    def __init__(self, bus: Any) -> None:
        self.arrivals: list[float] = []
        super().__init__(bus)

    def _deliver(self, data: bytes) -> None:
        self.arrivals.append(time.perf_counter())
        super()._deliver(data)


@pytest.fixture
def started():
    """``started(bus)``: the bus started on a hub thread of its own (a Member), stopped after the test."""
    made: list[contract.Member] = []

    def start(bus: RedisBus) -> TimedMember:
        member = TimedMember(bus)
        made.append(member)
        return member

    yield start
    _stop_all(made)


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _records(caplog: Any, since: int = 0, level: int | None = None) -> list[logging.LogRecord]:
    return [r for r in caplog.records[since:] if r.name == LOGGER and (level is None or r.levelno == level)]


def _assert_no_traceback(caplog: Any, capfd: Any) -> None:
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    assert "Traceback" not in capfd.readouterr().err


def _publish_now(member: contract.Member, data: bytes) -> Any:
    """``bus.publish`` on the member's hub; the AsyncResult as it is on return."""
    return member.hub.call(lambda: member.bus.publish(data), timeout=TIMEOUT)


# --- the URL ------------------------------------------------------------------------------------


def test_the_description_and_channel_name_the_server_db_and_prefix_never_the_password():
    bus = RedisBus("redis://user:hunter2@10.1.2.3:6390/4", prefix="chat")
    assert bus.description == "redis://10.1.2.3:6390/4"
    assert bus.channel == b"chat:4:bus"  # pub/sub ignores db numbers: the db is in the name
    assert "hunter2" not in repr(bus)
    assert RedisBus("redis://127.0.0.1:6379/0").channel == b"actorcast:bus"
    assert RedisBus("unix:///run/redis.sock?db=2").description == "unix:///run/redis.sock?db=2"
    with pytest.raises(ConfigError, match="redis://"):
        RedisBus("http://127.0.0.1:6379")
    with pytest.raises(ConfigError, match="bogus"):
        RedisBus("redis://:hunter2@127.0.0.1:6379/0?bogus=1")


# --- faults -------------------------------------------------------------------------------------


def test_a_redis_restart_mid_traffic_loses_only_the_gap_and_is_logged_once(make_redis_server, started, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = make_redis_server()
    prefix = _prefix()
    a, b = started(RedisBus(server.url(), prefix)), started(RedisBus(server.url(), prefix))
    wait_until(lambda: a.bus.connected and b.bus.connected)
    acked: list[bytes] = []
    refused: list[bytes] = []
    done = threading.Event()

    def traffic() -> None:
        deadline = time.monotonic() + 30
        number = 0
        while not done.is_set() and time.monotonic() < deadline:
            data = b"m%05d" % number
            number += 1
            try:
                a.publish(data)
                acked.append(data)
            except BusDown:
                refused.append(data)
            time.sleep(0.002)  # pacing the traffic (~400/s), not synchronisation

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        wait_until(lambda: len(acked) >= 50)
        mark = len(caplog.records)
        server.stop()
        wait_until(lambda: not a.bus.connected and not b.bus.connected)
        wait_until(lambda: refused, message="publishes while Redis is down are refused")
        server.start()  # the same port
        wait_until(lambda: a.bus.connected and b.bus.connected, timeout=10)
        resumed = len(acked)
        wait_until(lambda: len(acked) >= resumed + 50)
    finally:
        done.set()
        sender.join(TIMEOUT)
    for member in (a, b):
        # Every acknowledged message arrives, before and after the restart
        # (and maybe some refused while in flight: at most once, not exactly).
        wait_until(lambda: set(acked) <= set(member.received), message="every acknowledged message arrived")
        got = list(member.received)
        assert set(got) <= set(acked) | set(refused)
        assert got == sorted(got), "in publication order"
    by_thread: dict[int, list[int]] = defaultdict(list)
    for record in _records(caplog, mark):
        if record.levelno >= logging.INFO:
            by_thread[record.thread].append(record.levelno)
    assert sorted(by_thread.values()) == [[logging.WARNING, logging.INFO]] * 2, "one WARNING, one INFO per bus"
    assert "reconnected" in _records(caplog, mark, logging.INFO)[0].getMessage()
    _assert_no_traceback(caplog, capfd)


def test_a_bus_started_while_redis_is_down_connects_once_redis_is_up(make_redis_server, started, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = make_redis_server(start=False)
    a = started(RedisBus(server.url(), _prefix()))
    wait_until(lambda: _records(caplog, level=logging.WARNING))
    assert not a.bus.connected
    with pytest.raises(BusDown):
        a.publish(b"early")
    server.start()
    wait_until(lambda: a.bus.connected, timeout=10)
    assert a.publish(b"late") is True
    assert a.wait_for(1) == [b"late"]
    [warning] = _records(caplog, level=logging.WARNING)
    assert "cannot connect" in warning.getMessage()
    assert "connected" in _records(caplog, level=logging.INFO)[-1].getMessage()
    _assert_no_traceback(caplog, capfd)


def test_a_publish_while_redis_is_down_is_refused_at_once(make_redis_server, started):
    server = make_redis_server()
    a = started(RedisBus(server.url(), _prefix()))
    wait_until(lambda: a.bus.connected)
    server.stop()
    wait_until(lambda: not a.bus.connected)
    result = _publish_now(a, b"lost")
    assert result.ready(), "refused before publish() returned"
    with pytest.raises(BusDown):
        result.get(timeout=0)


def test_a_redis_that_answers_nothing_is_noticed_and_left_then_rejoined(make_redis_server, started, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = make_redis_server()
    a = started(RedisBus(server.url(), _prefix(), socket_timeout=0.5, health_check_interval=0.3))
    wait_until(lambda: a.bus.connected)
    server.pause()  # connections stay open; nothing is answered
    try:
        began = time.monotonic()
        with pytest.raises(BusDown):
            a.publish(b"into the void", timeout=TIMEOUT)
        assert time.monotonic() - began < 2.0, "the PUBLISH is bounded by socket_timeout"
        wait_until(lambda: not a.bus.connected, timeout=5, message="silence noticed by the listener's PING")
        assert "connection lost" in _records(caplog, level=logging.WARNING)[0].getMessage()
    finally:
        server.resume()
    wait_until(lambda: a.bus.connected, timeout=10)
    assert a.publish(b"back") is True
    wait_until(lambda: b"back" in a.received)
    _assert_no_traceback(caplog, capfd)


def test_stop_is_prompt_while_redis_is_down_or_silent(make_redis_server, started):
    down = make_redis_server()
    silent = make_redis_server()
    a = started(RedisBus(down.url(), _prefix()))
    b = started(RedisBus(silent.url(), _prefix(), stop_timeout=1.0))
    wait_until(lambda: a.bus.connected and b.bus.connected)
    down.stop()
    silent.pause()
    try:
        wait_until(lambda: not a.bus.connected)
        for member, bound in ((a, 0.5), (b, 1.5)):
            began = time.monotonic()
            member.hub.call(member.bus.stop, timeout=TIMEOUT)
            assert time.monotonic() - began < bound
            with pytest.raises(BusDown):
                member.publish(b"after stop")
    finally:
        silent.resume()


def test_reconnect_drops_both_connections_and_connects_again(redis_server, started):
    import redis

    prefix = _prefix()
    a = started(RedisBus(redis_server.url(), prefix))
    wait_until(lambda: a.bus.connected)
    assert a.publish(b"one") is True
    admin = redis.Redis.from_url(redis_server.url(), socket_timeout=TIMEOUT)

    def ids() -> dict[str, int]:
        return {c["name"]: int(c["id"]) for c in admin.client_list() if c["name"].startswith(prefix)}

    before = ids()
    assert set(before) == {f"{prefix}-listener", f"{prefix}-publisher"}
    a.hub.call(a.bus.reconnect, timeout=TIMEOUT)
    wait_until(lambda: a.bus.connected and ids().get(f"{prefix}-listener", 0) > before[f"{prefix}-listener"])
    assert a.publish(b"two") is True
    assert a.wait_for(2) == [b"one", b"two"]
    after = ids()
    assert after[f"{prefix}-publisher"] > before[f"{prefix}-publisher"]
    assert len(after) == 2, "the old connections are closed"
    admin.close()


# --- credentials and isolation ---------------------------------------------------------------------


def test_a_password_in_the_url_works_and_is_never_logged(make_redis_server, started, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = make_redis_server(password="s3cret-Pass")
    prefix = _prefix()
    good = started(RedisBus(server.url(), prefix))
    wrong = started(RedisBus(server.url(password="wr0ng-Pass"), prefix))
    wait_until(lambda: good.bus.connected)
    assert good.publish(b"authenticated") is True
    assert good.wait_for(1) == [b"authenticated"]
    wait_until(lambda: _records(caplog, level=logging.WARNING), message="the wrong password is reported")
    assert not wrong.bus.connected
    assert "s3cret-Pass" not in caplog.text and "wr0ng-Pass" not in caplog.text
    assert "s3cret" not in good.bus.description + repr(good.bus)


def test_a_prefix_with_spaces_still_connects(redis_server, started):
    a = started(RedisBus(redis_server.url(), f"my app {_prefix()}"))
    wait_until(lambda: a.bus.connected)
    assert a.publish(b"spaced") is True
    assert a.wait_for(1) == [b"spaced"]


def test_the_db_and_the_prefix_keep_two_clusters_apart(redis_server, started):
    p, q = _prefix(), _prefix()
    a1 = started(RedisBus(redis_server.url(0), p))
    a2 = started(RedisBus(redis_server.url(0), p))
    other_prefix = started(RedisBus(redis_server.url(0), q))
    other_db = started(RedisBus(redis_server.url(1), p))
    everyone = (a1, a2, other_prefix, other_db)
    wait_until(lambda: all(m.bus.connected for m in everyone))
    for member in everyone:
        assert member.publish(b"from %s" % member.bus.channel) is True
    # Redis fans out in the order it ran the PUBLISHes: had anything leaked,
    # it would arrive before these last ones.
    for member in everyone:
        assert member.publish(b"last") is True
    assert a2.wait_for(4) == [b"from " + a1.bus.channel] * 2 + [b"last"] * 2
    assert other_prefix.wait_for(2) == [b"from " + other_prefix.bus.channel, b"last"]
    assert other_db.wait_for(2) == [b"from " + other_db.bus.channel, b"last"]


# --- the hop ----------------------------------------------------------------------------------------


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_the_publish_to_deliver_hop_is_measured_and_within_loose_bounds(redis_server, started):
    prefix = _prefix()
    a, b = started(RedisBus(redis_server.url(), prefix)), started(RedisBus(redis_server.url(), prefix))
    wait_until(lambda: a.bus.connected and b.bus.connected)
    count = 1000

    def send(data: bytes) -> float:
        def on_hub() -> float:
            sent = time.perf_counter()
            a.bus.publish(data)
            return sent
        return a.hub.call(on_hub, timeout=TIMEOUT)

    latencies = []
    for number in range(count):  # one at a time: the hop itself, no queueing
        sent = send(b"%d" % number)
        b.wait_for(number + 1)
        latencies.append(b.arrivals[number] - sent)
    began = time.perf_counter()
    for number in range(count):  # a burst: what pipelining carries
        a.hub.post(a.bus.publish, b"burst %d" % number)
    b.wait_for(2 * count, timeout=30)
    burst = b.arrivals[-1] - began
    p50, p99 = _percentile(latencies, 0.5) * 1e3, _percentile(latencies, 0.99) * 1e3
    print(f"\nRedis hop, {count} messages one at a time: p50 {p50:.3f} ms, p99 {p99:.3f} ms; "
          f"a burst of {count}: {burst * 1e3:.1f} ms ({count / burst:,.0f} messages/s)")
    assert p50 < 5 and p99 < 50, "generous bounds: this is a smoke check, the numbers are printed"

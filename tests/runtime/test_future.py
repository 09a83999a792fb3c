"""GeventFuture: Pykka's future contract on a gevent AsyncResult."""

from __future__ import annotations

import queue
import time

import gevent
import gevent.event
import pykka
import pytest

from actors.runtime import GeventFuture

TIMEOUT = 2.0


def test_get_returns_the_value_set():
    future = GeventFuture()
    future.set(42)
    assert future.get(timeout=TIMEOUT) == 42
    assert future.get(timeout=TIMEOUT) == 42  # readable more than once


def test_get_waits_for_a_value_set_later_by_another_greenlet():
    future = GeventFuture()
    gevent.spawn_later(0.02, future.set, "later")
    assert future.get(timeout=TIMEOUT) == "later"


def test_get_raises_pykka_timeout_after_the_timeout():
    future = GeventFuture()
    started = time.monotonic()
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0.05)
    assert 0.04 <= time.monotonic() - started < 1.0


def test_get_with_zero_timeout_raises_pykka_timeout_when_unset():
    with pytest.raises(pykka.Timeout):
        GeventFuture().get(timeout=0)


def test_set_exception_makes_get_raise_it_with_its_traceback():
    future = GeventFuture()
    try:
        raise ValueError("inside")
    except ValueError:
        future.set_exception()
    with pytest.raises(ValueError, match="inside") as info:
        future.get(timeout=TIMEOUT)
    assert info.tb is not None


def test_set_exception_accepts_an_exc_info_tuple():
    future = GeventFuture()
    error = KeyError("given")
    future.set_exception((KeyError, error, None))
    with pytest.raises(KeyError) as info:
        future.get(timeout=TIMEOUT)
    assert info.value is error


def test_set_exception_instantiates_an_exception_class_without_a_value():
    future = GeventFuture()
    future.set_exception((pykka.ActorDeadError, None, None))
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=TIMEOUT)


def test_setting_a_future_twice_raises_queue_full_like_pykka():
    future = GeventFuture()
    future.set(1)
    with pytest.raises(queue.Full):
        future.set(2)
    with pytest.raises(queue.Full):
        future.set_exception((ValueError, ValueError(), None))
    assert future.get(timeout=TIMEOUT) == 1


def test_setting_a_future_with_a_get_hook_raises_queue_full():
    future = GeventFuture()
    future.set_get_hook(lambda timeout: "hooked")
    with pytest.raises(queue.Full):
        future.set(1)
    assert future.get(timeout=TIMEOUT) == "hooked"


def test_map_filter_join_and_reduce_build_gevent_futures():
    a, b = GeventFuture(), GeventFuture()
    a.set([1, 2, 3, 4])
    b.set([10])
    mapped = a.map(len)
    assert isinstance(mapped, GeventFuture)
    assert mapped.get(timeout=TIMEOUT) == 4
    assert a.filter(lambda x: x > 2).get(timeout=TIMEOUT) == [3, 4]
    assert a.join(b).get(timeout=TIMEOUT) == [[1, 2, 3, 4], [10]]
    assert a.reduce(lambda x, y: x + y).get(timeout=TIMEOUT) == 10


def test_get_all_collects_values_with_a_timeout():
    futures = [GeventFuture() for _ in range(3)]
    for i, future in enumerate(futures):
        gevent.spawn_later(0.01 * i, future.set, i)
    assert list(pykka.get_all(futures, timeout=TIMEOUT)) == [0, 1, 2]
    with pytest.raises(pykka.Timeout):
        pykka.get_all([GeventFuture()], timeout=0.02)


def test_a_future_can_wrap_an_existing_async_result():
    result = gevent.event.AsyncResult()
    future = GeventFuture(result)
    result.set("shared")
    assert future.get(timeout=TIMEOUT) == "shared"


def test_a_waiting_get_does_not_block_other_greenlets():
    future = GeventFuture()
    ticks: list[int] = []

    def ticker() -> None:
        for i in range(3):
            ticks.append(i)
            gevent.sleep(0)
        future.set(len(ticks))

    gevent.spawn(ticker)
    assert future.get(timeout=TIMEOUT) == 3

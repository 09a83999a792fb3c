"""SharedLoopActor: Pykka's model without a greenlet per actor (issue 5/9)."""

from __future__ import annotations

import gc

import gevent
import pykka
import pytest

from actors.shared_loop import SLICE_MESSAGES, SharedLoopActor

TIMEOUT = 2.0


class Counter(SharedLoopActor):
    def __init__(self, log: list | None = None) -> None:
        super().__init__()
        self.log = log if log is not None else []
        self.value = 0

    def on_start(self) -> None:
        self.log.append("start")

    def on_stop(self) -> None:
        self.log.append("stop")

    def on_died(self, reason: str) -> None:
        self.log.append(("died", reason))

    def on_receive(self, message):
        if message == "boom":
            raise ValueError("boom")
        if message == "get":
            return self.value
        self.value += message
        self.log.append(message)
        return None

    def add(self, n: int) -> int:
        self.value += n
        return self.value


def test_on_start_runs_before_the_first_message_and_messages_keep_their_order():
    log: list = []
    ref = Counter.start(log)
    for n in (1, 2, 3):
        ref.tell(n)
    assert ref.ask("get", timeout=TIMEOUT) == 6
    assert log == ["start", 1, 2, 3]


def test_ask_proxies_and_stop_work_as_in_pykka():
    log: list = []
    ref = Counter.start(log)
    assert ref.proxy().add(5).get(timeout=TIMEOUT) == 5
    assert ref.stop(timeout=TIMEOUT) is True
    assert log == ["start", "stop"] and not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(1)


def test_an_ask_that_raises_goes_back_to_the_caller_and_the_actor_lives():
    ref = Counter.start()
    with pytest.raises(ValueError):
        ref.ask("boom", timeout=TIMEOUT)
    assert ref.ask("get", timeout=TIMEOUT) == 0


def test_a_told_message_that_raises_ends_in_on_died_and_pending_asks_are_refused():
    log: list = []
    ref = Counter.start(log)
    ref.tell("boom")
    pending = ref.ask("get", block=False)
    with pytest.raises(pykka.ActorDeadError):
        pending.get(timeout=TIMEOUT)
    assert not ref.is_alive()
    assert log[0] == "start" and log[1][0] == "died" and "ValueError: boom" in log[1][1]


def test_shared_loop_actors_are_not_in_the_registry_and_idle_ones_hold_no_greenlet_or_queue():
    gevent.sleep(0)
    before = sum(1 for obj in gc.get_objects() if isinstance(obj, gevent.Greenlet))
    refs = [Counter.start() for _ in range(200)]
    assert refs[-1].ask("get", timeout=TIMEOUT) == 0
    gevent.sleep(0)
    after = sum(1 for obj in gc.get_objects() if isinstance(obj, gevent.Greenlet))
    assert after - before <= 1  # at most the shared loop's own greenlet
    assert not any(ref in pykka.ActorRegistry.get_all() for ref in refs)
    assert all(ref.actor_inbox.queue is None for ref in refs)
    for ref in refs:
        ref.stop(block=False)


def test_a_burst_is_worked_off_in_slices_so_other_greenlets_run_meanwhile():
    refs = [Counter.start() for _ in range(50)]
    ticks: list[int] = []
    total = SLICE_MESSAGES * 20
    ticker = gevent.spawn(lambda: [ticks.append(sum(r.actor_inbox.qsize() for r in refs)) or gevent.sleep(0)
                                   for _ in range(1000)])
    for i in range(total):
        refs[i % len(refs)].tell(1)
    assert sum(ref.ask("get", timeout=TIMEOUT) for ref in refs) == total
    ticker.kill()
    # The ticker ran while messages were still queued: the loop yielded mid-burst.
    assert any(0 < queued < total for queued in ticks)
    for ref in refs:
        ref.stop(block=False)

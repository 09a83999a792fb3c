"""The refusal-line rate limiter and log (transport/ops_log.py): pure, a fake clock, no I/O."""

from __future__ import annotations

import logging

from transport.ops_log import (
    OTHER_CLIENTS,
    UNKNOWN,
    OpsLog,
    RateLimiter,
    Verdict,
    peer_address,
)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _logger(name: str) -> tuple[logging.Logger, Lines]:
    logger, lines = logging.getLogger(f"tests.ops_log.{name}"), Lines()
    logger.handlers[:] = [lines]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, lines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- RateLimiter -----------------------------------------------------------------------


def test_the_first_limit_hits_of_a_window_are_allowed_and_the_rest_held_back():
    limiter = RateLimiter(limit=3, window=10.0)
    verdicts = [limiter.hit("a", 0.5 * i) for i in range(10)]
    assert [v.allowed for v in verdicts] == [True] * 3 + [False] * 7
    assert all(v.ended == () for v in verdicts)


def test_each_key_has_its_own_budget():
    limiter = RateLimiter(limit=1, window=10.0)
    assert limiter.hit("a", 0).allowed and limiter.hit("b", 0).allowed
    assert not limiter.hit("a", 1).allowed and not limiter.hit("b", 1).allowed


def test_a_new_window_reports_how_many_the_last_one_held_back_then_allows_again():
    limiter = RateLimiter(limit=2, window=10.0)
    for t in range(6):
        limiter.hit("a", t)
    assert limiter.hit("a", 9.9) == Verdict(False, ())
    assert limiter.hit("a", 10.0) == Verdict(True, (("a", 5),))
    assert limiter.hit("a", 11.0) == Verdict(True, ())


def test_a_window_that_held_nothing_back_ends_silently():
    limiter = RateLimiter(limit=5, window=1.0)
    limiter.hit("a", 0)
    assert limiter.hit("a", 2.0) == Verdict(True, ())
    assert limiter.sweep(10.0) == ()
    assert len(limiter) == 0


def test_sweep_reports_every_ended_window_oldest_first_and_forgets_them():
    limiter = RateLimiter(limit=1, window=10.0)
    for key, t in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        limiter.hit(key, t)
        limiter.hit(key, t)  # held back
    assert limiter.holding
    assert limiter.sweep(11.5) == (("a", 1), ("b", 1))
    assert len(limiter) == 1 and limiter.holding
    assert limiter.sweep(12.0) == (("c", 1),)
    assert not limiter.holding and len(limiter) == 0


def test_a_renewed_window_moves_behind_the_others_so_sweeps_stay_in_start_order():
    limiter = RateLimiter(limit=1, window=10.0)
    limiter.hit("a", 0.0)
    limiter.hit("b", 5.0)
    limiter.hit("a", 10.0)  # a's window is over: a new one starts at 10
    limiter.hit("b", 6.0)  # held back
    assert limiter.sweep(15.0) == (("b", 1),)
    assert len(limiter) == 1


def test_past_max_keys_every_new_address_shares_one_budget():
    limiter = RateLimiter(limit=2, window=10.0, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.hit(key, 0).allowed
    allowed = [limiter.hit(f"new-{i}", 1).allowed for i in range(50)]
    assert allowed == [True, True] + [False] * 48
    assert len(limiter) == 4  # the three plus OTHER_CLIENTS: bounded whatever the flood
    assert limiter.sweep(11.0) == ((OTHER_CLIENTS, 48),)


# --- OpsLog ------------------------------------------------------------------------------


def test_a_noted_line_carries_the_remote_and_the_fields_as_record_attributes():
    logger, lines = _logger("fields")
    ops = OpsLog(RateLimiter(), clock=Clock())
    assert ops.note(logger, logging.WARNING, "10.0.0.7", "refused", kind="connection_refused", code=4001)
    (record,) = lines.records
    assert (record.levelno, record.getMessage()) == (logging.WARNING, "refused")
    assert (record.remote, record.kind, record.code) == ("10.0.0.7", "connection_refused", 4001)


def test_a_message_with_percent_signs_is_written_as_is():
    logger, lines = _logger("percent")
    OpsLog(clock=Clock()).note(logger, logging.INFO, "a", "path /apps/%s%d%% refused")
    assert lines.records[0].getMessage() == "path /apps/%s%d%% refused"


def test_client_strings_are_cut_to_a_bounded_length():
    logger, lines = _logger("bounded")
    OpsLog(clock=Clock()).note(logger, logging.INFO, "a", "x" * 10_000, path="/" * 10_000)
    record = lines.records[0]
    assert len(record.getMessage()) < 600 and len(record.path) < 300


def test_a_flood_writes_the_limit_then_one_held_back_line_when_the_timer_fires():
    logger, lines = _logger("flood")
    own, own_lines = _logger("flood-summary")
    clock, timers = Clock(), []
    ops = OpsLog(RateLimiter(limit=5, window=10.0), logger=own, clock=clock,
                 schedule=lambda seconds, func: timers.append((seconds, func)))
    written = [ops.note(logger, logging.INFO, "10.0.0.9", f"refusal {i}") for i in range(200)]
    assert written.count(True) == 5 and len(lines.records) == 5
    assert [seconds for seconds, _ in timers] == [10.0]  # one timer, however many were held back
    clock.now += 10.0
    timers.pop()[1]()
    (summary,) = own_lines.records
    assert summary.levelno == logging.WARNING
    assert (summary.remote, summary.kind, summary.suppressed) == ("10.0.0.9", "log_suppressed", 195)
    assert "195" in summary.getMessage() and "10.0.0.9" in summary.getMessage()
    assert timers == []  # nothing more held back: no timer left


def test_without_a_timer_the_held_back_line_comes_with_the_next_hit():
    logger, lines = _logger("lazy")
    own, own_lines = _logger("lazy-summary")
    clock = Clock()
    ops = OpsLog(RateLimiter(limit=1, window=10.0), logger=own, clock=clock)
    for _ in range(4):
        ops.note(logger, logging.INFO, "b", "line")
    assert own_lines.records == []
    clock.now += 11
    assert ops.note(logger, logging.INFO, "b", "line")
    assert [r.suppressed for r in own_lines.records] == [3]
    assert len(lines.records) == 2


def test_a_sweep_that_leaves_windows_holding_lines_back_schedules_another():
    own, _ = _logger("resweep")
    logger, _ = _logger("resweep-lines")
    clock, timers = Clock(), []
    ops = OpsLog(RateLimiter(limit=1, window=10.0), logger=own, clock=clock,
                 schedule=lambda seconds, func: timers.append(func))
    ops.note(logger, logging.INFO, "a", "x")
    ops.note(logger, logging.INFO, "a", "x")  # held: timer 1
    clock.now += 5
    ops.note(logger, logging.INFO, "b", "x")
    ops.note(logger, logging.INFO, "b", "x")  # held: a timer is due already
    assert len(timers) == 1
    clock.now += 5
    timers.pop()()  # a's window is over, b's is not: another sweep is scheduled
    assert len(timers) == 1


class _Sock:
    def __init__(self, peer: object) -> None:
        self.peer = peer

    def getpeername(self) -> object:
        if isinstance(self.peer, OSError):
            raise self.peer
        return self.peer


def test_peer_address_is_the_ip_or_unknown_once_the_socket_is_gone():
    assert peer_address(_Sock(("127.0.0.1", 5555))) == "127.0.0.1"
    assert peer_address(_Sock(("::1", 5555, 0, 0))) == "::1"
    assert peer_address(_Sock(OSError(107, "Transport endpoint is not connected"))) == UNKNOWN
    assert peer_address(_Sock("")) == UNKNOWN  # an unnamed Unix socket

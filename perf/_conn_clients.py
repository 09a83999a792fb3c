"""A storm client process: ``perf._clients`` plus the time each connect took.

Started by ``perf/connections.py`` (``python -m perf._conn_clients``). It is
the broadcast benchmark's client process (raw sockets, hand-written upgrade,
masked subscribe, one epoll loop) with one addition: per connection it notes
``time.monotonic()`` when its first ``connect`` starts and when
``pusher_internal:subscription_succeeded`` arrives, into a latency histogram
(2 significant digits, as ``perf._stats``). A retried connect keeps its first
start, so a refused attempt counts in the time its user waited.

Extra command: ``timings`` -> event ``timings`` {hist (us), max_us, first
start, last ready (monotonic, comparable across processes), retried}.
"""

from __future__ import annotations

import time

from perf._clients import READY, Clients, Conn
from perf._proc import die_with_parent, emit
from perf._stats import quantize_us

__all__ = ["StormClients"]


class StormClients(Clients):
    """``Clients`` that time connect start -> subscription_succeeded per connection."""

    def start_connect(self, cmd: dict) -> None:
        self.started: dict[Conn, float] = {}
        self.connect_hist: dict[int, int] = {}
        self.connect_max_us = 0.0
        self.first_start = self.last_ready = 0.0
        self.retried = 0
        super().start_connect(cmd)

    def _open(self, c: Conn) -> None:
        if c not in self.started:
            now = time.monotonic()
            self.started[c] = now
            self.first_start = self.first_start or now
        elif c.tries == 1:
            self.retried += 1  # counted once per connection that needed a second try
        super()._open(c)

    def on_handshake_event(self, c: Conn, payload: bytes) -> None:
        before = c.state
        super().on_handshake_event(c, payload)
        if c.state == READY and before != READY:
            now = self.last_ready = time.monotonic()
            us = (now - self.started[c]) * 1e6
            self.connect_max_us = max(self.connect_max_us, us)
            q = quantize_us(us)
            self.connect_hist[q] = self.connect_hist.get(q, 0) + 1

    def on_command(self, cmd: dict) -> None:
        if cmd["op"] == "timings":
            emit({"ev": "timings", "hist": getattr(self, "connect_hist", {}), "max_us": getattr(self, "connect_max_us", 0),
                  "first_start": getattr(self, "first_start", 0), "last_ready": getattr(self, "last_ready", 0),
                  "retried": getattr(self, "retried", 0), "ready": self.ready, "failed": self.failed,
                  "errors": self.errors})
        else:
            super().on_command(cmd)


def main() -> None:
    die_with_parent()
    try:
        StormClients().run()
    except Exception as exc:  # tell the driver why, then fail loudly
        emit({"ev": "error", "message": f"client process crashed: {exc!r}"})
        raise


if __name__ == "__main__":
    main()

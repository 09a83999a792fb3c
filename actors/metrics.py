"""The metrics actor: the one owner of the node's counters.

Other actors tell it counts in batches (one message per broadcast and channel,
never one per delivery); it adds them up in plain ints and pushes the totals
to prometheus-client every ``flush_interval`` seconds, or when asked to
``flush`` (the /metrics endpoint asks before every scrape, so a scrape is
exact).

On a cluster (workers behind one /metrics, or nodes) every count means what
its help says for the whole: a broadcast is counted once, by the node that
accepted it, which also makes the one fan-out observation; the other nodes
time their share of the fan-out in a histogram of their own
(``actorcast_remote_fanout_seconds``); messages are counted where they are
written to a socket.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from pykka import ActorDeadError

from .messages import Counted, FanoutDone, FanoutStarted, Flush, Received, Sent, Timed
from .restart import hand_over
from .runtime import GeventActor, call_later

__all__ = ["COUNTERS", "MetricsActor", "WorkerFilesCollector"]

log = logging.getLogger(__name__)

# counter name -> (prometheus name, help)
COUNTERS = {
    "sent": ("actorcast_messages_sent", "WebSocket messages written to clients"),
    "sent_bytes": ("actorcast_bytes_sent", "Bytes written to clients"),
    "received": ("actorcast_messages_received", "WebSocket messages received from clients"),
    "received_bytes": ("actorcast_bytes_received", "Bytes received from clients"),
    "opened": ("actorcast_connections_opened", "Connections accepted"),
    "closed": ("actorcast_connections_closed", "Connections closed"),
    "dropped": ("actorcast_messages_dropped", "Messages dropped for slow or closed clients"),
    "broadcasts": ("actorcast_broadcasts", "Events published to channels (counted by the node that accepted them)"),
    "webhooks_sent": ("actorcast_webhooks_sent", "Webhook events delivered (answered 2xx/3xx)"),
    "webhooks_failed": ("actorcast_webhooks_failed", "Webhook events given up (4xx, or retries exhausted)"),
    "webhooks_retried": ("actorcast_webhooks_retried", "Webhook POSTs attempted again"),
    "webhooks_dropped": ("actorcast_webhooks_dropped", "Webhook events dropped: their queue was full"),
}
#: histogram name (of Timed messages) -> (prometheus name, help)
HISTOGRAMS = {"webhook_send": ("actorcast_webhook_send_seconds", "Time one webhook POST took (each attempt)")}

class _Tick:
    """The periodic flush timer fired."""


FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class MetricsActor(GeventActor):
    """Accumulates counts and fan-out timings; feeds a prometheus registry."""

    # made once per registry (it refuses twins), then handed from a dead actor to its successor
    _counters: dict[str, Counter]
    _connections: Gauge
    _fanout: Histogram
    _remote_fanout: Histogram
    _histograms: dict[str, Histogram]
    _totals: defaultdict[tuple[str, str], int]  # flushed counts

    def __init__(
        self, registry: CollectorRegistry | None = None, flush_interval: float = 0.5,
        successor_of: MetricsActor | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry or CollectorRegistry()
        self.flush_interval = flush_interval
        self._observed: list[tuple[str, str, float]] = []
        self._pending: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._fanouts: list[tuple[str, bool, float]] = []  # (app id, accepted here, seconds)
        self._inflight: dict[tuple[str, int], list[Any]] = {}
        self._timer = None
        if successor_of is not None:  # a restart: the registry holds these already (and refuses twins)
            dead = successor_of
            self._counters, self._connections, self._histograms = dead._counters, dead._connections, dead._histograms
            self._fanout, self._remote_fanout, self._totals = dead._fanout, dead._remote_fanout, dead._totals
            return
        self._totals = defaultdict(int)
        self._counters = {
            name: Counter(prom, text, ["app_id"], registry=self.registry) for name, (prom, text) in COUNTERS.items()
        }
        # "livesum": under ``--workers N`` (prometheus-client's multiprocess
        # mode) the one /metrics sums the live workers' gauges; a single
        # process ignores the mode.
        self._connections = Gauge(
            "actorcast_connections", "Open connections", ["app_id"], registry=self.registry, multiprocess_mode="livesum"
        )
        self._fanout = Histogram(
            "actorcast_broadcast_fanout_seconds",
            "Time from a broadcast call to the last channel actor of the node that accepted it finishing its fan-out",
            ["app_id"],
            buckets=FANOUT_BUCKETS,
            registry=self.registry,
        )
        self._remote_fanout = Histogram(
            "actorcast_remote_fanout_seconds",
            "Time from a broadcast's arrival from another node to the last channel actor here finishing its fan-out",
            ["app_id"],
            buckets=FANOUT_BUCKETS,
            registry=self.registry,
        )
        self._histograms = {
            name: Histogram(prom, text, ["app_id"], buckets=FANOUT_BUCKETS + (10.0,), registry=self.registry)
            for name, (prom, text) in HISTOGRAMS.items()
        }

    def on_start(self) -> None:
        self._schedule()

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.kill(block=False)
        self.flush()

    def on_died(self, reason: str) -> None:
        """Died of a bug: a fresh actor takes over at the same ref (every channel and connection holds
        it), with the same instruments and totals; what was not flushed yet is lost, and said so."""
        if self._timer is not None:
            self._timer.kill(block=False)
        lost = sum(self._pending.values())
        hand_over(self, MetricsActor.start(self.registry, self.flush_interval, successor_of=self))
        log.error("metrics actor died: %s; restarted, %d count(s) not flushed yet were lost", reason, lost)

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Sent:
            self._pending[message.app_id, "sent"] += message.frames
            self._pending[message.app_id, "sent_bytes"] += message.nbytes
        elif kind is Received:
            self._pending[message.app_id, "received"] += 1
            self._pending[message.app_id, "received_bytes"] += message.nbytes
        elif kind is Counted:
            self._pending[message.app_id, message.name] += message.value
        elif kind is FanoutDone:
            self._fanout_done(message)
        elif kind is Timed:
            if message.name in self._histograms:
                self._observed.append((message.app_id, message.name, message.seconds))
        elif kind is FanoutStarted:
            if message.accepted:
                self._pending[message.app_id, "broadcasts"] += 1
            if message.channels > 0:
                self._inflight[message.app_id, message.broadcast_id] = [message.channels, message.started,
                                                                        message.accepted]
            else:  # no subscriber here: the fan-out is over as it starts
                self._fanouts.append((message.app_id, message.accepted, time.monotonic() - message.started))
        elif kind is Flush:
            self.flush()
        elif kind is _Tick:
            self.flush()
            self._schedule()
        else:
            return super().on_receive(message)
        return None

    def _fanout_done(self, message: FanoutDone) -> None:
        pending = self._pending
        app_id = message.app_id
        if message.sent:
            pending[app_id, "sent"] += message.sent
            pending[app_id, "sent_bytes"] += message.nbytes
        key = (app_id, message.broadcast_id)
        entry = self._inflight.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            del self._inflight[key]
            self._fanouts.append((app_id, entry[2], message.finished - entry[1]))

    def flush(self) -> None:
        """Push what accumulated since the last flush to prometheus-client."""
        pending, self._pending = self._pending, defaultdict(int)
        for (app_id, name), value in pending.items():
            if not value:
                continue
            self._totals[app_id, name] += value
            if name in self._counters:
                self._counters[name].labels(app_id).inc(value)
            if name in ("opened", "closed"):
                self._connections.labels(app_id).set(self._totals[app_id, "opened"] - self._totals[app_id, "closed"])
        fanouts, self._fanouts = self._fanouts, []
        for app_id, accepted, seconds in fanouts:
            (self._fanout if accepted else self._remote_fanout).labels(app_id).observe(seconds)
        observed, self._observed = self._observed, []
        for app_id, name, seconds in observed:
            self._histograms[name].labels(app_id).observe(seconds)

    def totals(self) -> dict[str, dict[str, int]]:
        """Flushed totals as ``{app_id: {counter: value}}`` (for tests and /usage)."""
        self.flush()
        out: dict[str, dict[str, int]] = {}
        for (app_id, name), value in self._totals.items():
            out.setdefault(app_id, {})[name] = value
        return out

    def _schedule(self) -> None:
        if self.flush_interval > 0 and not self.actor_stopped.is_set():
            self._timer = call_later(self.flush_interval, self._tick)

    def _tick(self) -> None:
        try:
            self.actor_ref.tell(_Tick())
        except ActorDeadError:  # the timer outlived the actor
            log.debug("metrics actor stopped; tick dropped")


#: The header of a prometheus-client multiprocess file: 4 bytes "used", 4 of padding.
_FILE_HEADER_BYTES = 8


class WorkerFilesCollector(MultiProcessCollector):
    """prometheus-client's multiprocess collector, minus the files a worker is still creating.

    A worker's file appears with 0 bytes and is sized only afterwards
    (prometheus-client opens it, then truncates it to its first 64 KiB), and
    one that reads it in between fails the whole scrape with ``struct.error``
    (prometheus-client issue #1199). A worker is new whenever it is
    (re)started, and it creates its files at its first flush, while the
    parent serves scrapes; a worker killed inside that window even leaves
    the empty file for good. A file shorter than its header holds nothing
    yet, so it is left out; files only ever grow, so one that is long enough
    stays readable. (A dead worker's live gauges removed meanwhile are
    skipped by prometheus-client itself.)
    """

    def collect(self) -> Any:
        files = [path for path in glob.glob(os.path.join(self._path, "*.db")) if _begun(path)]
        return self.merge(files, accumulate=True)


def _begun(path: str) -> bool:
    try:
        return os.path.getsize(path) >= _FILE_HEADER_BYTES
    except FileNotFoundError:  # a dead worker's live gauge, removed since the listing
        return False

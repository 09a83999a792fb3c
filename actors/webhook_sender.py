"""How one webhook URL is sent to: a few lanes, one request at a time each, order kept per channel.

Part of the webhook actor (``actors.webhooks``); everything here runs on the
actor's hub, so its queues need no lock.

Each URL has ``lanes`` lanes (default :data:`LANES_PER_URL`); an event goes
to the lane of its channel (``transport.webhooks.lane_of``, the same on
every node), and each lane has one sender greenlet that POSTs one request
at a time over a cooperative socket (``transport.http_post``), retrying as
``transport.webhooks.next_retry`` says. So:

* the events of one channel reach a URL in the order they happened, retries
  included (a channel's vacated never overtakes its occupied);
* at most ``lanes`` requests are in flight to one URL, and a request that
  is slow or being retried holds up only the channels of its lane;
* events of different channels may arrive out of order (``time_ms`` says
  when each POST was made).

With ``webhook_batching`` a URL has one lane: the events of one
``webhook_batch_ms`` window go in one POST (up to 100), whatever their
channels, so order is kept per URL and a failing batch holds up the URL
(its retries are bounded as always).

The URL's queue is bounded (the app's ``queue_limit`` for all its lanes):
past it the oldest event of the longest lane is dropped, counted and logged
at most once per :data:`DROP_LOG_INTERVAL`. The owner is told when each
event is finished with (delivered, given up, dropped), so the cluster's
next leader does not send it again.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import gevent
import gevent.event

from transport import webhooks as wh
from transport.http_post import post

from .messages import Timed
from .runtime import sleep, spawn, tell_if_alive

if TYPE_CHECKING:
    from .webhooks import WebhookActor

__all__ = ["DROP_LOG_INTERVAL", "LANES_PER_URL", "Sender"]

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL = 10.0  # seconds between two "dropped" warnings of one URL
LANES_PER_URL = 4  # requests in flight to one URL at most


class _Item(NamedTuple):
    event: dict[str, Any]
    token: int | None  # the leader's sequence number of a shared event, or None


class _Lane:
    """The queue and sender greenlet of some of a URL's channels."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.queue: collections.deque[_Item] = collections.deque()
        self.inflight: list[_Item] = []
        self.wake = gevent.event.Event()
        self.greenlet = spawn(self._run)

    def _run(self) -> None:
        app = self.sender.owner.app
        while True:
            self.wake.wait()
            self.wake.clear()
            if app.webhook_batching and self.queue:
                sleep(app.webhook_batch_ms / 1000)  # what arrives meanwhile goes in the same POST
            while self.queue:
                take = wh.MAX_BATCH_EVENTS if app.webhook_batching else 1
                self.inflight = [self.queue.popleft() for _ in range(min(take, len(self.queue)))]
                try:
                    outcome = self.sender.deliver(self.inflight)
                    if outcome != "handed over":
                        self.sender.finished(self.inflight)
                finally:
                    self.inflight = []


class Sender:
    """One webhook URL of an app (see the module docstring)."""

    def __init__(self, owner: WebhookActor, hook: wh.Webhook, index: int, lanes: int = LANES_PER_URL) -> None:
        self.owner = owner  # its app, timings, queue_limit, stopping, stopped, count(), finished()
        self.hook = hook
        self.index = index  # of this URL in the app's webhooks: the same on every node
        self.dropped_unlogged = 0
        self.last_drop_log = 0.0
        lanes = 1 if owner.app.webhook_batching else max(lanes, 1)
        self.lanes = [_Lane(self) for _ in range(lanes)]

    def put(self, event: dict[str, Any], token: int | None = None) -> None:
        """Queue ``event`` on its channel's lane (``token``: its shared sequence number, if any)."""
        if sum(len(lane.queue) for lane in self.lanes) >= self.owner.queue_limit:
            self._drop_oldest()
        lane = self.lanes[wh.lane_of(event.get("channel", ""), len(self.lanes))]
        lane.queue.append(_Item(event, token))
        lane.wake.set()

    def _drop_oldest(self) -> None:
        longest = max(self.lanes, key=lambda lane: len(lane.queue))  # most likely the one stuck on a request
        self.finished([longest.queue.popleft()])
        self.owner.count("webhooks_dropped", 1)
        self.dropped_unlogged += 1
        now = time.monotonic()
        if now - self.last_drop_log >= DROP_LOG_INTERVAL:
            log.warning("webhook queue of app %s for %s is full (%d): dropped the oldest %d event(s)",
                        self.owner.app.id, self.hook.url, self.owner.queue_limit, self.dropped_unlogged)
            self.last_drop_log, self.dropped_unlogged = now, 0

    def pending(self) -> int:
        """Events queued or being sent."""
        return sum(len(lane.queue) + len(lane.inflight) for lane in self.lanes)

    def pending_shared(self) -> int:
        """Of those, the shared ones (another node sends them if this one stops)."""
        return sum(1 for lane in self.lanes for item in (*lane.queue, *lane.inflight) if item.token is not None)

    def finished(self, items: list[_Item]) -> None:
        """Tell the owner these events are done with (so nobody sends them again)."""
        for item in items:
            if item.token is not None:
                self.owner.finished(item.token, self.index)

    def kill(self) -> None:
        """Stop every lane now (what is in flight is cut)."""
        for lane in self.lanes:
            lane.greenlet.kill(block=False)

    def deliver(self, items: list[_Item]) -> str:
        """POST these events until delivered or given up: ``"sent"``, ``"failed"`` or ``"handed over"``.

        "handed over": the node is stopping and leaves a failing request of
        shared events to the cluster's next leader instead of giving it up.
        """
        owner, timings = self.owner, self.owner.timings
        events = [item.event for item in items]
        shared = all(item.token is not None for item in items)
        payload = wh.body(events, int(time.time() * 1000))
        headers = wh.request_headers(owner.app.key, owner.app.secret, payload, self.hook.headers)
        first = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                status: int | None = post(self.hook.url, headers, payload, timings.timeout)
                problem = f"HTTP {status}"
            except (OSError, ValueError, gevent.Timeout) as exc:
                status, problem = None, f"{type(exc).__name__}: {exc}"
            now = time.monotonic()
            tell_if_alive(owner.metrics, Timed(owner.app.id, "webhook_send", now - started))
            if status is not None and status < 400:
                owner.count("webhooks_sent", len(events))
                return "sent"
            delay = wh.next_retry(attempt, now - first, status, first=timings.first_retry,
                                  max_gap=timings.max_retry_gap, retry_for=timings.retry_for)
            if delay is not None and owner.stopping and owner.handing_over and shared:
                log.info("webhook of app %s to %s: %s; left to the cluster's next leader", owner.app.id,
                         self.hook.url, problem)
                return "handed over"
            if delay is None or owner.stopping:
                owner.count("webhooks_failed", len(events))
                log.warning("webhook of app %s to %s failed after %d attempt(s) (%s): %d event(s) not delivered",
                            owner.app.id, self.hook.url, attempt, problem, len(events))
                return "failed"
            owner.count("webhooks_retried", 1)
            log.info("webhook of app %s to %s: %s; retrying in %.1f s", owner.app.id, self.hook.url, problem, delay)
            owner.stopped.wait(delay)  # a shutdown cuts the wait short: one last try within the grace period

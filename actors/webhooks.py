"""The webhook actor: one per app with webhooks; delivers them without slowing anybody.

Data flow: the app actor (and channel actors, for ``cache_miss`` and
``subscription_count``) ``tell`` it a :class:`Hook` holding a Pusher event
(``transport.webhooks``), or a :class:`ClientFrame` (a client event's
finished frame, decoded here so the app actor's hot path does no JSON).
The actor holds ``channel_vacated`` / ``member_removed`` for the app's
``webhook_delay_seconds`` (a :class:`~transport.webhooks.Delayer`: a quick
return cancels both), then appends each event to the queue of every webhook
that wants it.

Each webhook has a :class:`_Lane`: a bounded queue (past ``queue_limit``
the oldest event is dropped, counted and logged at most once per
``DROP_LOG_INTERVAL``) and one sender greenlet that POSTs over a cooperative
socket (``transport.http_post``), one request at a time, so events reach
a URL in order; a slow or dead receiver holds up only its own lane. Retries
follow ``transport.webhooks.next_retry``.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import gevent
import gevent.event
import ujson

from transport import webhooks as wh
from transport.frames import text_of_frame
from transport.http_post import post

from .messages import Counted, Timed
from .runtime import GeventActor, call_later, sleep, spawn, tell_if_alive

__all__ = ["ClientFrame", "Hook", "WebhookActor", "WebhookTimings"]

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL = 10.0  # seconds between two "dropped" warnings of one lane


@dataclass(frozen=True)
class WebhookTimings:
    """How long a send may take and how retries are spaced (shorter in tests)."""

    timeout: float = 10.0
    first_retry: float = wh.FIRST_RETRY
    max_retry_gap: float = wh.MAX_RETRY_GAP
    retry_for: float = wh.RETRY_FOR


class Hook(NamedTuple):
    """A webhook event (a dict from ``transport.webhooks``) to deliver."""

    event: dict[str, Any]


class ClientFrame(NamedTuple):
    """A client event as relayed: its channel, finished frame and sender."""

    channel: str
    frame: bytes
    socket_id: str


class _Due:
    """The delay timer fired."""


class _Lane:
    """One webhook's queue and sender greenlet (lives on the actor's hub; no lock needed)."""

    def __init__(self, owner: WebhookActor, hook: wh.Webhook) -> None:
        self.owner = owner
        self.hook = hook
        self.queue: collections.deque[dict[str, Any]] = collections.deque()
        self.inflight = 0
        self.wake = gevent.event.Event()
        self.dropped_unlogged = 0
        self.last_drop_log = 0.0
        self.greenlet = spawn(self._run)

    def put(self, event: dict[str, Any]) -> None:
        if len(self.queue) >= self.owner.queue_limit:
            self.queue.popleft()
            self.owner.count("webhooks_dropped", 1)
            self.dropped_unlogged += 1
            now = time.monotonic()
            if now - self.last_drop_log >= DROP_LOG_INTERVAL:
                log.warning("webhook queue of app %s for %s is full (%d): dropped the oldest %d event(s)",
                            self.owner.app.id, self.hook.url, self.owner.queue_limit, self.dropped_unlogged)
                self.last_drop_log, self.dropped_unlogged = now, 0
        self.queue.append(event)
        self.wake.set()

    def pending(self) -> int:
        return len(self.queue) + self.inflight

    def _run(self) -> None:
        app = self.owner.app
        while True:
            self.wake.wait()
            self.wake.clear()
            if app.webhook_batching and self.queue:
                sleep(app.webhook_batch_ms / 1000)  # what arrives meanwhile goes in the same POST
            while self.queue:
                take = wh.MAX_BATCH_EVENTS if app.webhook_batching else 1
                events = [self.queue.popleft() for _ in range(min(take, len(self.queue)))]
                self.inflight = len(events)
                try:
                    self._deliver(events)
                finally:
                    self.inflight = 0

    def _deliver(self, events: list[dict[str, Any]]) -> None:
        owner, timings = self.owner, self.owner.timings
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
                return
            delay = wh.next_retry(attempt, now - first, status, first=timings.first_retry,
                                  max_gap=timings.max_retry_gap, retry_for=timings.retry_for)
            if delay is None or owner.stopping:
                owner.count("webhooks_failed", len(events))
                log.warning("webhook of app %s to %s failed after %d attempt(s) (%s): %d event(s) not delivered",
                            owner.app.id, self.hook.url, attempt, problem, len(events))
                return
            owner.count("webhooks_retried", 1)
            log.info("webhook of app %s to %s: %s; retrying in %.1f s", owner.app.id, self.hook.url, problem, delay)
            sleep(delay)


class WebhookActor(GeventActor):
    """Delivers one app's webhooks (see the module docstring)."""

    def __init__(self, app: Any, metrics: Any, timings: WebhookTimings | None = None, queue_limit: int = 10_000) -> None:
        super().__init__()
        self.app = app
        self.metrics = metrics
        self.timings = timings or WebhookTimings()
        self.queue_limit = queue_limit
        self.delayer = wh.Delayer(app.webhook_delay_seconds)
        self.lanes: list[_Lane] = []
        self.stopping = False
        self._timer: Any = None
        self._timer_due: float | None = None

    def on_start(self) -> None:
        self.lanes = [_Lane(self, hook) for hook in self.app.webhooks]

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Hook:
            self.offer(message.event)
        elif kind is ClientFrame:
            self._client_event(message)
        elif kind is _Due:
            self._timer = self._timer_due = None
            self._send_all(self.delayer.due(time.monotonic()))
            self._schedule()
        else:
            return super().on_receive(message)
        return None

    def offer(self, event: dict[str, Any]) -> None:
        """Deliver ``event`` to every webhook that wants it (vacated / removed after the delay)."""
        self._send_all(self.delayer.offer(event, time.monotonic()))
        self._schedule()

    def _client_event(self, message: ClientFrame) -> None:
        try:
            sent = ujson.loads(text_of_frame(message.frame))
        except ValueError:
            log.error("client event frame of app %s is not JSON; no webhook", self.app.id)
            return
        event = wh.client_event(message.channel, sent.get("event"), sent.get("data"), message.socket_id,
                                sent.get("user_id"))
        self.offer(event)

    def _send_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            for lane in self.lanes:
                if lane.hook.wants(event):
                    lane.put(event)

    def _schedule(self) -> None:
        due = self.delayer.next_due()
        if due is None or (self._timer_due is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self._timer.kill(block=False)
        self._timer_due = due
        self._timer = call_later(max(due - time.monotonic(), 0), tell_if_alive, self.actor_ref, _Due())

    def count(self, name: str, value: int) -> None:
        """Add to one of this app's webhook counters."""
        tell_if_alive(self.metrics, Counted(self.app.id, name, value))

    def pending(self) -> int:
        """Events not delivered yet: held for the delay, queued, or being sent."""
        return len(self.delayer) + sum(lane.pending() for lane in self.lanes)

    def drain(self, timeout: float) -> int:
        """Shutdown: send what is held at once, wait up to ``timeout`` s; how many were not delivered.

        Retries stop being scheduled: an event whose attempt fails now is
        counted as failed rather than waited for.
        """
        self.stopping = True
        self._send_all(self.delayer.flush())
        deadline = time.monotonic() + timeout
        while any(lane.pending() for lane in self.lanes) and time.monotonic() < deadline:
            sleep(0.01)
        return sum(lane.pending() for lane in self.lanes)

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.kill(block=False)
        for lane in self.lanes:
            lane.greenlet.kill(block=False)

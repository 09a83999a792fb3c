"""The webhook actor: one per app with webhooks; delivers them without slowing anybody.

Data flow: the app actor (and channel actors, for ``cache_miss`` and
``subscription_count``) ``tell`` it a :class:`Hook` holding a Pusher event
(``transport.webhooks``), or a :class:`ClientFrame` (a client event's
finished frame, decoded here so the app actor's hot path does no JSON).
The actor holds ``channel_vacated`` / ``member_removed`` for the app's
``webhook_delay_seconds`` (a :class:`~transport.webhooks.Delayer`: a quick
return cancels both), drops what tells the app nothing new
(:class:`~transport.webhook_ledger.Announced`), then queues each event for
every webhook that wants it (``actors.webhook_sender``: a few lanes per
URL, order kept per channel).

On a cluster, the shared events (occupied, vacated, added, removed) are
worked out by every node from its replica, and held by every node for the
same delay; only the leader (``transport.webhook_ledger.choose_leader``)
queues them. It tells the others what it queued and what it finished
(:class:`~transport.webhook_ledger.WebhookLog`, batched every
:data:`LOG_BATCH_SECONDS`); the others keep, in a
:class:`~transport.webhook_ledger.Ledger`, what they would have to send in
its place. When the leader dies or stops, the next one sends what it had
queued and not finished, then what it had worked out that nobody queued,
then goes on from its own timers. Events seen by one node only
(``client_event``, ``cache_miss``, ``subscription_count``) are sent by it.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import gevent.event
import ujson
from pykka import ActorDeadError, Timeout

from transport import webhooks as wh
from transport.config import App
from transport.frames import text_of_frame
from transport.webhook_ledger import Announced, Ledger, WebhookLog, choose_leader, log_entry, shared_event

from .messages import Counted
from .refs import AppRef, MetricsRef, WebhookRef, app_proxy, webhook_proxy
from .restart import hand_over
from .runtime import GeventActor, Timer, call_later, sleep, tell_if_alive
from .webhook_sender import LANES_PER_URL, Sender

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["AppRestarted", "ClientFrame", "Hook", "PeerGone", "WebhookActor", "WebhookTimings", "drain_webhooks"]

log = logging.getLogger(__name__)

LOG_BATCH_SECONDS = 0.02  # what the leader queued and finished goes on the bus at most this late
WINDOW_HEARTBEATS = 5  # a follower keeps what it worked out this many heartbeats (a dead leader is noticed in 4)


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


class PeerGone(NamedTuple):
    """Node ``node`` left the cluster (died or stopped): what it queued waits for the next leader."""

    node: str


class AppRestarted:
    """The app actor died and a fresh one starts: what this node knew of its subscribers is gone."""


class _Due:
    """The delay timer fired."""


class _Tick:
    """Look at who leads (a node that joined may have settled) and forget what is too old."""


class _FlushLog:
    """Send what this leader queued and finished since the last flush."""


class WebhookActor(GeventActor):
    """Delivers one app's webhooks (see the module docstring)."""

    def __init__(
        self,
        app: App,
        metrics: MetricsRef,
        timings: WebhookTimings | None = None,
        queue_limit: int = 10_000,
        cluster: Cluster | None = None,
        lanes: int = LANES_PER_URL,
    ) -> None:
        super().__init__()
        self.app = app
        self.metrics = metrics
        self.timings = timings or WebhookTimings()
        self.queue_limit = queue_limit
        self.lanes = lanes
        self.cluster = cluster if cluster is not None and not cluster.solo else None
        beat = self.cluster.heartbeat_interval if self.cluster is not None else 0.0
        self.ledger = Ledger(WINDOW_HEARTBEATS * beat)
        # A node leads only once it has been on the bus longer than a follower
        # keeps its own decisions and than the delay: by then it holds every
        # timer that matters and nothing it learnt while catching up is pending.
        self.settle = max(self.ledger.window, app.webhook_delay_seconds) + beat
        self._restart_args = (app, metrics, timings, queue_limit, cluster, lanes)
        self.leading = self.cluster is None
        self.delayer = wh.Delayer(app.webhook_delay_seconds)
        self.announced = Announced()
        self.senders: list[Sender] = []
        self.stopping = False
        self.stopped = gevent.event.Event()  # set with stopping: wakes the senders waiting to retry
        self.handing_over = False  # stopping, and another node sends the shared events from now on
        self._seq = itertools.count(1)
        self._queued_log: list[tuple[int, str, str, str | None]] = []
        self._finished_log: list[tuple[int, int]] = []
        self._log_timer: Timer | None = None
        self._timer: Timer | None = None
        self._timer_due: float | None = None
        self._tick_timer: Timer | None = None

    def on_start(self) -> None:
        self.senders = [Sender(self, hook, i, self.lanes) for i, hook in enumerate(self.app.webhooks)]
        if self.cluster is not None:
            self._tick()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Hook):
            self.offer(message.event)
        elif isinstance(message, ClientFrame):
            self._client_event(message)
        elif isinstance(message, WebhookLog):
            self._heard(message)
        elif isinstance(message, PeerGone):
            self.ledger.node_gone(message.node, time.monotonic())
            self._leads()
        elif isinstance(message, AppRestarted):
            for event in self.announced.ends():  # those who come back within the delay cancel them
                self.offer(event)
        elif isinstance(message, _Due):
            self._timer = self._timer_due = None
            for event in self.delayer.due(time.monotonic()):
                self._release(event)
            self._schedule()
        elif isinstance(message, _Tick):
            self._tick()
        elif isinstance(message, _FlushLog):
            self._log_timer = None
            self._flush_log()
        else:
            return super().on_receive(message)
        return None

    def offer(self, event: dict[str, Any]) -> None:
        """Deliver ``event`` to every webhook that wants it (vacated / removed after the delay)."""
        for released in self.delayer.offer(event, time.monotonic()):
            self._release(released)
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

    def _wanted(self, event: dict[str, Any]) -> tuple[int, ...]:
        return tuple(sender.index for sender in self.senders if sender.hook.wants(event))

    def _release(self, event: dict[str, Any]) -> None:
        """``event`` is due now: queue it, or, for a shared one this node does not lead, keep it in the ledger."""
        if event["name"] not in wh.SHARED:
            for index in self._wanted(event):
                self.senders[index].put(event)
            return
        if not self.announced.admit(event):
            return  # the app knows already (a second occupied after a restart, say)
        hooks = self._wanted(event)
        if not hooks:
            return
        if self._leads():
            self._queue_shared(event, hooks)
        else:
            self.ledger.decided(event, hooks, time.monotonic())

    def _queue_shared(self, event: dict[str, Any], hooks: tuple[int, ...]) -> None:
        token = None
        if self.cluster is not None:
            token = next(self._seq)
            self._queued_log.append(log_entry(token, event))
            self._schedule_log()
        for index in hooks:
            self.senders[index].put(event, token)

    # --- who leads -------------------------------------------------------------------

    def _leads(self) -> bool:
        """True if this node sends the shared events now; on becoming the leader, it takes over."""
        if self.cluster is None:
            return True
        if self.handing_over:
            return False
        me = self.cluster.node_id
        leads = choose_leader(self.cluster.uptimes(), self.settle, self.cluster.heartbeat_interval) == me
        if leads != self.leading:
            self.leading = leads
            log.info("node %s %s the shared webhooks of app %s", me, "now sends" if leads else "no longer sends",
                     self.app.id)
        if leads:
            taken = self.ledger.take_over(time.monotonic())
            if taken:
                log.info("node %s took over %d webhook event(s) of app %s that no live node had sent", me,
                         len(taken), self.app.id)
            for event, hooks in taken:
                self._queue_shared(event, hooks)
        return leads

    def _tick(self) -> None:
        assert self.cluster is not None
        self.ledger.expire(time.monotonic())
        self._leads()
        self._tick_timer = call_later(self.cluster.heartbeat_interval, tell_if_alive, self.actor_ref, _Tick())

    def _heard(self, message: WebhookLog) -> None:
        """Another node's log: what it queued (so we need not send it) and what it finished."""
        now = time.monotonic()
        for seq, name, channel, user_id in message.queued:
            event = shared_event(name, channel, user_id)
            self.ledger.queued(message.origin, seq, event, self._wanted(event), now)
        for seq, hook in message.finished:
            self.ledger.finished(message.origin, seq, hook)

    def finished(self, token: int, hook: int) -> None:
        """A sender is done with shared event ``token`` for webhook ``hook``: the others may forget it."""
        if self.cluster is not None:
            self._finished_log.append((token, hook))
            self._schedule_log()

    def _schedule_log(self) -> None:
        if self._log_timer is None and not self.stopping:
            self._log_timer = call_later(LOG_BATCH_SECONDS, tell_if_alive, self.actor_ref, _FlushLog())

    def _flush_log(self) -> None:
        if self.cluster is None or not (self._queued_log or self._finished_log):
            return
        queued, self._queued_log = tuple(self._queued_log), []
        finished, self._finished_log = tuple(self._finished_log), []
        self.cluster.send(WebhookLog(self.cluster.node_id, self.app.id, queued, finished))

    # --- timers, counts, shutdown ----------------------------------------------------

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
        return len(self.delayer) + sum(sender.pending() for sender in self.senders)

    def status(self) -> dict[str, Any]:
        """Counts for tools and tests: whether this node leads, what it holds, queues, keeps for the leader."""
        return {
            "leading": self.leading,
            "announced": len(self.announced),
            "held": len(self.delayer),
            "queued": sum(sender.pending() for sender in self.senders),
            "waiting": self.ledger.waiting(),
            "unfinished": self.ledger.unfinished(),
            "settle": self.settle,
        }

    def drain(self, timeout: float) -> tuple[int, int]:
        """Shutdown: deliver what is queued within ``timeout`` s; ``(not delivered, left to the next leader)``.

        A node alone sends what it holds for the delay at once. A node of a
        cluster with other live nodes does not: they hold the same events,
        and the next leader decides them after the delay (a client that
        reconnects to another node meanwhile cancels them); a shared event it
        could not send in time is sent by the next leader too. Retries stop
        being scheduled: a failing attempt now is given up (or left over).
        """
        self.stopping = True
        self.stopped.set()
        if self.cluster is not None and self.cluster.peers:
            held = len(self.delayer) if self.leading else 0
            self.handing_over = True
        else:
            held = 0
            for event in self.delayer.flush():
                self._release(event)
        deadline = time.monotonic() + timeout
        while any(sender.pending() for sender in self.senders) and time.monotonic() < deadline:
            sleep(0.01)
        self._flush_log()  # what was finished meanwhile: the next leader does not send it again
        shared = sum(sender.pending_shared() for sender in self.senders) if self.handing_over else 0
        return sum(sender.pending() for sender in self.senders) - shared, held + shared

    def on_stop(self) -> None:
        for timer in (self._timer, self._tick_timer, self._log_timer):
            if timer is not None:
                timer.kill(block=False)
        for sender in self.senders:
            sender.kill()

    def on_died(self, reason: str) -> None:
        """Died of a bug: a fresh actor takes over at the same ref (the app's actors hold it; it is
        re-pointed here, before anyone can tell it more), and one line says what was lost."""
        try:
            lost = str(self.pending())
        except Exception:  # the bug may have broken the counts too: the line says "some"
            log.debug("webhook actor of app %s: its pending count failed", self.app.id, exc_info=True)
            lost = "some"
        self.on_stop()
        if self.stopping:  # the node is draining it: nothing to restore
            log.error("webhook actor of app %s died during shutdown: %s; %s event(s) not delivered", self.app.id,
                      reason, lost)
            return
        hand_over(self, WebhookActor.start(*self._restart_args))  # with what was queued behind the crash
        log.error("webhook actor of app %s died: %s; restarted, %s webhook event(s) it held were lost", self.app.id,
                  reason, lost)


def drain_webhooks(webhook_actors: dict[str, WebhookRef], app_actors: dict[str, AppRef], deadline: float) -> None:
    """Node shutdown, on its hub: drain every app's webhook actor by ``deadline``, log what is left, stop them.

    A node alone sends the held ones (vacated / removed) at once; a node with
    live peers leaves them to the next leader (:meth:`WebhookActor.drain`).
    """
    for app_id, ref in list(webhook_actors.items()):
        app_ref = app_actors.get(app_id)
        try:
            # The clients' leaves are still on their way to the channels:
            # wait (bounded) until the channels' vacated events are out.
            while app_ref is not None and app_proxy(app_ref).channels_info().get(timeout=_left(deadline)):
                if time.monotonic() >= deadline:
                    break
                sleep(0.02)
            undelivered, handed = webhook_proxy(ref).drain(_left(deadline)).get(timeout=_left(deadline) + 1)
        except (ActorDeadError, Timeout):
            undelivered, handed = -1, 0
        if undelivered:
            log.warning("app %s: %s webhook event(s) could not be delivered before shutdown", app_id,
                        "some" if undelivered < 0 else undelivered)
        if handed:
            log.info("app %s: %d webhook event(s) left to the cluster's next leader", app_id, handed)
        ref.stop(block=False)
    webhook_actors.clear()


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.01)  # asks need a positive timeout

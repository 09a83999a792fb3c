"""The channel actor: owns the subscriber set of one channel.

A broadcast arrives as one :class:`~actors.messages.Broadcast` holding the
frame encoded once for everybody; the actor offers those same bytes to each
subscriber's writer. ``offer`` never blocks (a slow socket queues in its own
bounded buffer), so the loop costs what the sends cost, whatever the number
of subscribers. Counts go to the metrics actor once per broadcast (with
``tell_if_alive``: should the metrics actor die, counts are lost, not deliveries).

Presence channels also own their members (``actors.channel_presence``);
cache channels keep their last event for new subscribers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from transport import names, protocol, webhooks
from transport.config import App
from transport.writer import Offer

from .channel_presence import PresenceMembers
from .messages import (
    Barrier,
    Broadcast,
    ChannelCounts,
    ChannelDied,
    ChannelEmpty,
    FanoutDone,
    Join,
    Leave,
    LeaveMany,
    MemberDecided,
    Relay,
    RemoteChanges,
    Sent,
    SubscriptionCount,
)
from .refs import AppRef, MetricsRef, WebhookRef
from .runtime import Timer, call_later, tell_if_alive
from .shared_loop import SharedLoopActor
from .webhooks import Hook

__all__ = ["ChannelActor"]

log = logging.getLogger(__name__)

CACHE_TTL_SECONDS = 30 * 60


class _Tick:
    """A timer of this channel fired (cache expiry)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what


def _offer_each(offers: Iterable[Offer], frame: bytes, skip: Offer | None) -> int:
    """The fan-out loop: one ``offer`` per subscriber; how many went out now."""
    sent = 0
    if skip is None:
        for offer in offers:
            sent += offer(frame)
    else:
        for offer in offers:
            if offer is not skip:
                sent += offer(frame)
    return sent


class _Rest(NamedTuple):
    """The part of a big fan-out still to send, handled before anything else queued."""

    offers: list[Offer]
    start: int
    frame: bytes
    skip: Offer | None
    sent: int
    report: Callable[[int], None]


class ChannelActor(PresenceMembers, SharedLoopActor):
    """One channel of one app; started and retired by that app's actor.

    A :class:`~actors.shared_loop.SharedLoopActor`: an idle channel holds no
    greenlet, and a big fan-out is sent in slices, the rest handed back to the
    shared loop (:meth:`run_next`) instead of blocking it.
    """

    # Leaves after a mass disconnect wait behind live work (order within the channel is kept).
    background_messages = SharedLoopActor.background_messages | {Leave, LeaveMany}

    fanout_slice = 4096  # subscribers served per turn of the hub (see broadcast)

    def __init__(
        self,
        app: App,
        name: str,
        app_actor: AppRef,
        metrics: MetricsRef,
        present: dict[str, Any] | None = None,
        webhooks: WebhookRef | None = None,
        clustered: bool = False,
    ) -> None:
        super().__init__()
        self.webhooks = webhooks  # the app's WebhookActor (cache_miss), or None
        # Presence on a cluster: ``present`` is every node's members at this point
        # of the bus's order, kept up to date by the app actor (RemoteChanges).
        self._presence_members(present, clustered)
        self.app = app
        self.name = name
        self.app_actor = app_actor
        self.metrics = metrics
        # socket_id -> the writer's bound ``offer``: the fan-out loop calls it
        # directly, without an attribute lookup per subscriber.
        self.offers: dict[str, Offer] = {}
        self.joins = 0
        self.presence = names.channel_kind(name) is names.ChannelKind.PRESENCE
        self.cache = names.is_cache_channel(name)
        self.cached: bytes | None = None
        self._cache_timer: Timer | None = None
        self._succeeded = protocol.event_frame(name, "pusher_internal:subscription_succeeded", {})

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Broadcast:
            self.broadcast(message)
        elif kind is Join:
            self.join(message)
        elif kind is Leave:
            self.leave(message.socket_id)
        elif kind is LeaveMany:
            self.leave_many(message.socket_ids)
        elif kind is Barrier:
            return True
        elif kind is Relay:
            self.relay(message)
        elif kind is RemoteChanges:
            self.remote_changed(message.changes)
        elif kind is MemberDecided:
            self.decided(message)
        elif kind is _Rest:
            self._deliver_rest(message)
        elif kind is SubscriptionCount:  # the cluster's count (the app actor throttles it)
            data = {"subscription_count": message.total}
            self._fan_out(protocol.event_frame(self.name, "pusher_internal:subscription_count", data))
        elif kind is _Tick:
            self._tick(message.what)
        else:
            return super().on_receive(message)
        return None

    def on_stop(self) -> None:
        if self._cache_timer is not None:
            self._cache_timer.kill(block=False)

    def on_died(self, reason: str) -> None:
        """Died of a bug: tell the app actor who was subscribed, so it can have them resubscribe."""
        self.on_stop()
        sockets = dict.fromkeys(self.offers)
        sockets.update(dict.fromkeys(self.waiting_sockets))  # waiting for the cluster's answer
        # Joins already queued here will never be answered: those clients must reconnect too.
        sockets.update(dict.fromkeys(m.socket_id for m in self.pending_messages() if type(m) is Join))
        died = ChannelDied(self.name, self.actor_ref, tuple(sockets), reason)
        if not tell_if_alive(self.app_actor, died):
            log.error("channel actor %s of app %s died: %s (its app actor is gone too)", self.name, self.app.id, reason)

    # --- the hot path ----------------------------------------------------------

    def broadcast(self, message: Broadcast) -> None:
        """Offer the pre-encoded frame to every subscriber but the excluded one."""
        frame = message.frame
        skip = self.offers.get(message.except_socket_id) if message.except_socket_id else None
        if self.cache:
            self._keep(frame)
        app_id, broadcast_id, metrics = self.app.id, message.broadcast_id, self.metrics

        def report(sent: int) -> None:
            tell_if_alive(metrics, FanoutDone(app_id, broadcast_id, sent, sent * len(frame), time.monotonic()))

        self._deliver(frame, skip, report)

    def relay(self, message: Relay) -> None:
        """A client event: to everyone else, and only from a subscriber."""
        if message.socket_id not in self.offers:
            return  # the sender left (or never joined) before its event got here
        self._fan_out(message.frame, self.offers[message.socket_id])

    def _deliver(self, frame: bytes, skip: Offer | None, report: Callable[[int], None]) -> None:
        """Offer ``frame`` to every subscriber but ``skip``; ``report(sent)`` once all were offered.

        A big channel is served in slices of ``fanout_slice`` subscribers: the
        rest goes back to the shared loop as a :class:`_Rest` that this actor
        handles before anything else, so one huge broadcast does not keep the
        hub (the other channels, pings, reads, accepts) waiting for its whole
        send loop, and nothing else touches this channel meanwhile: per
        subscriber, frames stay in order.
        """
        if len(self.offers) <= self.fanout_slice:
            report(_offer_each(self.offers.values(), frame, skip))
            return
        self._deliver_rest(_Rest(list(self.offers.values()), 0, frame, skip, 0, report))

    def _deliver_rest(self, rest: _Rest) -> None:
        end = rest.start + self.fanout_slice
        sent = rest.sent + _offer_each(rest.offers[rest.start : end], rest.frame, rest.skip)
        if end < len(rest.offers):
            self.run_next(rest._replace(start=end, sent=sent))
        else:
            rest.report(sent)

    # --- membership ------------------------------------------------------------

    def join(self, message: Join) -> None:
        """Add a subscriber and confirm on its own socket (before any event)."""
        self.joins += 1
        socket_id, offer = message.socket_id, message.writer.offer
        if socket_id in self.offers:
            self._send(offer, self._succeeded_frame())  # a repeated subscribe: confirm again
            return
        member = message.member
        if self.presence and member is not None:
            added = self._add_member(message, member)
            if added is None:
                return  # its user's first socket here: confirmed when the cluster agrees
            if not added:
                self._maybe_empty()
                return
        self.offers[socket_id] = offer
        self._report()  # before the confirmation: a query made after it sees this join
        self._greet(offer)

    def _greet(self, offer: Offer) -> None:
        """The confirmation, then a cache channel's last event (or its miss)."""
        self._send(offer, self._succeeded_frame())
        if self.cache:
            self._send(offer, self.cached or protocol.event_frame(self.name, "pusher:cache_miss", {}))
            if self.cached is None and self.webhooks is not None:
                tell_if_alive(self.webhooks, Hook(webhooks.cache_miss(self.name)))

    def leave(self, socket_id: str) -> None:
        """Remove a subscriber; an empty channel asks its app actor to retire it."""
        if self._remove(socket_id):
            self._left()

    def leave_many(self, socket_ids: tuple[str, ...]) -> None:
        """Remove several subscribers at once: one report and one count for all of them."""
        removed = False
        for socket_id in socket_ids:
            removed = self._remove(socket_id) or removed
        if removed:
            self._left()

    def _remove(self, socket_id: str) -> bool:
        if self.offers.pop(socket_id, None) is None:
            return self._stop_waiting(socket_id) if self.waiting_sockets else False
        if self.presence:
            self._remove_member(socket_id)
        return True

    def _left(self) -> None:
        if self.offers or self.cached is not None:
            self._report()
        else:
            self._maybe_empty()  # "empty" says the counts too: one message, not two

    def _report(self) -> None:
        counts = ChannelCounts(self.name, self.actor_ref, len(self.offers), self._user_count())
        tell_if_alive(self.app_actor, counts)

    def _maybe_empty(self) -> None:
        if not self.offers and self.cached is None and not self.waiting:
            tell_if_alive(self.app_actor, ChannelEmpty(self.name, self.joins))

    # --- answers for the HTTP API and tests ----------------------------------

    def subscription_count(self) -> int:
        """How many connections are subscribed."""
        return len(self.offers)

    def info(self) -> dict[str, int]:
        """``subscription_count``, and ``user_count`` for presence channels."""
        out: dict[str, int] = {"subscription_count": len(self.offers)}
        if self.presence:
            out["user_count"] = self._user_count()
        return out

    # --- helpers -----------------------------------------------------------------

    def _succeeded_frame(self) -> bytes:
        return self._members_frame() if self.presence else self._succeeded

    def _send(self, offer: Offer, frame: bytes) -> None:
        if offer(frame):
            tell_if_alive(self.metrics, Sent(self.app.id, 1, len(frame)))

    def _fan_out(self, frame: bytes, skip: Offer | None = None) -> None:
        # Frames of our own (presence changes, counts, client events), counted as sent.
        app_id, metrics = self.app.id, self.metrics

        def report(sent: int) -> None:
            if sent:
                tell_if_alive(metrics, Sent(app_id, sent, sent * len(frame)))

        self._deliver(frame, skip, report)

    def _keep(self, frame: bytes) -> None:
        self.cached = frame
        if self._cache_timer is not None:
            self._cache_timer.kill(block=False)
        self._cache_timer = call_later(CACHE_TTL_SECONDS, self._tell_tick, "cache")

    def _tell_tick(self, what: str) -> None:
        tell_if_alive(self.actor_ref, _Tick(what))

    def _tick(self, what: str) -> None:
        if what == "cache":
            self.cached, self._cache_timer = None, None
            self._maybe_empty()

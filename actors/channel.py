"""The channel actor: owns the subscriber set of one channel.

A broadcast arrives as one :class:`~actors.messages.Broadcast` holding the
frame encoded once for everybody; the actor offers those same bytes to each
subscriber's writer. ``offer`` never blocks (a slow socket queues in its own
bounded buffer), so the loop costs what the sends cost, whatever the number
of subscribers. Counts go to the metrics actor once per broadcast.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from transport import protocol

from .messages import Broadcast, ChannelEmpty, FanoutDone, Join, Leave, Sent
from .runtime import GeventActor, tell_if_alive

__all__ = ["ChannelActor"]

log = logging.getLogger(__name__)


class ChannelActor(GeventActor):
    """One channel of one app; started and stopped by that app's actor."""

    def __init__(self, app: Any, name: str, app_actor: Any, metrics: Any) -> None:
        super().__init__()
        self.app = app
        self.name = name
        self.app_actor = app_actor
        self.metrics = metrics
        # socket_id -> the writer's bound ``offer``: the fan-out loop calls it
        # directly, without an attribute lookup per subscriber.
        self.offers: dict[str, Any] = {}
        self.joins = 0
        self._succeeded = protocol.event_frame(name, "pusher_internal:subscription_succeeded", {})

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Broadcast:
            self.broadcast(message)
        elif kind is Join:
            self.join(message)
        elif kind is Leave:
            self.leave(message.socket_id)
        else:
            return super().on_receive(message)
        return None

    def broadcast(self, message: Broadcast) -> None:
        """Offer the pre-encoded frame to every subscriber but the excluded one."""
        frame = message.frame
        sent = 0
        skip = self.offers.get(message.except_socket_id) if message.except_socket_id else None
        if skip is None:
            for offer in self.offers.values():
                sent += offer(frame)
        else:
            for offer in self.offers.values():
                if offer is not skip:
                    sent += offer(frame)
        self.metrics.tell(
            FanoutDone(self.app.id, message.broadcast_id, sent, sent * len(frame), time.monotonic())
        )

    def join(self, message: Join) -> None:
        """Add a subscriber and confirm on its own socket (before any event)."""
        self.joins += 1
        offer = message.writer.offer
        self.offers[message.socket_id] = offer
        if offer(self._succeeded):
            self.metrics.tell(Sent(self.app.id, 1, len(self._succeeded)))

    def leave(self, socket_id: str) -> None:
        """Remove a subscriber; an empty channel asks its app actor to retire it."""
        if self.offers.pop(socket_id, None) is not None and not self.offers:
            tell_if_alive(self.app_actor, ChannelEmpty(self.name, self.joins))

    def subscription_count(self) -> int:
        """How many connections are subscribed (asked by the HTTP API and tests)."""
        return len(self.offers)

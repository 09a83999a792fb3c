"""The app actor: owns one app's table of channels.

Every subscribe, unsubscribe and publish for an app passes through its app actor, which finds or
starts the channel actor and forwards. Because both joins and broadcasts take this one path, a
channel sees them in the order they were made. A channel actor that empties reports how many joins
it saw; if that equals the joins forwarded to it, no join is in flight and the channel is retired,
otherwise the pending join keeps it alive.

Supervision: the app actor is the parent of its channel actors and learns of each connection
actor's end. A channel actor that dies of a bug reports :class:`~actors.messages.ChannelDied`; the
app actor logs it on one line, forgets the channel (the next join starts a fresh actor) and its
presence members (they leave, on every node), and closes its subscribers with 4200, so their
clients reconnect and resubscribe at once. An app actor that dies closes its connections with
4200, stops its channels and calls its own supervisor (the node), which starts a fresh one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from transport import cluster as wire
from transport import names, protocol
from transport.config import App
from transport.frames import text_frame, text_of_frame
from transport.presence import RemotePresence

from .app_cluster import ClusterShare
from .app_counts import CountShare
from .app_presence import MemberLate, PresenceShare
from .app_webhooks import RemoteOccupancy, WebhookShare
from .channel import ChannelActor
from .cluster import Cluster
from .messages import (
    Broadcast,
    ChannelCounts,
    ChannelDied,
    ChannelEmpty,
    Connected,
    ConnectionGone,
    FanoutStarted,
    Join,
    Leave,
    LeaveAll,
    LeaveMany,
    LocalMember,
    NodeGone,
    Publish,
    PublishFrames,
    Relay,
    RemoteMember,
    RemotePublish,
    RemoteSync,
    SignedIn,
    Terminate,
    TerminateUser,
)
from .refs import ChannelRef, ConnectionRef, MetricsRef, WebhookRef
from .runtime import GeventActor, PriorityInbox, tell_if_alive
from .webhooks import ClientFrame

__all__ = ["AppActor"]

log = logging.getLogger(__name__)

LEAVE_BATCH = 512  # disconnects held before their leaves go out, when more keep coming


class _Entry:
    __slots__ = ("joins", "leaving", "ref", "subscriptions", "users")

    def __init__(self, ref: ChannelRef) -> None:
        self.ref = ref
        self.joins = 0
        self.subscriptions = 0  # as the channel last reported (ChannelCounts)
        self.users = 0
        self.leaving: list[str] | None = None  # disconnected sockets whose leave is not sent yet


class AppActor(WebhookShare, PresenceShare, ClusterShare, CountShare, GeventActor):
    """The channel directory of one app on this node."""

    def __init__(
        self,
        app: App,
        metrics: MetricsRef,
        supervisor: Callable[[str, str], None] | None = None,
        cluster: Cluster | None = None,
        webhooks: WebhookRef | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.webhooks = webhooks  # the app's WebhookActor, or None: no webhooks, no cost
        self.remote_occupied: dict[str, set[str]] = {}  # channel -> other nodes occupying it (webhooks)
        self.metrics = metrics
        self.cluster = cluster  # None for a node alone
        self.origin = cluster.node_id if cluster is not None else ""
        # Presence: this node's members (what it announces); on a cluster, every node's (actors.app_presence).
        self.local_members: dict[str, dict[str, Any]] = {}  # channel -> user_id -> user_info
        self.remote = RemotePresence()
        self._presence_init()
        self.supervisor = supervisor  # supervisor(app_id, reason), called on the hub if this actor dies
        self.channels: dict[str, _Entry] = {}
        self.connections: dict[str, ConnectionRef] = {}  # socket_id -> its ConnectionActor
        self.users: dict[str, set[str]] = {}  # signed-in user id -> socket ids
        self.socket_users: dict[str, str] = {}  # socket id -> signed-in user id
        self._next_broadcast = 0
        self._leaving: set[str] = set()  # channels with leaves held back
        self._held = 0  # how many

    def _create_actor_inbox(self) -> PriorityInbox:  # type: ignore[override]
        # Cleanup after a connection or a channel waits while joins, publishes
        # and questions are queued: after 15,000 disconnects a new client's
        # subscribe is not stuck behind 30,000 goodbyes. None of those depends
        # on the cleanup (joins are counted, held leaves go first per channel).
        return PriorityInbox((ConnectionGone, ChannelEmpty, LeaveAll))

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is PublishFrames:
            self.publish_frames(message.frames, message.except_socket_id, message.started, True)
        elif kind is Publish:
            self.publish(message)
        elif kind is RemotePublish:
            frames = tuple((name, text_frame(event)) for name, event in message.frames)
            self.publish_frames(frames, message.except_socket_id, time.monotonic(), False)
        elif kind is LocalMember:
            self._local_member(message)
        elif kind is RemoteMember:
            self._remote_member(message)
        elif kind is MemberLate:
            self._member_late(message.seq)
        elif kind is RemoteSync:
            self._remote_changes(self.remote.replace_node(message.node, message.members))
        elif kind is NodeGone:
            self._remote_changes(self.remote.drop_node(message.node))
            self._occupancy_node_gone(message.node)
            self._counts_node_gone(message.node)
        elif kind is RemoteOccupancy:
            self._remote_occupancy(message)
        elif kind is wire.WebhookLog:
            if self.webhooks is not None:  # what the webhook leader queued and finished
                tell_if_alive(self.webhooks, message)
        elif kind is TerminateUser:
            self._terminate_local(message.user_id)
        elif kind is Join:
            self._forward(message.channel, message, create=True)
        elif kind is Leave:
            self._leave(message.channel, message.socket_id)
        elif kind is LeaveAll:
            self._hold_leaves(message)
        elif kind is ChannelCounts:
            entry = self.channels.get(message.channel)
            if entry is not None and entry.ref is message.ref:
                before = entry.subscriptions
                entry.subscriptions, entry.users = message.subscriptions, message.users
                self._local_occupancy(message.channel, before, message.subscriptions)
                self._count_moved(message.channel, before, message.subscriptions)
        elif kind is ChannelEmpty:
            self._retire(message)
        elif kind is Connected:
            self.connections[message.socket_id] = message.connection
        elif kind is ConnectionGone:
            if message.channels:
                self._hold_leaves(message)
            self.connections.pop(message.socket_id, None)
            self._forget_user(message.socket_id)
            if message.reason is not None:
                log.error(
                    "connection actor %s of app %s died: %s; closed with 1011",
                    message.socket_id, self.app.id, message.reason,
                )
        elif kind is ChannelDied:
            self._channel_died(message)
        elif kind is Relay:
            self._forward(message.channel, message)
            if self.webhooks is not None:
                tell_if_alive(self.webhooks, ClientFrame(message.channel, message.frame, message.socket_id))
            if self.cluster is not None and not self.cluster.solo:
                # A client event reaches the channel's subscribers on every node.
                event = (message.channel, text_of_frame(message.frame))
                self.cluster.send(wire.Publish(self.origin, self.app.id, (event,), message.socket_id))
        elif kind is SignedIn:
            self._forget_user(message.socket_id)
            self.users.setdefault(message.user_id, set()).add(message.socket_id)
            self.socket_users[message.socket_id] = message.user_id
        else:
            return super().on_receive(message)
        return None

    def _handle_receive(self, message: Any) -> Any:
        try:
            return super()._handle_receive(message)
        finally:
            if self._held and not self.actor_inbox.qsize():
                self._send_leaves()  # the burst is over (or was one disconnect): send what is held

    def publish(self, message: Publish) -> None:
        """Encode the event once per channel, then as :meth:`publish_frames` (accepted here)."""
        frames = tuple((name, protocol.event_frame(name, message.event, message.data, message.user_id))
                       for name in message.channels)
        self.publish_frames(frames, message.except_socket_id, message.started, True)

    def publish_frames(self, frames: Sequence[tuple[str, bytes]], except_socket_id: str | None, started: float,
                       accepted: bool) -> None:
        """Hand each channel its finished frame (encoded once, at the edge or by the origin node).

        ``accepted``: this node accepted it, so it counts it (once for the cluster) and times its
        fan-out from the call, even with no subscriber here; another node's is timed from its arrival.
        """
        for name, _ in frames:
            if name not in self.channels and names.is_cache_channel(name):
                self._channel(name, create=True)  # keeps the event for later subscribers
        targets = [(name, frame) for name, frame in frames if name in self.channels]
        self._next_broadcast += 1
        bid = self._next_broadcast
        if targets or accepted:
            tell_if_alive(self.metrics, FanoutStarted(self.app.id, bid, len(targets), started, accepted))
        for name, frame in targets:
            self._forward(name, Broadcast(frame, except_socket_id, bid, started))

    def connection_count(self) -> int:
        """Open connections of this app on this node."""
        return len(self.connections)

    def usage(self) -> tuple[int, int]:
        """``(connections, channels)`` of this app on this node, for ``GET /usage``."""
        return len(self.connections), len(self.channels)

    def terminate_all(self, code: int, message: str) -> int:
        """Ask every connection to close with ``code``; returns how many were asked."""
        for ref in list(self.connections.values()):
            tell_if_alive(ref, Terminate(code, message))  # a dead one's ConnectionGone is on the way
        return len(self.connections)

    def terminate_user(self, user_id: str) -> int:
        """Close every connection of a signed-in user (Pusher 4009), on every node; returns how many here."""
        if self.cluster is not None and not self.cluster.solo:
            self.cluster.send(wire.TerminateUser(self.origin, self.app.id, user_id))
        return self._terminate_local(user_id)

    def _terminate_local(self, user_id: str) -> int:
        sockets = list(self.users.get(user_id, ()))
        for socket_id in sockets:
            ref = self.connections.get(socket_id)
            if ref is not None:
                tell_if_alive(ref, Terminate(protocol.UNAUTHORIZED, "Connections terminated for this user"))
        return len(sockets)

    def _forget_user(self, socket_id: str) -> None:
        user_id = self.socket_users.pop(socket_id, None)
        if user_id is not None:
            sockets = self.users[user_id]
            sockets.discard(socket_id)
            if not sockets:
                del self.users[user_id]

    def channel_names(self) -> list[str]:
        """Channels with at least one subscriber (or a join in flight)."""
        return list(self.channels)

    def channels_info(self) -> dict[str, tuple[int, int]]:
        """``{channel: (subscriptions, users)}`` for every occupied channel, from the counts kept here.

        The HTTP API asks this once instead of asking every channel actor.
        """
        self._send_leaves()
        return {name: (e.subscriptions, e.users) for name, e in self.channels.items() if e.subscriptions}

    def channel_info(self, name: str) -> tuple[int, int] | None:
        """``(subscriptions, users)`` of one channel, or None when it is not occupied."""
        self._send_leaves_of(name)
        entry = self.channels.get(name)
        if entry is None or not entry.subscriptions:
            return None
        return entry.subscriptions, entry.users

    def channel_refs(self) -> dict[str, ChannelRef]:
        """Every live channel's actor ref, by name."""
        return {name: entry.ref for name, entry in self.channels.items()}

    def channel_ref(self, name: str) -> ChannelRef | None:
        """The channel's actor ref, or None when nobody is subscribed."""
        entry = self.channels.get(name)
        return entry.ref if entry is not None else None

    def _channel(self, name: str, *, create: bool = False) -> _Entry | None:
        entry = self.channels.get(name)
        if entry is None and create:
            clustered = self.clustered and names.channel_kind(name) is names.ChannelKind.PRESENCE
            remote = self.remote.users(name) if clustered else None  # the members at this point of the order
            ref = ChannelActor.start(self.app, name, self.actor_ref, self.metrics, remote, self.webhooks, clustered)
            entry = self.channels[name] = _Entry(ref)
        return entry

    def _forward(self, name: str, message: object, *, create: bool = False) -> None:
        entry = self._channel(name, create=create)
        if entry is None:
            return
        if entry.leaving is not None:
            self._send_leaves_of(name)  # held leaves first: the channel sees everything in order
        if type(message) is Join:
            entry.joins += 1
        if not tell_if_alive(entry.ref, message):
            # The channel actor died of a bug; its ChannelDied is on the way
            # (and logs it). Drop it now so a join starts a fresh actor.
            log.debug("channel actor for %s is dead; %s not delivered", name, type(message).__name__)
            del self.channels[name]
            if create:
                self._forward(name, message, create=True)

    def _channel_died(self, message: ChannelDied) -> None:
        entry = self.channels.get(message.channel)
        if entry is not None and entry.ref is message.ref:  # not a fresh actor started since
            del self.channels[message.channel]
            self._local_occupancy(message.channel, entry.subscriptions, 0)  # its subscribers come back (or not)
            self._count_moved(message.channel, entry.subscriptions, 0)
            self._members_gone(message.channel)  # closed below: they leave (everywhere), a resubscribe joins anew
        log.error(
            "channel actor %s of app %s died: %s; %d subscribers closed with 4200 to resubscribe",
            message.channel, self.app.id, message.reason, len(message.socket_ids),
        )
        text = f"Channel {message.channel[:40]} restarted after an internal error; reconnect"
        for socket_id in message.socket_ids:
            ref = self.connections.get(socket_id)
            if ref is not None:
                tell_if_alive(ref, Terminate(protocol.RECONNECT, text))

    def _leave(self, channel: str, socket_id: str) -> None:
        self._forward(channel, Leave(channel, socket_id))

    # --- disconnects in batches --------------------------------------------------
    #
    # When thousands of clients drop at once, each one's LeaveAll would be one
    # Leave per channel: a big channel would handle 15,000 messages and report
    # 15,000 counts. Instead, leaves are held while more disconnects keep
    # coming (the inbox is not empty) and sent as one LeaveMany per channel
    # every LEAVE_BATCH disconnects, or as soon as the inbox runs dry. Anything
    # else for a channel (a join, a publish, a query) sends its held leaves first.

    def _hold_leaves(self, message: LeaveAll | ConnectionGone) -> None:
        for name in message.channels:
            entry = self.channels.get(name)
            if entry is None:
                continue
            if entry.leaving is None:
                entry.leaving = []
                self._leaving.add(name)
            entry.leaving.append(message.socket_id)
        self._held += 1
        if self._held >= LEAVE_BATCH:
            self._send_leaves()

    def _send_leaves(self) -> None:
        for name in list(self._leaving):
            self._send_leaves_of(name)
        self._held = 0

    def _send_leaves_of(self, name: str) -> None:
        self._leaving.discard(name)
        entry = self.channels.get(name)
        if entry is None or entry.leaving is None:
            return
        sockets, entry.leaving = tuple(entry.leaving), None
        self._forward(name, LeaveMany(name, sockets))

    def _retire(self, message: ChannelEmpty) -> None:
        entry = self.channels.get(message.channel)
        if entry is None:
            return
        before, entry.subscriptions, entry.users = entry.subscriptions, 0, 0  # an empty channel reports no counts
        self._local_occupancy(message.channel, before, 0)
        self._count_moved(message.channel, before, 0)
        if entry.joins == message.joins:
            del self.channels[message.channel]
            entry.ref.stop(block=False)

    def on_stop(self) -> None:
        for entry in self.channels.values():
            entry.ref.stop(block=False)
        self.channels.clear()

    def on_died(self, reason: str) -> None:
        """Died of a bug: close every connection (4200), stop the channels, tell the supervisor."""
        connections = dict(self.connections)
        for message in self.pending_messages():  # connections this actor never got to hear of
            if type(message) is Connected or type(message) is Join:
                connections[message.socket_id] = message.connection
        for ref in connections.values():
            tell_if_alive(ref, Terminate(protocol.RECONNECT, "Server restarting this app after an internal error"))
        self.connections.clear()
        self.on_stop()
        if self.supervisor is None:
            log.error("app actor %s died: %s; its %d connections were closed", self.app.id, reason, len(connections))
        else:
            self.supervisor(self.app.id, reason)

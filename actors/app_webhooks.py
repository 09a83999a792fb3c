"""The app actor's share of webhooks: which occupancy and member changes are the cluster's.

A mixin of :class:`~actors.app.AppActor`, active only when the app has
webhooks (``self.webhooks`` is the app's
:class:`~actors.webhooks.WebhookActor`; None costs nothing).

Cluster-wide meaning, worked out alike by every node from its replica; the
webhook actor decides which node sends (``actors.webhooks``: the leader, and
the others keep what they would send in its place):

* members: the app actor keeps every node's members (``remote``, the
  registry of ``actors.app_presence``; a node alone: ``local_members``), so
  a user is added when their first socket anywhere joins and removed when
  their last anywhere leaves, in the bus's order.
* occupancy: each node tells the others when one of its channels gets its
  first local subscriber or loses its last (``transport.cluster.Occupancy``);
  every node keeps which other nodes occupy which channel
  (``remote_occupied``), and a channel is occupied while it is occupied
  on any node. A dead node's channels are let go as it is forgotten, and
  the webhook actor is told (:class:`~actors.webhooks.PeerGone`): if it
  was the leader, the next one sends what it left. A node whose app actor
  restarted lets go of its channels the same way (an ``Occupancy`` with no
  channel) and asks for the others' state again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from transport import cluster as wire
from transport import webhooks as wh
from transport.config import App
from transport.presence import Change, RemotePresence

from .messages import LocalMember
from .refs import WebhookRef
from .runtime import tell_if_alive
from .webhooks import Hook, PeerGone

if TYPE_CHECKING:
    from .app import _Entry
    from .cluster import Cluster

__all__ = ["RemoteOccupancy", "WebhookShare"]


class RemoteOccupancy(NamedTuple):
    """Another node's channel got its first local subscriber (``occupied``) or lost its last."""

    node: str
    channel: str
    occupied: bool


class WebhookShare:
    """Occupancy and member webhooks with their cluster-wide meaning, for the app actor."""

    app: App
    channels: dict[str, _Entry]
    cluster: Cluster | None
    local_members: dict[str, dict[str, Any]]  # channel -> user_id -> user_info (JSON)
    origin: str
    remote: RemotePresence
    webhooks: WebhookRef | None
    remote_occupied: dict[str, set[str]]
    clustered: bool  # presence goes through the bus (``actors.app_presence``)

    def _tell_hook(self, event: dict[str, Any]) -> None:
        if self.webhooks is not None:
            tell_if_alive(self.webhooks, Hook(event))

    # --- occupancy -------------------------------------------------------------

    def _local_occupancy(self, name: str, before: int, after: int) -> None:
        """This node's subscriptions of ``name`` went from ``before`` to ``after``."""
        if self.webhooks is None or (before > 0) == (after > 0):
            return
        occupied = after > 0
        if self.cluster is not None and not self.cluster.solo:
            self.cluster.send(wire.Occupancy(self.origin, self.app.id, name, occupied))
        if not self.remote_occupied.get(name):  # no other node holds it: the cluster's state changed
            self._tell_hook(wh.channel_occupied(name) if occupied else wh.channel_vacated(name))

    def occupied_channels(self) -> list[str]:
        """This node's occupied channels, re-announced on a sync (apps with webhooks only)."""
        if self.webhooks is None:
            return []
        return [name for name, entry in self.channels.items() if entry.subscriptions > 0]

    def _locally_occupied(self, name: str) -> bool:
        entry = self.channels.get(name)
        return entry is not None and entry.subscriptions > 0

    def _remote_occupancy(self, message: RemoteOccupancy) -> None:
        if self.webhooks is None:
            return  # another node's copy of the app has webhooks, ours not (yet): a config being rolled out
        if not message.channel:  # that node's app actor restarted: it holds none of them any more
            self._occupancy_node_gone(message.node, gone=False)
            return
        nodes = self.remote_occupied.setdefault(message.channel, set())
        was = bool(nodes)
        if message.occupied:
            nodes.add(message.node)
        else:
            nodes.discard(message.node)
            if not nodes:
                del self.remote_occupied[message.channel]
        if was != bool(nodes) and not self._locally_occupied(message.channel):
            self._tell_hook(wh.channel_occupied(message.channel) if nodes else wh.channel_vacated(message.channel))

    def _occupancy_node_gone(self, node: str, gone: bool = True) -> None:
        for name in [n for n, nodes in self.remote_occupied.items() if node in nodes]:
            self._remote_occupancy(RemoteOccupancy(node, name, False))
        if self.webhooks is not None and gone:
            tell_if_alive(self.webhooks, PeerGone(node))  # after its vacated / removed: they are held first

    # --- members ---------------------------------------------------------------

    def _local_member(self, message: LocalMember) -> None:
        super()._local_member(message)  # type: ignore[misc]
        if self.webhooks is not None and not self.clustered:  # a node alone: its channels decided
            make = wh.member_added if message.joined else wh.member_removed
            self._tell_hook(make(message.channel, message.user_id))

    def _remote_changes(self, changes: list[Change]) -> None:
        # On a cluster: the registry's changes, in the bus's order (every node's members, ours too).
        super()._remote_changes(changes)  # type: ignore[misc]
        if self.webhooks is None:
            return
        for change in changes:
            make = wh.member_added if change.present else wh.member_removed
            self._tell_hook(make(change.channel, change.user_id))

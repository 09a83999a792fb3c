"""The app actor's share of the cluster: presence across nodes, questions from other nodes.

A mixin of :class:`~actors.app.AppActor` (the state is the app actor's own:
``local_members``, ``remote``, ``channels``), kept apart because it only
matters when nodes are joined (``actors.cluster``): the app actor announces
its members' comings and goings, keeps the replica of everybody else's
(``transport.presence.RemotePresence``), turns replica changes into
``RemoteChanges`` for its presence channels, and answers other nodes' queries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transport import cluster as wire

from .messages import LocalMember, RemoteChanges

__all__ = ["ClusterShare"]


class ClusterShare:
    """Presence replication and cluster queries, for the app actor."""

    app: Any
    channels: dict[str, Any]
    cluster: Any
    connections: dict[str, Any]
    local_members: dict[str, dict[str, Any]]
    origin: str
    remote: Any
    # and the app actor's methods:
    _forward: Callable[[str, Any], None]
    _send_leaves: Callable[[], None]
    occupied_channels: Callable[[], list[str]]
    local_subscription_counts: Callable[[], dict[str, int] | None]

    def _local_member(self, message: LocalMember) -> None:
        members = self.local_members.setdefault(message.channel, {})
        if message.joined:
            members[message.user_id] = message.user_info
        else:
            members.pop(message.user_id, None)
            if not members:
                del self.local_members[message.channel]
        if self.cluster is not None and not self.cluster.solo:
            self.cluster.send(wire.Member(self.origin, self.app.id, message.channel, message.user_id,
                                          message.user_info, message.joined))

    def _remote_changes(self, changes: list[Any]) -> None:
        by_channel: dict[str, list[Any]] = {}
        for change in changes:
            by_channel.setdefault(change.channel, []).append(change)
        for name, group in by_channel.items():
            entry = self.channels.get(name)
            if entry is not None:
                self._forward(name, RemoteChanges(tuple(group)))

    def local_presence(self) -> dict[str, dict[str, Any]]:
        """This node's presence members, {channel: {user_id: user_info}} (for a Sync)."""
        return {name: dict(members) for name, members in self.local_members.items()}

    def sync_state(self) -> tuple[dict[str, dict[str, Any]], list[str], dict[str, int] | None]:
        """What a sync tells the other nodes: presence members, occupied channels, subscription counts."""
        return self.local_presence(), self.occupied_channels(), self.local_subscription_counts()

    def local_users(self, channel: str) -> list[str]:
        """The ids of a presence channel's members on this node."""
        return sorted(self.local_members.get(channel, ()))

    def presence_users(self, channel: str) -> list[str]:
        """The ids of a presence channel's members on every node, from the replicas."""
        return sorted(self.local_members.get(channel, {}).keys() | self.remote.users(channel).keys())

    def presence_user_counts(self) -> dict[str, int]:
        """Members on every node of each presence channel with members anywhere."""
        names_ = self.local_members.keys() | set(self.remote.channels())
        return {name: len(self.local_members.get(name, {}).keys() | self.remote.users(name).keys()) for name in names_}

    def answer(self, query: str, params: dict[str, Any]) -> Any:
        """Another node's question about this node's share (``transport.cluster.Request``)."""
        if query == "channels":
            self._send_leaves()
            return {name: e.subscriptions for name, e in self.channels.items() if e.subscriptions}
        if query == "channel":
            name = str(params.get("channel"))
            entry = self.channels.get(name)
            subscriptions = entry.subscriptions if entry is not None else 0
            if params.get("users"):  # a presence channel: the members here too, as of now
                return {"subscriptions": subscriptions, "users": self.local_users(name)}
            return subscriptions
        if query == "connections":
            return len(self.connections)
        raise ValueError(f"unknown cluster query {query!r}")

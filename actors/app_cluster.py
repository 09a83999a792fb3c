"""The app actor's share of the cluster: its state for a Sync, and questions from other nodes.

A mixin of :class:`~actors.app.AppActor` (the state is the app actor's own:
``local_members``, ``remote``, ``channels``), kept apart because it only
matters when nodes are joined (``actors.cluster``). Presence itself is
``actors.app_presence``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ClusterShare"]


class ClusterShare:
    """Sync state and cluster queries, for the app actor."""

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
    _count_syncing: Callable[[], None]
    local_presence: Callable[[], dict[str, dict[str, Any]]]
    local_users: Callable[[str], list[str]]
    local_users_by_channel: Callable[[], dict[str, list[str]]]
    occupied_channels: Callable[[], list[str]]
    local_subscription_counts: Callable[[], dict[str, int] | None]

    def sync_state(self) -> tuple[dict[str, dict[str, Any]], list[str], dict[str, int] | None]:
        """What a sync tells the other nodes: presence members, occupied channels, subscription counts."""
        self._count_syncing()
        return self.local_presence(), self.occupied_channels(), self.local_subscription_counts()

    def answer(self, query: str, params: dict[str, Any]) -> Any:
        """Another node's question about this node's share (``transport.cluster.Request``)."""
        if query == "channels":
            self._send_leaves()
            subscriptions = {name: e.subscriptions for name, e in self.channels.items() if e.subscriptions}
            if params.get("users"):  # and this node's presence members, as of now
                return {"subscriptions": subscriptions, "users": self.local_users_by_channel()}
            return subscriptions
        if query == "channel":
            name = str(params.get("channel"))
            entry = self.channels.get(name)
            count = entry.subscriptions if entry is not None else 0
            if params.get("users"):  # a presence channel: the members here too, as of now
                return {"subscriptions": count, "users": self.local_users(name)}
            return count
        if query == "connections":
            return len(self.connections)
        raise ValueError(f"unknown cluster query {query!r}")

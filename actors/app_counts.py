"""The app actor's share of ``pusher_internal:subscription_count``: the whole cluster's count.

A mixin of :class:`~actors.app.AppActor`, active only for apps with
``enable_subscription_count`` (others pay one attribute test per count
change). The count a subscriber hears is the channel's subscriptions on every
node, sent at most once a second per channel:

* the app actor knows its own channels' counts (``ChannelCounts``); the
  channels whose count changed are told to the other nodes in batches: one
  :class:`~transport.cluster.SubscriptionCounts` per app at most every
  ``COUNT_SHARE_SECONDS``, holding every channel that changed meanwhile, so a
  subscribe storm of any size costs a few messages a second, not one each;
* it keeps the other nodes' counts (``remote_counts``; a node's snapshot on a
  sync replaces what was known of it, a dead node's counts are dropped);
* ``COUNT_EVENT_SECONDS`` after a change (a burst of changes is one tick) it
  tells each local channel whose cluster-wide count moved to send it to its
  subscribers (:class:`~actors.messages.SubscriptionCount`); one node (the
  lowest live id, ``Cluster.is_leader``) also sends the ``subscription_count``
  webhook, so it goes out once for the cluster.

Presence channels get no count events (Pusher sends none for them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from transport import cluster as wire
from transport import names
from transport import webhooks as wh

from .messages import RemoteCounts, SubscriptionCount
from .runtime import call_later, tell_if_alive

__all__ = ["COUNT_EVENT_SECONDS", "COUNT_SHARE_SECONDS", "CountShare"]

COUNT_SHARE_SECONDS = 0.1  # changed counts told to the other nodes at most this often
COUNT_EVENT_SECONDS = 1.0  # subscription_count sent at most this often per channel


class _CountTick(NamedTuple):
    """A count timer fired: ``share`` (tell the other nodes) or ``show`` (tell the subscribers)."""

    what: str


class CountShare:
    """Cluster-wide subscription counts and their events, for the app actor."""

    app: Any
    actor_ref: Any
    channels: dict[str, Any]
    cluster: Any
    origin: str
    webhooks: Any
    # and the app actor's methods:
    _forward: Callable[[str, Any], None]
    _tell_hook: Callable[[dict[str, Any]], None]

    def __init__(self) -> None:
        super().__init__()
        self.remote_counts: dict[str, dict[str, int]] = {}  # channel -> other node -> its subscriptions
        self._counts_shown: dict[str, int] = {}  # channel -> the count last sent (cluster-wide), while > 0
        self._counts_changed: set[str] = set()  # channels whose cluster-wide count may have moved
        self._counts_to_share: set[str] = set()  # channels whose count here changed since the last share
        self._share_timer: Any = None
        self._show_timer: Any = None

    def on_receive(self, message: Any) -> Any:
        if type(message) is RemoteCounts:
            self._remote_counts(message)
        elif type(message) is _CountTick:
            if message.what == "share":
                self._share_counts()
            else:
                self._show_counts()
        else:
            return super().on_receive(message)  # type: ignore[misc]
        return None

    def _counted(self, name: str) -> bool:
        return bool(self.app.enable_subscription_count) and names.channel_kind(name) is not names.ChannelKind.PRESENCE

    def _clustered(self) -> bool:
        return self.cluster is not None and not self.cluster.solo

    def _count_moved(self, name: str, before: int, after: int) -> None:
        """This node's subscriptions of ``name`` went from ``before`` to ``after``."""
        if before == after or not self._counted(name):
            return
        self._count_may_have_moved(name)
        if self._clustered():
            self._counts_to_share.add(name)
            if self._share_timer is None:
                self._share_timer = call_later(COUNT_SHARE_SECONDS, self._tell_tick, "share")

    def _count_may_have_moved(self, name: str) -> None:
        self._counts_changed.add(name)
        if self._show_timer is None:
            self._show_timer = call_later(COUNT_EVENT_SECONDS, self._tell_tick, "show")

    def _tell_tick(self, what: str) -> None:
        tell_if_alive(self.actor_ref, _CountTick(what))

    def _local_count(self, name: str) -> int:
        entry = self.channels.get(name)
        return entry.subscriptions if entry is not None else 0

    def local_subscription_counts(self) -> dict[str, int] | None:
        """This node's subscriptions of every counted channel (for a sync); None if the app has no counts."""
        if not self.app.enable_subscription_count:
            return None
        return {name: entry.subscriptions for name, entry in self.channels.items()
                if entry.subscriptions and self._counted(name)}

    def _share_counts(self) -> None:
        self._share_timer = None
        changed, self._counts_to_share = self._counts_to_share, set()
        if changed and self._clustered():
            counts = {name: self._local_count(name) for name in changed}
            self.cluster.send(wire.SubscriptionCounts(self.origin, self.app.id, counts, False))

    def _remote_counts(self, message: RemoteCounts) -> None:
        if not self.app.enable_subscription_count:
            return
        node, counts = message.node, message.counts
        changed = set(counts)
        if message.snapshot:  # what the node does not list is at 0 there
            changed.update(name for name, nodes in self.remote_counts.items() if node in nodes)
        for name in changed:
            self._set_remote(name, node, counts.get(name, 0))

    def _counts_node_gone(self, node: str) -> None:
        for name in [name for name, nodes in self.remote_counts.items() if node in nodes]:
            self._set_remote(name, node, 0)

    def _set_remote(self, name: str, node: str, count: int) -> None:
        nodes = self.remote_counts.setdefault(name, {})
        if count == nodes.get(node, 0):
            if not nodes:
                del self.remote_counts[name]
            return
        if count:
            nodes[node] = count
        else:
            del nodes[node]
            if not nodes:
                del self.remote_counts[name]
        self._count_may_have_moved(name)

    def _show_counts(self) -> None:
        self._show_timer = None
        changed, self._counts_changed = self._counts_changed, set()
        for name in changed:
            local = self._local_count(name)
            total = local + sum(self.remote_counts.get(name, {}).values())
            if total == self._counts_shown.get(name, 0):
                continue
            if not total:  # nobody left to tell, anywhere
                del self._counts_shown[name]
                continue
            self._counts_shown[name] = total
            if local:
                self._forward(name, SubscriptionCount(total))
            if self.webhooks is not None and not (self._clustered() and not self.cluster.is_leader()):
                self._tell_hook(wh.subscription_count(name, total))  # by one node only

"""Connection quotas across the cluster: every connect decided in the bus's one order.

Exact across the cluster without a lock or a leader: a node that wants to
admit a connection puts an Admit on the bus and waits for it to come back.
Every node sees the bus in the same order (one Redis channel, one relay) and
applies the same rule at that point of the stream: admitted while the
cluster's count is under the quota. Closes are Releases (batched); a node
that (re)joins tells its count; a dead node's count is dropped.

One :class:`Quota` per node, owned by its :class:`~actors.cluster.Cluster`
and run on the node's hub, like everything there.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from transport import cluster as wire

from .bus import BusDown
from .runtime import call_later

__all__ = ["ADMIT_TIMEOUT", "Quota"]

ADMIT_TIMEOUT = 1.0  # how long a connect waits for the cluster's yes or no
RELEASE_BATCH_SECONDS = 0.05  # closes told to the others at most this often


class Quota:
    """The per-app connection quotas of one node's cluster (see the module docstring)."""

    def __init__(self, node_id: str, apps: Any, send: Callable[[Any], gevent.event.AsyncResult]) -> None:
        self.node_id = node_id
        self.apps = apps
        self.send = send
        self._counts: dict[str, dict[str, int]] = {}  # app id -> node id -> admitted connections
        self._mine: dict[str, int] = {}  # app id -> this node's admitted connections
        self._tickets: dict[str, gevent.event.AsyncResult] = {}
        self._ticket_numbers = itertools.count()
        self._releasing: dict[str, int] = {}
        self._release_timer: Any = None

    def admit(self, app: Any) -> bool:
        """Admit one connection of ``app`` cluster-wide (blocks this greenlet, bounded)."""
        ticket = f"{self.node_id}:q{next(self._ticket_numbers)}"
        decided = gevent.event.AsyncResult()
        self._tickets[ticket] = decided
        try:
            self.send(wire.Admit(self.node_id, app.id, ticket)).get(timeout=ADMIT_TIMEOUT)
            return bool(decided.get(timeout=ADMIT_TIMEOUT))
        except (BusDown, gevent.Timeout):
            # The bus is down: decide from what we know, and keep count for
            # when it is back (we tell our count on reconnecting).
            counts = self._counts.setdefault(app.id, {})
            if sum(counts.values()) >= app.max_connections:
                return False
            counts[self.node_id] = counts.get(self.node_id, 0) + 1
            self._mine[app.id] = self._mine.get(app.id, 0) + 1
            return True
        finally:
            self._tickets.pop(ticket, None)

    def release(self, app_id: str) -> None:
        """One admitted connection of ``app_id`` closed here (batched onto the bus)."""
        self._mine[app_id] = max(self._mine.get(app_id, 0) - 1, 0)
        self._releasing[app_id] = self._releasing.get(app_id, 0) + 1
        if self._release_timer is None:
            self._release_timer = call_later(RELEASE_BATCH_SECONDS, self._send_releases)

    def _send_releases(self) -> None:
        self._release_timer = None
        releasing, self._releasing = self._releasing, {}
        for app_id, count in releasing.items():
            self.send(wire.Release(self.node_id, app_id, count))

    def send_counts(self) -> None:
        """Tell the others how many connections this node holds (on (re)joining, or when asked)."""
        for app_id, count in self._mine.items():
            self.send(wire.Count(self.node_id, app_id, count))

    def node_gone(self, node: str) -> None:
        """``node`` is dead or left: its connections stop counting against quotas."""
        for counts in self._counts.values():
            counts.pop(node, None)

    def apply(self, message: wire.Admit | wire.Release | wire.Count) -> None:
        """One quota message from the bus (ours too), at its place in the bus's order."""
        app = self.apps.by_id(message.app_id) if self.apps is not None else None
        if app is None or app.max_connections is None:
            return
        counts = self._counts.setdefault(app.id, {})
        origin = message.origin
        if isinstance(message, wire.Count):
            # A count is the sender's view when it sent it, which may lag its own
            # Admits already in the stream: it only seeds a node we knew nothing of.
            counts.setdefault(origin, message.seq)
        elif isinstance(message, wire.Release):
            counts[origin] = max(counts.get(origin, 0) - message.seq, 0)
        else:
            admitted = sum(counts.values()) < app.max_connections
            if admitted:
                counts[origin] = counts.get(origin, 0) + 1
            if origin == self.node_id:
                if admitted:
                    self._mine[app.id] = self._mine.get(app.id, 0) + 1
                decided = self._tickets.get(message.request_id)
                if decided is not None:
                    decided.set(admitted)
                elif admitted:
                    self.release(app.id)  # the asker gave up waiting: give the place back

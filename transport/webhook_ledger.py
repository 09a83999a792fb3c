"""Shared webhooks on a cluster: who sends them, and what a node sends should it take over.

Pure code (no sockets, no actors, no clocks: every call is given ``now``).

The shared events (``transport.webhooks.SHARED``: occupied, vacated, added,
removed) describe the whole cluster's state. Every node works them out from
its replica, holds vacated/removed for the same delay, and only the leader
POSTs them. Three pieces make that hold across a change of leader:

* :func:`choose_leader` -- the lowest id among the nodes that have been on
  the bus long enough to know the pending state (``settle`` seconds), or,
  when none has (a cluster that just started), the lowest id among those up
  for a heartbeat. A node that joins does not lead until it has seen a whole
  delay go by; a node counts its own time one heartbeat later than the
  others count it, so a handover leaves a moment with no leader, never one
  with two (what is worked out meanwhile waits in the ledgers).
* :class:`Announced` -- what the app has been told: a second
  ``channel_occupied`` / ``member_added`` changes nothing for it and is not
  sent; what to vacate when the state of this node's subscribers is lost.
* :class:`Ledger` -- what a node that does not lead keeps in case it must:
  the events it worked out that no leader has said it queued yet (for
  ``window`` seconds: long enough for a dead leader to be noticed), and the
  events the leaders queued (from their :class:`~transport.cluster.WebhookLog`
  messages) but have not finished, per webhook. When the node takes over it
  sends both: what a dead leader had not finished, then what nobody queued.

::

    >>> ledger = Ledger(window=10.0)
    >>> vacated = {"name": "channel_vacated", "channel": "news"}
    >>> ledger.decided(vacated, (0,), now=1.0)   # the leader's timer fired too, we think
    >>> ledger.take_over(now=5.0)                # ...but it died before saying so
    [({'name': 'channel_vacated', 'channel': 'news'}, (0,))]
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from .webhooks import SHARED, subject

__all__ = [
    "Announced",
    "FOUNDED",
    "Ledger",
    "Seniority",
    "WebhookLog",
    "check_finished",
    "check_queued",
    "choose_leader",
    "log_entry",
    "shared_event",
]

Event = dict[str, Any]
Key = tuple[str, ...]

FOUNDED = 10**6  # heartbeats added to the count of a node that found nobody: it has seen every change


class Seniority:
    """How long each node has known the cluster's state, from the counts in the heartbeats.

    A node's count (the ``seq`` of its heartbeats) is its heartbeats since
    its bus last (re)connected, plus :data:`FOUNDED` if it found nobody
    there: no node answered its sync request, and none showed a higher
    count, by its second heartbeat. Such a node has seen every change
    since the cluster began, so it counts as up for ever; one that found
    others counts from zero, as does one whose bus came back (it may have
    missed messages). The cluster's node side (``actors.cluster``) feeds it::

        >>> alone = Seniority(2.0)
        >>> alone.rejoined(); alone.next_count(synced=True), alone.next_count(synced=True) > FOUNDED
        (0, True)
        >>> late = Seniority(2.0)
        >>> late.rejoined(); late.next_count(synced=True)
        0
        >>> late.heard("n1", FOUNDED + 40); late.next_count(synced=True)
        1
        >>> late.uptimes(["n1"], "n2") == {"n1": (FOUNDED + 40) * 2.0, "n2": 0.0}
        True
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._beats = 0
        self._founded = 0
        self._older_seen = False
        self._peers: dict[str, int] = {}  # node -> the count in its last heartbeat

    def rejoined(self) -> None:
        """The bus (re)connected: count anew."""
        self._beats, self._founded, self._older_seen = 0, 0, False

    def answered(self) -> None:
        """A node answered our sync request: it was here before us."""
        self._older_seen = True

    def heard(self, node: str, count: int) -> None:
        """``node``'s heartbeat carried ``count``."""
        self._peers[node] = count
        if count > self._beats + self._founded + 1:
            self._older_seen = True

    def forget(self, node: str) -> None:
        """``node`` left the cluster."""
        self._peers.pop(node, None)

    def next_count(self, synced: bool) -> int:
        """The count for our next heartbeat (``synced``: the bus is up and we asked for the state)."""
        if self._beats == 1 and synced and not self._older_seen:
            self._founded = FOUNDED  # a whole interval, and nobody was here before us
        count = self._beats + self._founded
        self._beats += 1
        return count

    def uptimes(self, peers: Iterable[str], me: str) -> dict[str, float | None]:
        """Seconds each of ``peers`` and ``me`` has known the state; None for a peer not heard by heartbeat yet.

        We count ourselves one heartbeat later than the others count us
        (after sending count k, they know k and we say k - 1), so a choice
        made from these (:func:`choose_leader`) hands over with a moment of
        no leader rather than two.
        """
        out: dict[str, float | None] = {
            node: self._peers[node] * self.interval if node in self._peers else None for node in peers
        }
        out[me] = max(self._beats + self._founded - 2, 0) * self.interval
        return out


def choose_leader(uptimes: Mapping[str, float | None], settle: float, fresh: float = 0.0) -> str | None:
    """The node that sends shared webhooks now, or None for a moment (see the module docstring).

    ``uptimes`` maps every live node (this one included) to how long it has
    been on the bus, None if no heartbeat of it was heard yet: it may have
    been up for long (a node that just joined hears the others' sync
    answers before their heartbeats), so it counts as settled. A node up
    less than ``fresh`` seconds (a heartbeat) never leads: it may not have
    heard the others yet. Every node compares ids as the same strings.
    """
    settled = [node for node, up in uptimes.items() if up is None or up >= settle]
    if settled:
        return min(settled)
    started = [node for node, up in uptimes.items() if up is not None and up >= fresh]
    return min(started) if started else None


class WebhookLog(NamedTuple):
    """What the webhook leader of ``app_id`` took on and finished: a cluster message (``transport.cluster``).

    ``queued``: ``(seq, name, channel, user_id)`` of each shared event it put
    in its queues (``user_id`` None for channel events); ``finished``:
    ``(seq, webhook index)`` of each it delivered or gave up on (and logged).
    """

    origin: str
    app_id: str
    queued: tuple[tuple[int, str, str, str | None], ...]
    finished: tuple[tuple[int, int], ...]


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _FieldChecker(Protocol):
    """What the cluster codec hands a field's check (``transport.cluster``): its error and text checks."""

    def fail(self, name: str, what: str) -> Exception: ...
    def text(self, name: str, value: Any) -> str: ...
    def optional_text(self, name: str, value: Any) -> str | None: ...


def check_queued(checker: _FieldChecker, name: str, value: Any) -> tuple[tuple[int, str, str, str | None], ...]:
    """The codec's check of ``WebhookLog.queued`` (``checker`` is the codec's field checker)."""
    shape = "must be a list of [seq, shared event name, channel, user id (member events) or null]"
    if not isinstance(value, list):
        raise checker.fail(name, shape)
    entries = []
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 4 and _integer(entry[0])
                and isinstance(entry[1], str) and entry[1] in SHARED):
            raise checker.fail(name, shape)
        seq, event, channel, user_id = entry
        if (event in ("member_added", "member_removed")) != (user_id is not None):
            raise checker.fail(name, shape)
        entries.append((seq, event, checker.text(name, channel), checker.optional_text(name, user_id)))
    return tuple(entries)


def check_finished(checker: _FieldChecker, name: str, value: Any) -> tuple[tuple[int, int], ...]:
    """The codec's check of ``WebhookLog.finished``."""
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and _integer(pair[0]) and _integer(pair[1]) for pair in value
    ):
        raise checker.fail(name, "must be a list of [seq, webhook index] pairs")
    return tuple((seq, hook) for seq, hook in value)


def _key(event: Mapping[str, Any]) -> Key:
    return (event["name"], *subject(event))


def log_entry(seq: int, event: Mapping[str, Any]) -> tuple[int, str, str, str | None]:
    """A queued shared event as :class:`~transport.cluster.WebhookLog` carries it."""
    return (seq, event["name"], event["channel"], event.get("user_id"))


def shared_event(name: str, channel: str, user_id: str | None) -> Event:
    """The event a :class:`~transport.cluster.WebhookLog` entry stands for (already checked by the codec)."""
    if user_id is None:
        return {"name": name, "channel": channel}
    return {"name": name, "channel": channel, "user_id": user_id}


class Announced:
    """The occupied channels and present members the app was told of; a repeated occupied / added is not sent.

    A vacated / removed always goes (and ends the state): were this node's
    record ever short of something, dropping one would lose it silently.

    ::

        >>> told = Announced()
        >>> told.admit({"name": "channel_occupied", "channel": "news"})
        True
        >>> told.admit({"name": "channel_occupied", "channel": "news"})  # e.g. after a restart
        False
        >>> told.ends()
        [{'name': 'channel_vacated', 'channel': 'news'}]
    """

    def __init__(self) -> None:
        self._on: dict[tuple[str, ...], Event] = {}  # subject -> the event that told it

    def admit(self, event: Mapping[str, Any]) -> bool:
        """False for an occupied / added the app was told already; True (and remember) otherwise."""
        name = event["name"]
        if name not in SHARED:
            return True
        key = subject(event)
        if name in ("channel_occupied", "member_added"):
            if key in self._on:
                return False
            self._on[key] = dict(event)
        else:
            self._on.pop(key, None)
        return True

    def ends(self) -> list[Event]:
        """The event that would end each announced state (vacated, removed); nothing is forgotten.

        After the app actor that knew this node's subscribers restarted, these
        are held for the delay: the subscribers that come back cancel them.
        """
        out = []
        for key, event in self._on.items():
            if key[0] == "member":
                out.append({"name": "member_removed", "channel": event["channel"], "user_id": event["user_id"]})
            else:
                out.append({"name": "channel_vacated", "channel": event["channel"]})
        return out

    def __len__(self) -> int:
        return len(self._on)


class Ledger:
    """What this node sends should it become the leader (see the module docstring).

    ``hooks`` everywhere are the indices of the app's webhooks that want an
    event: every node has the same config, so they mean the same URLs.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._ids = itertools.count()
        # Ours: decided here, not (yet) matched by a leader's queued entry.
        self._mine: dict[int, tuple[float, Key, Event, tuple[int, ...]]] = {}
        self._mine_by_key: dict[Key, collections.deque[int]] = {}
        # A leader queued it before we decided it ourselves (its timer fired first).
        self._credits: dict[Key, collections.deque[float]] = {}
        self._credit_order: collections.deque[tuple[float, Key]] = collections.deque()
        # The leaders' queued, unfinished events: (origin, seq) -> [event, hooks not finished].
        self._outbox: dict[tuple[str, int], tuple[Event, set[int]]] = {}
        # A dead leader's unfinished events, kept ``window`` s for whoever leads next.
        self._orphans: dict[tuple[str, int], tuple[float, Event, set[int]]] = {}

    # --- what this node works out while another leads -------------------------------

    def decided(self, event: Event, hooks: tuple[int, ...], now: float) -> None:
        """This node worked out ``event`` but does not lead: keep it until a leader queues it."""
        self.expire(now)
        key = _key(event)
        credits = self._credits.get(key)
        if credits:
            credits.popleft()
            if not credits:
                del self._credits[key]
            return
        ident = next(self._ids)
        self._mine[ident] = (now, key, event, hooks)
        self._mine_by_key.setdefault(key, collections.deque()).append(ident)

    # --- what the leaders say ---------------------------------------------------------

    def queued(self, origin: str, seq: int, event: Event, hooks: tuple[int, ...], now: float) -> None:
        """Leader ``origin`` queued ``event`` as its ``seq``: it is the leader's now, until finished."""
        self.expire(now)
        if self._orphans and any(node != origin for node, _ in self._orphans):
            # Another node queues: it leads and took over what the dead one left.
            self._orphans = {k: v for k, v in self._orphans.items() if k[0] == origin}
        if hooks:
            self._outbox[(origin, seq)] = (event, set(hooks))
        key = _key(event)
        waiting = self._mine_by_key.get(key)
        if waiting:
            del self._mine[waiting.popleft()]
            if not waiting:
                del self._mine_by_key[key]
            return
        self._credits.setdefault(key, collections.deque()).append(now)
        self._credit_order.append((now, key))

    def finished(self, origin: str, seq: int, hook: int) -> None:
        """Leader ``origin`` is done with its ``seq`` for webhook ``hook`` (delivered, or given up and logged)."""
        entry = self._outbox.get((origin, seq))
        if entry is not None:
            entry[1].discard(hook)
            if not entry[1]:
                del self._outbox[(origin, seq)]
            return
        orphan = self._orphans.get((origin, seq))
        if orphan is not None:
            orphan[2].discard(hook)
            if not orphan[2]:
                del self._orphans[(origin, seq)]

    def node_gone(self, node: str, now: float) -> None:
        """``node`` died or stopped: what it queued and did not finish waits for the next leader."""
        for ref in [ref for ref in self._outbox if ref[0] == node]:
            event, hooks = self._outbox.pop(ref)
            self._orphans[ref] = (now, event, hooks)

    # --- taking over -------------------------------------------------------------------

    def take_over(self, now: float) -> list[tuple[Event, tuple[int, ...]]]:
        """This node leads now: what it must send, oldest first (and forget them here)."""
        self.expire(now)
        out = [(event, tuple(sorted(hooks))) for _, event, hooks in self._orphans.values()]
        out.extend((event, hooks) for _, _, event, hooks in self._mine.values())
        self._orphans.clear()
        self._mine.clear()
        self._mine_by_key.clear()
        self._credits.clear()
        self._credit_order.clear()
        return out

    def expire(self, now: float) -> None:
        """Forget what is older than ``window``: a leader that lived that long decided otherwise."""
        limit = now - self.window
        while self._mine:  # oldest first: stop at the first one still in the window
            ident, (when, key, _, _) = next(iter(self._mine.items()))
            if when > limit:
                break
            del self._mine[ident]
            waiting = self._mine_by_key[key]
            waiting.popleft()  # the oldest of its key, as it is the oldest of all
            if not waiting:
                del self._mine_by_key[key]
        while self._credit_order and self._credit_order[0][0] <= limit:
            _, key = self._credit_order.popleft()
            credits = self._credits.get(key)
            while credits and credits[0] <= limit:  # some were used up by decided() already
                credits.popleft()
            if credits is not None and not credits:
                del self._credits[key]
        while self._orphans:
            ref, (when, _, _) = next(iter(self._orphans.items()))
            if when > limit:
                break
            del self._orphans[ref]

    # --- for shutdown logs and tests ----------------------------------------------------

    def waiting(self) -> int:
        """Events this node would send on taking over now."""
        return len(self._mine) + len(self._orphans)

    def unfinished(self, origins: Iterable[str] | None = None) -> int:
        """Leaders' queued events not finished yet (of ``origins``, or of all)."""
        wanted = None if origins is None else set(origins)
        return sum(1 for node, _ in self._outbox if wanted is None or node in wanted)

"""The app actor's share of presence across a cluster: every join and leave decided in the bus's one order.

A mixin of :class:`~actors.app.AppActor` (the state is the app actor's own).
A node alone (no bus) keeps the fast path: each channel actor decides its
members and the member limit at once, and tells the app actor
(``LocalMember``) only for the queries.

On a cluster the app actor owns the cluster's presence registry
(``remote``: a :class:`~transport.presence.RemotePresence` of every node,
this one included). A channel whose user gets its first local socket holds
that socket and asks (``LocalMember`` with a ticket); the app actor puts a
``Member`` join on the bus and applies it only when it comes back, at its
place in the bus's one order, as every other node does: there the member
limit is checked (``RemotePresence.ask``), so every node gives the same
answer and a refused join needs no leave. Leaves go the same way. Changes of
the registry (a user present anywhere, or nowhere any more) go to the
channels (``RemoteChanges``: member_added / member_removed), then the answer
to the waiting channel (``MemberDecided``: subscription_succeeded with the
members at that point of the order, or the limit's error).

Bounded as the connection quota (``actors.cluster_quota``): a Member that
the bus refuses, or that does not come back within ``ADMIT_TIMEOUT``, is
decided here from what this node knows, and the others are told the outcome
(a plain join or leave) so that their registries end up as ours. With no
other node in the cluster (yet), presence is decided here at once and the
outcome told to the bus for a node that is joining.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import gevent.event

from transport import cluster as wire

from .cluster_quota import ADMIT_TIMEOUT
from .messages import LocalMember, MemberDecided, RemoteChanges, RemoteMember
from .runtime import call_later, tell_if_alive

__all__ = ["MemberLate", "PresenceShare"]

#: Numbers of our Members on the bus, unique in the process: a restarted app
#: actor never takes its predecessor's Member, back late, for one of its own.
_SEQS = itertools.count(1)


class MemberLate:
    """To the app actor: its own Member ``seq`` was refused by the bus or did not come back in time."""

    __slots__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq


class _Own:
    """One of this node's Member messages on the bus, not back yet."""

    __slots__ = ("channel", "joined", "synced", "ticket", "timer", "user_id", "user_info")

    def __init__(self, message: LocalMember, timer: Any) -> None:
        self.channel, self.user_id, self.user_info = message.channel, message.user_id, message.user_info
        self.joined, self.ticket = message.joined, message.ticket
        self.timer = timer
        self.synced = False  # a Sync sent meanwhile counted this join in


class PresenceShare:
    """Presence members, decided in the bus's order on a cluster, for the app actor."""

    app: Any
    channels: dict[str, Any]
    cluster: Any
    local_members: dict[str, dict[str, Any]]
    origin: str
    remote: Any
    actor_ref: Any
    _forward: Callable[[str, Any], None]

    def _presence_init(self) -> None:
        self._own_members: dict[int, _Own] = {}  # seq -> our Member on the bus, not back yet
        self._in_flight: dict[tuple[str, str], list[int]] = {}  # (channel, user) -> seqs of ours not back, in order

    @property
    def clustered(self) -> bool:
        """True when presence goes through the bus (a node with a bus, not alone)."""
        return self.cluster is not None and not self.cluster.solo

    def _local_member(self, message: LocalMember) -> None:
        channel, user_id = message.channel, message.user_id
        members = self.local_members.setdefault(channel, {})
        if message.joined:
            members[user_id] = message.user_info
        else:
            members.pop(user_id, None)
        if not members:
            del self.local_members[channel]
        if not self.clustered:
            return  # a node alone: the channel decided already
        key = (channel, user_id)
        if not self.cluster.peers and key not in self._in_flight:
            # Nobody else to agree with: decide at once, as a node alone does, and
            # tell the outcome to any node that is joining (it is ours to keep).
            admitted = self._apply(self.origin, channel, user_id, message.user_info, message.joined, True)
            if admitted:
                self._tell_bus(channel, user_id, message.user_info, message.joined)
            if message.joined:
                self._decided(channel, user_id, message.ticket, admitted, latest=True)
            return
        seq = next(_SEQS)
        late = MemberLate(seq)
        timer = call_later(ADMIT_TIMEOUT, tell_if_alive, self.actor_ref, late)
        self._own_members[seq] = _Own(message, timer)
        self._in_flight.setdefault(key, []).append(seq)
        handed: gevent.event.AsyncResult = self.cluster.send(wire.Member(
            self.origin, self.app.id, channel, user_id, message.user_info, message.joined, message.joined, seq))
        ref = self.actor_ref

        def refused(result: gevent.event.AsyncResult) -> None:
            if not result.successful():  # the bus is down: it never comes back, decide now
                tell_if_alive(ref, late)

        handed.rawlink(refused)

    def _remote_member(self, message: RemoteMember) -> None:
        if message.node != self.origin:
            self._apply(message.node, message.channel, message.user_id, message.user_info, message.joined, message.ask)
            return
        own = self._end(message.seq)
        if own is None:
            return  # back too late: decided here already
        admitted = self._apply(self.origin, own.channel, own.user_id, own.user_info, own.joined, own.joined)
        if own.joined:
            latest = (own.channel, own.user_id) not in self._in_flight
            if not admitted and latest and own.synced:
                # A Sync counted it in meanwhile: the others added it from there.
                self._tell_bus(own.channel, own.user_id, None, False)
            self._decided(own.channel, own.user_id, own.ticket, admitted, latest)

    def _member_late(self, seq: int) -> None:
        own = self._end(seq)
        if own is None:
            return  # it came back in time
        # Decide from what we know, as the quota does; it is ours, when it comes back.
        admitted = self._apply(self.origin, own.channel, own.user_id, own.user_info, own.joined, own.joined)
        if not own.joined:
            return
        latest = (own.channel, own.user_id) not in self._in_flight
        if latest:
            # The others answered the ask at its place in the order, maybe not as
            # we did: what we decided now follows it there, so they end as we do.
            self._tell_bus(own.channel, own.user_id, own.user_info if admitted else None, admitted)
        self._decided(own.channel, own.user_id, own.ticket, admitted, latest)

    def _end(self, seq: int) -> _Own | None:
        own = self._own_members.pop(seq, None)
        if own is None:
            return None
        own.timer.kill(block=False)
        key = (own.channel, own.user_id)
        seqs = self._in_flight[key]
        seqs.remove(seq)
        if not seqs:
            del self._in_flight[key]
        return own

    def _apply(self, node: str, channel: str, user_id: str, user_info: Any, joined: bool, ask: bool) -> bool:
        """One Member at its place in the order: the registry, then the channels; False if refused."""
        admitted = True
        if joined and ask:
            admitted, changes = self.remote.ask(node, channel, user_id, user_info, self.app.max_presence_members)
        elif joined:
            changes = self.remote.join(node, channel, user_id, user_info)
        else:
            changes = self.remote.leave(node, channel, user_id)
        self._remote_changes(changes)
        return admitted

    def _tell_bus(self, channel: str, user_id: str, user_info: Any, joined: bool) -> None:
        # seq 0: applied here already, so ignored when it comes back.
        self.cluster.send(wire.Member(self.origin, self.app.id, channel, user_id, user_info, joined))

    def _decided(self, channel: str, user_id: str, ticket: int, admitted: bool, latest: bool) -> None:
        if not admitted and latest:  # nothing of ours after it: the channel drops the user's sockets
            members = self.local_members.get(channel)
            if members is not None:
                members.pop(user_id, None)
                if not members:
                    del self.local_members[channel]
        if channel in self.channels:
            self._forward(channel, MemberDecided(user_id, ticket, admitted))

    def _remote_changes(self, changes: list[Any]) -> None:
        by_channel: dict[str, list[Any]] = {}
        for change in changes:
            by_channel.setdefault(change.channel, []).append(change)
        for name, group in by_channel.items():
            if name in self.channels:
                self._forward(name, RemoteChanges(tuple(group)))

    def _members_gone(self, channel: str) -> None:
        """A channel actor died with its sockets: each of its users here leaves, as if their last socket left."""
        for user_id in list(self.local_members.get(channel, ())):
            self._local_member(LocalMember(channel, user_id, None, False))

    def _count_syncing(self) -> None:
        """A Sync of ours is being made from ``local_members``: the joins not back yet are counted in."""
        for own in self._own_members.values():
            own.synced = own.synced or own.joined

    # --- queries -------------------------------------------------------------------

    def local_presence(self) -> dict[str, dict[str, Any]]:
        """This node's presence members, {channel: {user_id: user_info}} (for a Sync)."""
        return {name: dict(members) for name, members in self.local_members.items()}

    def local_users(self, channel: str) -> list[str]:
        """The ids of a presence channel's members on this node, sorted."""
        if self.clustered:
            return self._still_here(channel, self.remote.held(self.origin, channel))
        return sorted(self.local_members.get(channel, ()))

    def local_users_by_channel(self) -> dict[str, list[str]]:
        """``{channel: local_users(channel)}`` for every presence channel with members here."""
        if not self.clustered:
            return {name: sorted(members) for name, members in self.local_members.items()}
        held = self.remote.held_by(self.origin)
        return {name: users for name, ids in held.items() if (users := self._still_here(name, ids))}

    def _still_here(self, channel: str, ids: list[str]) -> list[str]:
        # On a cluster: admitted in the order and still here; a leave on its way
        # to the bus is counted gone, as a query made after it expects.
        here = self.local_members.get(channel, {})
        return [user for user in ids if user in here]

    def presence_users(self, channel: str) -> list[str]:
        """The ids of a presence channel's members on every node, from the registry."""
        if self.clustered:
            return sorted(self.remote.users(channel))
        return sorted(self.local_members.get(channel, ()))

    def presence_user_counts(self) -> dict[str, int]:
        """Members on every node of each presence channel with members anywhere."""
        if self.clustered:
            return {name: self.remote.count(name) for name in self.remote.channels()}
        return {name: len(members) for name, members in self.local_members.items()}

    def presence_members(self, everyone: bool = False) -> dict[str, list[str]]:
        """``{channel: user ids}`` of this node's presence members (``everyone``: every node's, the registry's)."""
        if everyone and self.clustered:
            return {name: list(self.remote.users(name)) for name in self.remote.channels()}
        return self.local_users_by_channel()

"""A presence channel's members: a mixin of :class:`~actors.channel.ChannelActor`.

A node alone decides here, at once: a user's first socket is added (or
refused by the member limit), and member_added / member_removed go out as
local sockets come and go.

On a cluster (``clustered``) the cluster decides, in the bus's one order
(``actors.app_presence``): a user's first socket here waits (``waiting``)
while the app actor asks, more sockets of the same user queue behind it, and
``MemberDecided`` admits them (subscription_succeeded with the members at
that point of the order) or refuses them (the limit's subscription_error).
member_added / member_removed go out only on the registry's changes
(``RemoteChanges``), for this node's users as for the others': ``present``
is every node's members as of the order, and a leave here is announced when
it comes back. A socket of a user already a member here is admitted at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from transport import auth, protocol
from transport.config import App
from transport.presence import Change
from transport.writer import Offer

from .messages import Join, JoinRefused, LocalMember, MemberDecided
from .refs import AppRef
from .runtime import tell_if_alive

__all__ = ["PresenceMembers"]

_ABSENT = object()
#: Join tickets, unique in the process: an answer for a retired channel's join never fits a new one's.
_TICKETS = itertools.count(1)


class _Waiting:
    """A user's first sockets here, waiting for the cluster's answer to join ``ticket``."""

    __slots__ = ("joins", "ticket", "user_info")

    def __init__(self, ticket: int, user_info: Any) -> None:
        self.ticket = ticket
        self.user_info = user_info
        self.joins: list[Join] = []


class PresenceMembers:
    """Members of a presence channel (see the module docstring)."""

    app: App
    name: str
    app_actor: AppRef
    offers: dict[str, Offer]

    def _presence_members(self, present: dict[str, Any] | None, clustered: bool) -> None:
        """Set up the member state (from the channel actor's ``__init__``)."""
        self.clustered = clustered
        self.members: dict[str, tuple[Any, set[str]]] = {}  # user_id -> (user_info, socket ids) here
        self.socket_users: dict[str, str] = {}  # socket_id -> user_id (members here)
        # On a cluster: every node's members as of the bus's order (user_id -> user_info),
        # and the users whose first sockets here wait for the cluster's answer.
        self.present: dict[str, Any] = dict(present or {})
        self.waiting: dict[str, _Waiting] = {}
        self.waiting_sockets: dict[str, str] = {}  # socket_id -> user_id

    # and the channel actor's methods:
    _fan_out: Callable[[bytes], None]
    _send: Callable[[Offer, bytes], None]
    _report: Callable[[], None]
    _maybe_empty: Callable[[], None]
    _greet: Callable[[Offer], None]

    def _add_member(self, message: Join, member: auth.PresenceMember) -> bool | None:
        """A member's socket joins: True if it is in now, False if refused, None if it waits for the cluster."""
        socket_id, user_id = message.socket_id, member.user_id
        entry = self.members.get(user_id)
        if entry is None:
            if self.clustered:
                self._wait(message, member)
                return None
            if self._user_count() >= self.app.max_presence_members:
                self._refuse(message)
                return False
            frame = protocol.event_frame(
                self.name, "pusher_internal:member_added", {"user_id": user_id, "user_info": member.user_info})
            self._fan_out(frame)  # before adding: the joiner is not told about itself
            entry = self.members[user_id] = (member.user_info, set())
            tell_if_alive(self.app_actor, LocalMember(self.name, user_id, member.user_info, True))
        entry[1].add(socket_id)
        self.socket_users[socket_id] = user_id
        return True

    def _wait(self, message: Join, member: auth.PresenceMember) -> None:
        waiting = self.waiting.get(member.user_id)
        if waiting is None:
            waiting = self.waiting[member.user_id] = _Waiting(next(_TICKETS), member.user_info)
            tell_if_alive(self.app_actor, LocalMember(self.name, member.user_id, member.user_info, True, waiting.ticket))
        waiting.joins.append(message)
        self.waiting_sockets[message.socket_id] = member.user_id

    def _refuse(self, message: Join) -> None:
        error = {
            "type": "LimitReached",
            "error": f"Presence channel {self.name} is full ({self.app.max_presence_members} members)",
            "status": 403,
        }
        self._send(message.writer.offer, protocol.event_frame(self.name, "pusher:subscription_error", error))
        tell_if_alive(message.connection, JoinRefused(self.name))

    def decided(self, message: MemberDecided) -> None:
        """The cluster's answer to a waiting user's join, at its place in the bus's order."""
        waiting = self.waiting.get(message.user_id)
        if waiting is None or waiting.ticket != message.ticket:
            return  # they left meanwhile (their leave follows it on the bus)
        del self.waiting[message.user_id]
        for join in waiting.joins:
            self.waiting_sockets.pop(join.socket_id, None)
        if not message.admitted:
            for join in waiting.joins:
                self._refuse(join)
            self._maybe_empty()
            return
        sockets: set[str] = set()
        self.members[message.user_id] = (waiting.user_info, sockets)
        for join in waiting.joins:
            sockets.add(join.socket_id)
            self.socket_users[join.socket_id] = message.user_id
            self.offers[join.socket_id] = join.writer.offer
        self._report()  # before the confirmations: a query made after one sees these joins
        for join in waiting.joins:
            self._greet(join.writer.offer)

    def _remove_member(self, socket_id: str) -> None:
        """``socket_id`` (a subscriber, out of ``offers`` already) leaves: the member goes with its last socket."""
        user_id = self.socket_users.pop(socket_id, None)
        if user_id is None:
            return
        sockets = self.members[user_id][1]
        sockets.discard(socket_id)
        if not sockets:
            del self.members[user_id]
            tell_if_alive(self.app_actor, LocalMember(self.name, user_id, None, False))
            if not self.clustered:  # on a cluster: announced when the leave comes back
                self._fan_out(protocol.event_frame(self.name, "pusher_internal:member_removed", {"user_id": user_id}))

    def _stop_waiting(self, socket_id: str) -> bool:
        """A waiting socket leaves before the cluster answered; False if it was not waiting."""
        user_id = self.waiting_sockets.pop(socket_id, None)
        if user_id is None:
            return False
        waiting = self.waiting[user_id]
        waiting.joins = [join for join in waiting.joins if join.socket_id != socket_id]
        if not waiting.joins:  # the user is gone from here: its leave follows the join on the bus
            del self.waiting[user_id]
            tell_if_alive(self.app_actor, LocalMember(self.name, user_id, None, False))
        return True

    def remote_changed(self, changes: Iterable[Change]) -> None:
        """Users now present somewhere in the cluster, or nowhere any more (in the bus's order)."""
        present = self.present
        for change in changes:
            user_id = change.user_id
            if change.present:
                if user_id not in present:  # a waiting joiner is not subscribed yet: not told about itself
                    data = {"user_id": user_id, "user_info": change.user_info}
                    self._fan_out(protocol.event_frame(self.name, "pusher_internal:member_added", data))
                present[user_id] = change.user_info
            elif present.pop(user_id, _ABSENT) is not _ABSENT:
                self._fan_out(protocol.event_frame(self.name, "pusher_internal:member_removed", {"user_id": user_id}))
        self._report()

    def _user_count(self) -> int:
        return len(self.present) if self.clustered else len(self.members)

    def user_ids(self) -> list[str]:
        """The ids of the users present, on every node (presence channels)."""
        return list(self.present) if self.clustered else list(self.members)

    def _members_frame(self) -> bytes:
        if self.clustered:
            members = dict(self.present)
        else:
            members = {user_id: info for user_id, (info, _) in self.members.items()}
        ids = list(members)
        data = {"presence": {"ids": ids, "hash": members, "count": len(ids)}}
        return protocol.event_frame(self.name, "pusher_internal:subscription_succeeded", data)

"""The presence registry of a cluster: who is in which presence channel on which node.

Pure bookkeeping (no actors, no I/O); one :class:`RemotePresence` per app,
owned by the app actor, fed from the cluster's messages in the bus's one
order (:mod:`transport.cluster`: ``Member``, ``Sync``, ``Bye``, a dead node),
the node's own ``Member`` messages included when they come back: every node
holds the same registry at the same point of the order, and so takes the
same decisions there (:meth:`RemotePresence.ask`: the member limit).

Every update returns the *transitions* the node's channels must act on: a
:class:`Change` with ``present=True`` when a user appears on some node
having been on none, ``present=False`` when the last node holding the
user lets go. A user with sockets on several nodes is one member, so the
second node's join and the first node's leave change nothing::

    >>> p = RemotePresence()
    >>> p.join("A", "presence-x", "u1", {"name": "Ann"})
    [Change(channel='presence-x', user_id='u1', user_info={'name': 'Ann'}, present=True)]
    >>> p.join("B", "presence-x", "u1", {"name": "Ann"})
    []
    >>> p.leave("A", "presence-x", "u1")
    []
    >>> p.leave("B", "presence-x", "u1")
    [Change(channel='presence-x', user_id='u1', user_info={'name': 'Ann'}, present=False)]
    >>> len(p)
    0

Changes come back sorted by channel, then user id (removals before additions
for :meth:`RemotePresence.replace_node`), so every replica acts in the same
order. Empty inner dicts are removed as soon as they empty: after any churn
the replica holds exactly what is present.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Change", "RemotePresence"]


class Change(NamedTuple):
    """``user_id`` is now present (``present``) on some node, or on none any more.

    ``user_info`` is the info of the node that joined, or, for a removal, the
    info last held for the user.
    """

    channel: str
    user_id: str
    user_info: Any
    present: bool


def _ordered(changes: list[Change]) -> list[Change]:
    return sorted(changes, key=lambda change: (change.channel, change.user_id))


class RemotePresence:
    """The members of one app's presence channels on each node (the registry's nodes).

    Held as ``{channel: {user_id: {node_id: user_info}}}``, plus an index of
    which ``(channel, user_id)`` pairs each node holds, so a dead node is
    forgotten without scanning every channel.
    """

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, dict[str, Any]]] = {}
        self._by_node: dict[str, dict[str, set[str]]] = {}

    # --- updates ---------------------------------------------------------------

    def join(self, node_id: str, channel: str, user_id: str, user_info: Any) -> list[Change]:
        """``user_id``'s first socket on ``node_id`` joined ``channel``.

        A Change only if no other node had the user; a join from the same
        node again updates the info it holds and changes nothing.
        """
        change = self._add(node_id, channel, user_id, user_info)
        return [] if change is None else [change]

    def leave(self, node_id: str, channel: str, user_id: str) -> list[Change]:
        """``user_id``'s last socket on ``node_id`` left ``channel``.

        A Change only if no other node has the user any more; a leave the
        replica does not know of (a duplicate, or one overtaking its join)
        changes nothing.
        """
        change = self._remove(node_id, channel, user_id)
        return [] if change is None else [change]

    def ask(self, node_id: str, channel: str, user_id: str, user_info: Any, limit: int | None) -> tuple[bool, list[Change]]:
        """A join that asks for a place: refused (nothing changes) when ``user_id`` is in ``channel``
        on no node and the channel already holds ``limit`` users; else as :meth:`join`.

        Applied at the same point of one order by every node, it gets the same
        answer everywhere, so a refused join needs no leave::

            >>> p = RemotePresence()
            >>> p.ask("A", "presence-x", "u1", None, 1)[0], p.ask("B", "presence-x", "u2", None, 1)
            (True, (False, []))
            >>> p.ask("B", "presence-x", "u1", None, 1)  # a member's socket on another node: admitted
            (True, [])
        """
        users = self._channels.get(channel, {})
        if user_id not in users and limit is not None and len(users) >= limit:
            return False, []
        return True, self.join(node_id, channel, user_id, user_info)

    def replace_node(self, node_id: str, members: dict[str, dict[str, Any]]) -> list[Change]:
        """A Sync: ``members`` (``{channel: {user_id: user_info}}``) is all ``node_id`` holds now.

        What it held before and no longer does is removed, what is new is
        added, the rest gets the new info; returns the removals, then the
        additions.
        """
        held = self._by_node.get(node_id, {})
        gone = [
            (channel, user_id)
            for channel, users in held.items()
            for user_id in users
            if user_id not in members.get(channel, ())
        ]
        removals = [change for change in (self._remove(node_id, c, u) for c, u in gone) if change is not None]
        additions = []
        for channel, users in members.items():
            for user_id, user_info in users.items():
                change = self._add(node_id, channel, user_id, user_info)
                if change is not None:
                    additions.append(change)
        return _ordered(removals) + _ordered(additions)

    def drop_node(self, node_id: str) -> list[Change]:
        """Forget everything ``node_id`` held (it died or said Bye); returns the removals."""
        held = self._by_node.get(node_id, {})
        pairs = [(channel, user_id) for channel, users in held.items() for user_id in users]
        removals = [change for change in (self._remove(node_id, c, u) for c, u in pairs) if change is not None]
        return _ordered(removals)

    # --- reading ---------------------------------------------------------------

    def users(self, channel: str) -> dict[str, Any]:
        """``{user_id: user_info}`` of the users present in ``channel`` on any node.

        A user on several nodes is listed once, with the info of the node
        with the smallest id, so every replica shows the same info.
        """
        users = self._channels.get(channel, {})
        return {user_id: nodes[min(nodes)] for user_id, nodes in users.items()}

    def has_user(self, channel: str, user_id: str) -> bool:
        """True if ``user_id`` is in ``channel`` on at least one node."""
        return user_id in self._channels.get(channel, ())

    def held(self, node_id: str, channel: str) -> list[str]:
        """The ids of the users ``node_id`` holds in ``channel``, sorted."""
        return sorted(self._by_node.get(node_id, {}).get(channel, ()))

    def held_by(self, node_id: str) -> dict[str, list[str]]:
        """``{channel: sorted user ids}`` of every channel where ``node_id`` holds users."""
        return {channel: sorted(users) for channel, users in self._by_node.get(node_id, {}).items()}

    def count(self, channel: str) -> int:
        """How many users are in ``channel`` on any node."""
        return len(self._channels.get(channel, ()))

    def channels(self) -> list[str]:
        """The channels with at least one user on some node, sorted."""
        return sorted(self._channels)

    def nodes(self) -> set[str]:
        """The nodes holding at least one member."""
        return set(self._by_node)

    def __len__(self) -> int:
        """The number of ``(node, channel, user)`` memberships held."""
        return sum(len(users) for channels in self._by_node.values() for users in channels.values())

    def __repr__(self) -> str:
        return f"RemotePresence(nodes={len(self._by_node)}, channels={len(self._channels)}, memberships={len(self)})"

    # --- the two primitive steps; everything above is built on them -----------

    def _add(self, node_id: str, channel: str, user_id: str, user_info: Any) -> Change | None:
        nodes = self._channels.setdefault(channel, {}).setdefault(user_id, {})
        first = not nodes
        nodes[node_id] = user_info
        self._by_node.setdefault(node_id, {}).setdefault(channel, set()).add(user_id)
        return Change(channel, user_id, user_info, True) if first else None

    def _remove(self, node_id: str, channel: str, user_id: str) -> Change | None:
        users = self._channels.get(channel)
        if users is None:
            return None
        nodes = users.get(user_id)
        if nodes is None or node_id not in nodes:
            return None
        user_info = nodes.pop(node_id)
        held = self._by_node[node_id]
        held[channel].discard(user_id)
        # Drop emptied containers at once, so churn leaves nothing behind.
        if not held[channel]:
            del held[channel]
            if not held:
                del self._by_node[node_id]
        if nodes:
            return None
        del users[user_id]
        if not users:
            del self._channels[channel]
        return Change(channel, user_id, user_info, False)

"""The node side of the HTTP API: answers ``transport.http_api.Backend``.

Runs in the HTTP request's greenlet on the node's hub, at the edge of the
actor system, so it may wait (always bounded): for the app actor, which keeps
every channel's counts and the cluster's presence replicas, and, on a
cluster, for the other nodes' share of the subscription counts and, for
presence channels' user counts or users, of its members as of the question
(``Cluster.request``, bounded by its timeout; a node that does not answer is
counted from the registry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import gevent
from pykka import ActorDeadError, Future, Timeout

from transport import names, protocol
from transport.config import App
from transport.errors import HttpError

from .bus import BusDown
from .refs import AppRef, app_proxy
from .runtime import yield_to_io

if TYPE_CHECKING:
    from gevent.event import AsyncResult

    from .cluster import Cluster

__all__ = ["NodeBackend"]

log = logging.getLogger(__name__)

ASK_TIMEOUT = 5.0
BUS_ACK_TIMEOUT = 2.0  # a trigger is answered once the bus took its event (or gave up)

_T = TypeVar("_T")
#: ``Node._publish(app_id, events, socket_id)``: delivers here, hands to the bus; the bus's result, or None alone.
Publish: TypeAlias = "Callable[[str, tuple[tuple[str, str], ...], str | None], AsyncResult | None]"


class NodeBackend:
    """Implements the HTTP API's backend over a node's app actors and its cluster."""

    def __init__(self, app_actors: dict[str, AppRef], publish: Publish, cluster: Cluster) -> None:
        self.app_actors = app_actors
        self.publish = publish
        self.cluster = cluster
        #: False once the node drains: a trigger is then refused (503), never
        #: answered 200 for an event the shutdown would drop.
        self.accepting = True
        self._last_bus_warning = 0.0

    def trigger(self, app: App, channels: Sequence[str], event: str, data: str, socket_id: str | None) -> None:
        if not self.accepting or app.id not in self.app_actors:
            raise HttpError(503, "Server is shutting down; try another node")
        # Encoded once per channel here, for this node and every other one.
        events = tuple((channel, protocol.event_json(channel, event, data)) for channel in channels)
        handed = self.publish(app.id, events, socket_id)
        if handed is None:
            return
        # Answered only once the event is on the bus: one publisher's events
        # then keep their order even when its calls reach different nodes.
        try:
            handed.get(timeout=BUS_ACK_TIMEOUT)
        except (BusDown, gevent.Timeout) as exc:
            # Delivered here all the same; the other nodes miss it (at most once, as Pusher).
            now = time.monotonic()
            if now - self._last_bus_warning >= 10:
                log.warning("cluster bus did not take a trigger (%r): delivered on this node only", exc)
                self._last_bus_warning = now

    def _call(self, ask: Callable[[], Future[_T]]) -> _T:
        """``ask()`` (a question to an app actor) answered within ASK_TIMEOUT, or the HTTP error that says why not."""
        try:
            return ask().get(timeout=ASK_TIMEOUT)
        except Timeout as exc:
            raise HttpError(503, "The node is too busy to answer; try again") from exc
        except ActorDeadError as exc:  # restarting after a bug, or shutting down
            raise HttpError(503, "The app is restarting; try again") from exc

    def _app(self, app: App) -> AppRef:
        ref = self.app_actors.get(app.id)
        if ref is None:
            raise HttpError(503, "Server is shutting down; try another node")
        return ref

    def channel_info(self, app: App, channel: str) -> dict[str, int] | None:
        # The app actor keeps every channel's counts as the channels report
        # them: one question to one actor, whatever the number of channels.
        ref = self._app(app)
        counts = self._call(lambda: app_proxy(ref).channel_info(channel))
        subscriptions = counts[0] if counts is not None else 0
        presence = _is_presence(channel)
        answers, missing = self.cluster.request_each(app.id, "channel", {"channel": channel, "users": presence})
        users: set[str] = set()
        for answer in answers:
            if isinstance(answer, dict):  # a presence channel: its subscriptions and members there
                subscriptions += _count(answer.get("subscriptions"))
                users.update(_ids(answer.get("users")))
            else:
                subscriptions += _count(answer)
                missing += presence  # an older node: no members in its answer
        if not subscriptions:
            return None
        info = {"subscription_count": subscriptions}
        if presence:
            info["user_count"] = len(self._presence_users(ref, channel, users, missing))
        return info

    def _presence_users(self, ref: AppRef, channel: str, answered: set[str], missing: int) -> set[str]:
        """This node's members and those the others just answered with (the replica's, if one did not answer).

        The answers are as fresh as the asking: a member who joined or left
        anywhere before the question is counted right, where the replica
        can lag by a bus hop.
        """
        proxy = app_proxy(ref)
        mine = self._call(lambda: proxy.presence_users(channel) if missing else proxy.local_users(channel))
        return answered | set(mine)

    def channels(self, app: App, users: bool = False) -> dict[str, dict[str, int]]:
        ref = self._app(app)
        local = self._call(lambda: app_proxy(ref).channels_info())  # {name: (subscriptions, users)}, kept ready
        # ``users``: presence user counts as of the question, from every node's own members.
        answers, missing = self.cluster.request_each(app.id, "channels", {"users": True} if users else {})
        subscriptions = {name: counts[0] for name, counts in local.items()}
        members: dict[str, set[str]] = {}
        for answer in answers:
            if not isinstance(answer, dict):
                continue
            if users:
                held = answer.get("users")
                if isinstance(held, dict) and isinstance(answer.get("subscriptions"), dict):
                    answer = answer["subscriptions"]
                    for name, ids in held.items():
                        members.setdefault(name, set()).update(_ids(ids))
                else:
                    missing += 1  # an older node: no members in its answer
            for name, count in answer.items():
                if isinstance(count, int):
                    subscriptions[name] = subscriptions.get(name, 0) + count
        yield_to_io()  # between the asks and the building of a long answer: let the hub serve others
        # Written for 10,000 channels: one dict per channel, presence looked up only if there is any.
        out = {name: {"subscription_count": count} for name, count in subscriptions.items()}
        presence = [name for name in out if name.startswith("presence-")]
        if presence and users:
            # Ours and the answers; the registry's for a node that did not answer.
            mine = self._call(lambda: app_proxy(ref).presence_members(bool(missing)))
            for name in presence:
                out[name]["user_count"] = len(members.get(name, set()).union(mine.get(name, ())))
        elif presence:
            counts = self._call(lambda: app_proxy(ref).presence_user_counts())
            for name in presence:
                out[name]["user_count"] = counts.get(name, 0)
        return out

    def users(self, app: App, channel: str) -> list[str]:
        ref = self._app(app)
        answers, missing = self.cluster.request_each(app.id, "channel", {"channel": channel, "users": True})
        users: set[str] = set()
        for answer in answers:
            if isinstance(answer, dict):
                users.update(_ids(answer.get("users")))
            else:
                missing += 1  # an older node: no members in its answer
        return sorted(self._presence_users(ref, channel, users, missing))

    def terminate_user(self, app: App, user_id: str) -> None:
        ref = self._app(app)
        self._call(lambda: app_proxy(ref).terminate_user(user_id))


def _is_presence(channel: str) -> bool:
    return names.channel_kind(channel) is names.ChannelKind.PRESENCE


def _count(value: Any) -> int:
    """A count from another node's answer (anything else counts 0: answers come off the bus)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _ids(value: Any) -> list[str]:
    """User ids from another node's answer."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

"""The node side of the HTTP API: answers ``transport.http_api.Backend``.

Runs in the HTTP request's greenlet on the node's hub, at the edge of the
actor system, so it may ``ask`` (always with a timeout): the app actor for
its channel table and the counts it keeps, a channel actor for its members.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from pykka import ActorDeadError, Timeout

from transport.config import App
from transport.errors import HttpError

from .messages import Publish
from .runtime import proxy_of

__all__ = ["NodeBackend"]

ASK_TIMEOUT = 5.0


class NodeBackend:
    """Implements the HTTP API's backend over a node's app actors."""

    def __init__(self, app_actors: dict[str, Any], adapter: Any) -> None:
        self.app_actors = app_actors
        self.adapter = adapter
        #: False once the node drains: a trigger is then refused (503), never
        #: answered 200 for an event the shutdown would drop.
        self.accepting = True

    def trigger(self, app: App, channels: Sequence[str], event: str, data: str, socket_id: str | None) -> None:
        # The same path as Node.broadcast: through the adapter to the app
        # actor, which encodes once per channel.
        if not self.accepting or app.id not in self.app_actors:
            raise HttpError(503, "Server is shutting down; try another node")
        self.adapter.publish(app.id, Publish(tuple(channels), event, data, socket_id, time.monotonic()))

    def _call(self, ref: Any, method: str, *args: Any) -> Any:
        try:
            return getattr(proxy_of(ref), method)(*args).get(timeout=ASK_TIMEOUT)
        except Timeout as exc:
            raise HttpError(503, "The node is too busy to answer; try again") from exc
        except ActorDeadError as exc:  # restarting after a bug, or shutting down
            raise HttpError(503, "The app is restarting; try again") from exc

    def _app(self, app: App) -> Any:
        ref = self.app_actors.get(app.id)
        if ref is None:
            raise HttpError(503, "Server is shutting down; try another node")
        return ref

    def channel_info(self, app: App, channel: str) -> dict[str, int] | None:
        # The app actor keeps every channel's counts as the channels report
        # them: one question to one actor, whatever the number of channels.
        counts = self._call(self._app(app), "channel_info", channel)
        return None if counts is None else _info(channel, counts)

    def channels(self, app: App) -> dict[str, dict[str, int]]:
        infos = self._call(self._app(app), "channels_info")
        return {name: _info(name, counts) for name, counts in infos.items()}

    def users(self, app: App, channel: str) -> list[str]:
        ref = self._call(self._app(app), "channel_ref", channel)
        if ref is None:
            return []
        try:
            return self._call(ref, "user_ids")
        except HttpError:
            return []  # retired between the two questions: it is empty

    def terminate_user(self, app: App, user_id: str) -> None:
        self._call(self._app(app), "terminate_user", user_id)


def _info(channel: str, counts: tuple[int, int]) -> dict[str, int]:
    subscriptions, users = counts
    if channel.startswith("presence-"):
        return {"subscription_count": subscriptions, "user_count": users}
    return {"subscription_count": subscriptions}

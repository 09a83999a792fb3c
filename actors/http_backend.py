"""The node side of the HTTP API: answers ``transport.http_api.Backend``.

Runs in the HTTP request's greenlet on the node's hub, at the edge of the
actor system, so it may ``ask`` (always with a timeout): the app actor for
its channel table, channel actors for their counts and members.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from pykka import ActorDeadError, Timeout

from transport.config import App
from transport.errors import HttpError

from .messages import Publish

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

    def _app_actor(self, app: App) -> Any:
        return self.app_actors[app.id]

    def trigger(self, app: App, channels: Sequence[str], event: str, data: str, socket_id: str | None) -> None:
        # The same path as Node.broadcast: through the adapter to the app
        # actor, which encodes once per channel.
        if not self.accepting or app.id not in self.app_actors:
            raise HttpError(503, "Server is shutting down; try another node")
        self.adapter.publish(app.id, Publish(tuple(channels), event, data, socket_id, time.monotonic()))

    def _ask(self, future: Any) -> Any:
        try:
            return future.get(timeout=ASK_TIMEOUT)
        except Timeout as exc:
            raise HttpError(503, "The node is too busy to answer; try again") from exc

    def _channel_ref(self, app: App, channel: str) -> Any:
        return self._ask(self._app_actor(app).proxy().channel_ref(channel))

    def channel_info(self, app: App, channel: str) -> dict[str, int] | None:
        ref = self._channel_ref(app, channel)
        if ref is None:
            return None
        try:
            return self._ask(ref.proxy().info())
        except ActorDeadError:
            return None  # retired between the two questions: it is empty

    def channels(self, app: App) -> dict[str, dict[str, int]]:
        refs = self._ask(self._app_actor(app).proxy().channel_refs())
        futures = {}
        for name, ref in refs.items():
            try:
                futures[name] = ref.proxy().info()
            except ActorDeadError:
                continue
        out = {}
        for name, future in futures.items():
            try:
                info = self._ask(future)
            except ActorDeadError:
                continue
            if info.get("subscription_count"):
                out[name] = info
        return out

    def users(self, app: App, channel: str) -> list[str]:
        ref = self._channel_ref(app, channel)
        if ref is None:
            return []
        try:
            return self._ask(ref.proxy().user_ids())
        except ActorDeadError:
            return []

    def terminate_user(self, app: App, user_id: str) -> None:
        self._ask(self._app_actor(app).proxy().terminate_user(user_id))

"""App configuration: who may connect, with which secrets and limits.

Pure data. A node serves one or more :class:`App` objects; the defaults give
the zero-config app (id ``1``, key ``app-key``, secret ``app-secret``). Limits
live here so every part of the node reads them from one place.

A config file is JSON: ``{"apps": [{"id": "1", "key": "...", "secret": "...",
"max_presence_members": 50, ...}]}`` (a bare list of apps works too).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .webhooks import Webhook, parse_webhooks

__all__ = ["App", "AppTable", "ServerLimits", "apps_from_env", "load_apps"]


@dataclass(frozen=True)
class App:
    """One Pusher app: credentials, switches and limits (Pusher's defaults)."""

    id: str = "1"
    key: str = "app-key"
    secret: str = "app-secret"
    enabled: bool = True
    enable_client_messages: bool = True
    enable_subscription_count: bool = False
    max_connections: int | None = None
    max_event_bytes: int = 10 * 1024
    max_channels_per_event: int = 100
    max_batch_events: int = 10
    max_presence_members: int = 100
    max_user_info_bytes: int = 2 * 1024
    max_channel_name_length: int = 200
    max_event_name_length: int = 200
    client_events_per_second: int = 10
    activity_timeout: int = 120
    pong_timeout: float = 30
    max_message_bytes: int = 64 * 1024
    max_buffer_bytes: int = 1 << 20
    # Webhooks (transport.webhooks): URLs with their event types, filter and headers.
    webhooks: tuple[Webhook, ...] = ()
    webhook_batching: bool = False
    webhook_batch_ms: float = 50
    webhook_delay_seconds: float = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", str(self.id))
        object.__setattr__(self, "webhooks", parse_webhooks(self.id, self.webhooks))
        if not isinstance(self.webhook_batching, bool):
            raise ConfigError(f"app {self.id}: 'webhook_batching' must be true or false")
        for name in ("webhook_batch_ms", "webhook_delay_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
                raise ConfigError(f"app {self.id}: '{name}' must be a number of 0 to 3600, not {value!r}")
        for name in ("key", "secret"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"app {self.id}: '{name}' must be a non-empty string")
        for name in ("activity_timeout", "pong_timeout", "client_events_per_second"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"app {self.id}: '{name}' must be a positive number")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("max_") and value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"app {self.id}: '{f.name}' must be a positive integer")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> App:
        """Build an app from a config mapping; unknown keys are an error (typos)."""
        if not isinstance(data, Mapping):
            raise ConfigError("each app must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown app setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc


@dataclass(frozen=True)
class ServerLimits:
    """How long and how much the node's port waits for and takes from a client.

    Every wait on the server is bounded by one of these (seconds), so a
    client that stalls (slowloris, a body that never comes, an idle
    kept-alive connection) costs a socket for a bounded time only.
    """

    header_timeout: float = 10.0  # from accept (or a kept-alive request's first byte) to the end of the head
    body_timeout: float = 10.0  # from the end of the head to the last byte of the body
    idle_timeout: float = 30.0  # a kept-alive HTTP connection waiting for its next request
    send_timeout: float = 10.0  # writing one HTTP response to a client that does not read
    max_head_bytes: int = 16 * 1024  # request line and headers; past it: 431
    max_headers: int = 100  # header fields; past it: 431
    max_body_bytes: int = 1 << 20  # HTTP API request bodies; past it: 413
    shutdown_grace: float = 5.0  # node.stop / SIGTERM: time to deliver what was accepted and close
    max_log_lines_per_client: int = 5  # refusal lines per client address in each log_window; the rest counted
    log_window: float = 10.0  # seconds; then one line says how many of a client's lines were held back

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"'{f.name}' must be a positive number, not {value!r}")
            if f.name.startswith("max_") and not isinstance(value, int):
                raise ConfigError(f"'{f.name}' must be a positive integer, not {value!r}")


class AppTable:
    """The apps a node serves, looked up by id or by key."""

    def __init__(self, apps: Iterable[App]) -> None:
        self._by_id: dict[str, App] = {}
        self._by_key: dict[str, App] = {}
        for app in apps:
            if app.id in self._by_id:
                raise ConfigError(f"duplicate app id {app.id}")
            if app.key in self._by_key:
                raise ConfigError(f"duplicate app key {app.key}")
            self._by_id[app.id] = app
            self._by_key[app.key] = app
        if not self._by_id:
            raise ConfigError("a node needs at least one app")

    def by_id(self, app_id: str) -> App | None:
        """The app with this id, or None."""
        return self._by_id.get(str(app_id))

    def by_key(self, key: str) -> App | None:
        """The app with this key, or None."""
        return self._by_key.get(key)

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)


def load_apps(text: str) -> list[App]:
    """Parse a JSON config file's text into apps."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"config is not valid JSON: {exc}") from exc
    if isinstance(data, Mapping):
        data = data.get("apps")
    if not isinstance(data, list) or not data:
        raise ConfigError('config must be {"apps": [ {...}, ... ]} with at least one app')
    return [App.from_dict(item) for item in data]


def apps_from_env(env: Mapping[str, str], base: App | None = None) -> App:
    """The default app, with ``ACTORCAST_APP_ID/KEY/SECRET`` overriding its fields."""
    base = base or App()
    changes: dict[str, Any] = {
        name: env[var]
        for name, var in (("id", "ACTORCAST_APP_ID"), ("key", "ACTORCAST_APP_KEY"), ("secret", "ACTORCAST_APP_SECRET"))
        if env.get(var)
    }
    return dataclasses.replace(base, **changes) if changes else base

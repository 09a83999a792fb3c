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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .checks import Problem, Rule, integer, number, string, switch
from .errors import ConfigError
from .webhooks import Webhook, parse_webhooks, webhooks_problems

__all__ = [
    "APP_RULES",
    "LIMIT_RULES",
    "App",
    "AppTable",
    "ServerLimits",
    "app_env_values",
    "app_problems",
    "apps_from_env",
    "load_apps",
]


def _app_id_ok(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return (isinstance(value, int) and value >= 0) or string().ok(value)


def _webhooks_text(text: str) -> Any:
    return json.loads(text)  # a ValueError if it is not JSON; the webhooks are checked after


#: What each app setting accepts (``webhooks`` is checked by transport.webhooks).
APP_RULES: dict[str, Rule] = {
    "id": Rule("a non-empty string or an integer", _app_id_ok, str),
    "key": string(),
    "secret": string(),
    "enabled": switch(),
    "enable_client_messages": switch(),
    "enable_subscription_count": switch(),
    "max_connections": integer(1, null=True),
    "max_event_bytes": integer(1),
    "max_channels_per_event": integer(1),
    "max_batch_events": integer(1),
    "max_presence_members": integer(1),
    "max_user_info_bytes": integer(1),
    "max_channel_name_length": integer(1),
    "max_event_name_length": integer(1),
    "client_events_per_second": number(positive=True),
    "activity_timeout": integer(1),  # seconds, sent to clients: Pusher sends an integer
    "pong_timeout": number(positive=True),
    "max_message_bytes": integer(1),
    "max_buffer_bytes": integer(1),
    "webhooks": Rule('a JSON list of {"url": ...} objects', lambda v: isinstance(v, (list, tuple)), _webhooks_text),
    "webhook_batching": switch(),
    "webhook_batch_ms": number(0, 3600),
    "webhook_delay_seconds": number(0, 3600),
}


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
    client_events_per_second: float = 10
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
        problems = [p for name, rule in APP_RULES.items() if name != "webhooks"
                    if (p := rule.check((name,), getattr(self, name))) is not None]
        problems += webhooks_problems(self.webhooks)
        if problems:
            raise ConfigError(f"app {self.id}: " + "; ".join(p.render_code() for p in problems))
        object.__setattr__(self, "id", str(self.id))
        object.__setattr__(self, "webhooks", parse_webhooks(self.id, self.webhooks))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> App:
        """Build an app from a config mapping; every mistake (unknown keys too) is in the ConfigError."""
        problems = app_problems(data)
        if problems:
            name = data.get("id", "?") if isinstance(data, Mapping) else "?"
            raise ConfigError(f"app {name}: " + "; ".join(p.render_code() for p in problems))
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """This app as a config file lists it."""
        out = dataclasses.asdict(self)
        out["webhooks"] = [hook.to_dict() for hook in self.webhooks]
        return out


def app_problems(data: Any, *, need_secret: bool = True) -> list[Problem]:
    """Every mistake in one app's config mapping: unknown keys, wrong types, no ``secret``."""
    if not isinstance(data, Mapping):
        return [Problem((), "a JSON object with id, key and secret", data)]
    known = ", ".join(APP_RULES)
    problems = []
    for name, value in data.items():
        rule = APP_RULES.get(name)
        if rule is None:
            problems.append(Problem((name,), note=f"unknown app setting; known: {known}"))
        elif name == "webhooks":
            problems += webhooks_problems(value)
        elif (bad := rule.check((name,), value)) is not None:
            problems.append(bad)
    if need_secret and "secret" not in data:
        problems.append(Problem(("secret",), note="missing: every app needs a secret of its own (SDKs sign with it)"))
    return problems


def app_env_values(env: Mapping[str, str], prefix: str = "ACTORCAST_APP_") -> tuple[dict[str, Any], list[Problem]]:
    """The app settings ``PREFIX<NAME>`` variables give (empty ones are unset), and what is wrong with them.

    A variable under ``prefix`` that names no setting is a problem too (a typo
    would otherwise be silently ignored).
    """
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    names = {f"{prefix}{name.upper()}": name for name in APP_RULES}
    for var in sorted(env):
        if not var.startswith(prefix) or not env[var]:
            continue
        name = names.get(var)
        if name is None:
            problems.append(Problem((var,), note=f"unknown app setting; known: {', '.join(sorted(names))}"))
            continue
        value, bad = APP_RULES[name].read((var,), env[var])
        nested = webhooks_problems(value, var) if bad is None and name == "webhooks" else []
        if bad is not None:
            problems.append(bad)
        elif nested:
            problems += nested
        else:
            values[name] = value
    return values, problems


LIMIT_RULES: dict[str, Rule] = {
    "header_timeout": number(positive=True),
    "body_timeout": number(positive=True),
    "idle_timeout": number(positive=True),
    "send_timeout": number(positive=True),
    "max_head_bytes": integer(1),
    "max_headers": integer(1),
    "max_body_bytes": integer(1),
    "shutdown_grace": number(positive=True),
    "max_log_lines_per_client": integer(1),
    "log_window": number(positive=True),
}


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
        problems = [p for name, rule in LIMIT_RULES.items() if (p := rule.check((name,), getattr(self, name)))]
        if problems:
            raise ConfigError("; ".join(p.render_code() for p in problems))


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

    def __iter__(self) -> Iterator[App]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)


def load_apps(text: str) -> list[App]:
    """Parse a JSON config file's text into apps; every mistake of every app is in the ConfigError."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"config is not valid JSON: {exc}") from exc
    if isinstance(data, Mapping):
        data = data.get("apps")
    if not isinstance(data, list) or not data:
        raise ConfigError('config must be {"apps": [ {...}, ... ]} with at least one app')
    problems = [p.under("apps", i) for i, item in enumerate(data) for p in app_problems(item)]
    if problems:
        raise ConfigError("; ".join(p.render_code() for p in problems))
    return [App(**item) for item in data]


def apps_from_env(env: Mapping[str, str], base: App | None = None) -> App:
    """The default app, with ``ACTORCAST_APP_<SETTING>`` variables overriding its fields."""
    base = base or App()
    changes, problems = app_env_values(env)
    if problems:
        raise ConfigError("; ".join(p.render() for p in problems))
    return dataclasses.replace(base, **changes) if changes else base

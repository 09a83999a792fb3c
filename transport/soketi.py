"""soketi's environment variables, read as actorcast settings.

soketi (1.x) is configured with ``SOKETI_<NAME>`` variables. A soketi user
moving here keeps their environment: each variable below sets the actorcast
setting it means, converted to our units (soketi counts milliseconds,
kilobytes and megabytes where we count seconds and bytes). The
``ACTORCAST_*`` variable of the same setting wins (``transport.settings``
applies them after these). Any other ``SOKETI_*`` variable gets one warning
naming it, so nothing is silently ignored::

    >>> found = read({"SOKETI_PORT": "6002", "SOKETI_DEFAULT_APP_MAX_CONNS": "-1", "SOKETI_NODE_ID": "a"})
    >>> found.node["port"], found.app["max_connections"]
    ((6002, 'SOKETI_PORT'), (None, 'SOKETI_DEFAULT_APP_MAX_CONNS'))
    >>> found.warnings
    ['SOKETI_NODE_ID is not supported by actorcast and is ignored']

soketi's server-wide limits (``SOKETI_PRESENCE_MAX_MEMBERS``, ...) are app
settings here; they apply to the default app (the one the environment
describes), as soketi's apply to its default app.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .checks import MISSING, Problem, Rule, choice, integer, number, string, switch
from .config import APP_RULES
from .webhooks import webhooks_problems

__all__ = ["ALIASES", "Alias", "Found", "read"]

SKIP: Any = object()  # the variable is understood and changes nothing (SOKETI_DEBUG=false)
_REDIS = "redis"


def _same(value: Any) -> Any:
    return value


def _kilobytes(value: float) -> int:
    return max(1, round(value * 1024))


@dataclass(frozen=True)
class Alias:
    """One soketi variable: the actorcast ``setting`` it sets (``app.<name>``: the default app's)."""

    setting: str
    rule: Rule
    convert: Callable[[Any], Any] = _same
    unsupported: Callable[[Any], str | None] = lambda value: None  # a value we cannot honour: why


def _positive_or_unlimited() -> Rule:
    def ok(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and (value == -1 or value >= 1)

    return dataclasses.replace(integer(-1), allowed="a positive integer, or -1 (no limit)", text_allowed="", ok=ok)


def _mode_unsupported(mode: str) -> str | None:
    if mode == "full":
        return None
    return f"SOKETI_MODE={mode} is not supported (an actorcast node always serves WebSockets and the HTTP API)"


#: soketi's variables that mean an actorcast setting, in the order they apply
#: (SOKETI_METRICS_ENABLED=false after the metrics port: it turns metrics off).
ALIASES: dict[str, Alias] = {
    "SOKETI_PORT": Alias("port", integer(0, 65535)),
    "SOKETI_METRICS_SERVER_PORT": Alias("metrics_port", integer(0, 65535)),
    "SOKETI_METRICS_ENABLED": Alias("metrics_port", switch(), lambda on: SKIP if on else None),
    "SOKETI_DEBUG": Alias("log_level", switch(), lambda on: "DEBUG" if on else SKIP),
    "SOKETI_MODE": Alias("mode", choice(("full", "server", "worker")), lambda mode: SKIP, _mode_unsupported),
    "SOKETI_SSL_CERT": Alias("tls_cert", string()),
    "SOKETI_SSL_KEY": Alias("tls_key", string()),
    "SOKETI_SHUTDOWN_GRACE_PERIOD": Alias("shutdown_grace", number(positive=True), lambda ms: ms / 1000),
    "SOKETI_HTTP_MAX_REQUEST_SIZE": Alias("max_body_bytes", number(positive=True),
                                          lambda mb: max(1, round(mb * 1024 * 1024))),
    "SOKETI_ADAPTER_DRIVER": Alias("adapter", choice(("local", _REDIS)), lambda d: None if d == "local" else _REDIS),
    "SOKETI_DEFAULT_APP_ID": Alias("app.id", string()),
    "SOKETI_DEFAULT_APP_KEY": Alias("app.key", string()),
    "SOKETI_DEFAULT_APP_SECRET": Alias("app.secret", string()),
    "SOKETI_DEFAULT_APP_ENABLED": Alias("app.enabled", switch()),
    "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": Alias("app.enable_client_messages", switch()),
    "SOKETI_DEFAULT_APP_MAX_CONNS": Alias("app.max_connections", _positive_or_unlimited(),
                                          lambda n: None if n == -1 else n),
    "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": Alias(
        "app.client_events_per_second",
        dataclasses.replace(number(positive=True), allowed="a positive number (actorcast always limits client events)"),
    ),
    "SOKETI_DEFAULT_APP_WEBHOOKS": Alias("app.webhooks", APP_RULES["webhooks"]),
    "SOKETI_WEBHOOKS_BATCHING": Alias("app.webhook_batching", switch()),
    "SOKETI_WEBHOOKS_BATCHING_DURATION": Alias("app.webhook_batch_ms", number(0, 3600)),  # ms in both
    "SOKETI_EVENT_MAX_CHANNELS_AT_ONCE": Alias("app.max_channels_per_event", integer(1)),
    "SOKETI_EVENT_MAX_NAME_LENGTH": Alias("app.max_event_name_length", integer(1)),
    "SOKETI_EVENT_MAX_SIZE_IN_KB": Alias("app.max_event_bytes", number(positive=True), _kilobytes),
    "SOKETI_EVENT_MAX_BATCH_SIZE": Alias("app.max_batch_events", integer(1)),
    "SOKETI_CHANNEL_LIMITS_MAX_NAME_LENGTH": Alias("app.max_channel_name_length", integer(1)),
    "SOKETI_PRESENCE_MAX_MEMBERS": Alias("app.max_presence_members", integer(1)),
    "SOKETI_PRESENCE_MAX_MEMBER_SIZE": Alias("app.max_user_info_bytes", number(positive=True), _kilobytes),
}

#: The Redis connection, read when SOKETI_ADAPTER_DRIVER=redis (soketi's defaults).
REDIS_PARTS: dict[str, tuple[Rule, Any]] = {
    "SOKETI_DB_REDIS_HOST": (string(), "127.0.0.1"),
    "SOKETI_DB_REDIS_PORT": (integer(1, 65535), 6379),
    "SOKETI_DB_REDIS_DB": (integer(0), 0),
    "SOKETI_DB_REDIS_USERNAME": (string(), ""),
    "SOKETI_DB_REDIS_PASSWORD": (string(), ""),
}

_WHY = {  # what a soketi user would otherwise wonder about
    "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "actorcast does not rate-limit HTTP triggers",
    "SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC": "actorcast does not rate-limit HTTP reads",
    "SOKETI_APP_MANAGER_DRIVER": "apps come from the config file or ACTORCAST_APP_* (no database drivers)",
    "SOKETI_SSL_PASS": "the TLS key must not be encrypted",
}


@dataclass
class Found:
    """What soketi's variables say: ``setting -> (value, variable)`` for the node and the default app."""

    node: dict[str, tuple[Any, str]] = field(default_factory=dict)
    app: dict[str, tuple[Any, str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read(env: Mapping[str, str]) -> Found:
    """Every ``SOKETI_*`` variable of ``env`` (empty ones are unset) as actorcast settings."""
    found = Found()
    for var, alias in ALIASES.items():
        text = env.get(var)
        if not text:
            continue
        value, bad = alias.rule.read((var,), text)
        nested = webhooks_problems(value, var) if bad is None and alias.setting == "app.webhooks" else []
        if bad is not None or nested:
            found.problems += [bad] if bad is not None else nested
            continue
        why = alias.unsupported(value)
        if why:
            found.warnings.append(why)
            continue
        value = alias.convert(value)
        if value is SKIP:
            continue
        if alias.setting.startswith("app."):
            found.app[alias.setting[4:]] = (value, var)
        else:
            found.node[alias.setting] = (value, var)
    _redis(env, found)
    for var in sorted(env):
        if var.startswith("SOKETI_") and env[var] and var not in ALIASES and var not in REDIS_PARTS:
            why = _WHY.get(var)
            found.warnings.append(f"{var} is not supported by actorcast and is ignored" + (f" ({why})" if why else ""))
    return found


def _redis(env: Mapping[str, str], found: Found) -> None:
    """``SOKETI_ADAPTER_DRIVER=redis``: the adapter URL from soketi's ``SOKETI_DB_REDIS_*``."""
    given = [var for var in REDIS_PARTS if env.get(var)]
    if found.node.get("adapter", (None,))[0] != _REDIS:
        found.warnings.extend(f"{var} is ignored: actorcast uses Redis only as the adapter "
                              f"(SOKETI_ADAPTER_DRIVER=redis)" for var in given)
        return
    parts: dict[str, Any] = {}
    for var, (rule, default) in REDIS_PARTS.items():
        value, bad = rule.read((var,), env[var]) if env.get(var) else (default, None)
        if bad is not None:
            found.problems.append(bad)
        parts[var.rsplit("_", 1)[1]] = value
    if any(value is MISSING for value in parts.values()):
        del found.node["adapter"]
        return
    user, password = quote(parts["USERNAME"], safe=""), quote(parts["PASSWORD"], safe="")
    auth = f"{user}:{password}@" if user or password else ""
    host = f"[{parts['HOST']}]" if ":" in parts["HOST"] else parts["HOST"]
    found.node["adapter"] = (f"redis://{auth}{host}:{parts['PORT']}/{parts['DB']}", "SOKETI_ADAPTER_DRIVER")

"""Every setting of a node in one place: where it comes from and what it may be.

Pure code (no sockets, no gevent, no pykka). Sources, the first that sets a
value wins:

1. flags (``--port 7000``),
2. the config file (``--config FILE`` / ``ACTORCAST_CONFIG``): top-level keys
   for the node, ``"apps"`` for the apps,
3. the environment: ``ACTORCAST_<SETTING>`` for the node and
   ``ACTORCAST_APP_<SETTING>`` for the default app, then soketi's variables
   (``transport.soketi``),
4. the defaults (:class:`NodeSettings`).

:func:`resolve` checks everything and raises one :class:`SettingsError`
holding every problem, each a line naming the flag, variable or file and key::

    >>> settings, warnings = resolve({"port": "7000"}, {"ACTORCAST_APP_KEY": "k", "ACTORCAST_APP_SECRET": "s"})
    >>> settings.port, settings.apps[0].key
    (7000, 'k')
    >>> resolve({"port": "99999"}, {"ACTORCAST_LOG_LEVEL": "verbose"})
    Traceback (most recent call last):
    ...
    transport.settings.SettingsError: ACTORCAST_LOG_LEVEL must be one of debug, info, warning, error, critical, not "verbose"
    --port must be an integer from 0 to 65535, not "99999"
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import soketi
from .checks import Problem, Rule, choice, integer, number, string, switch
from .config import LIMIT_RULES, App, ServerLimits, app_env_values, app_problems
from .errors import ConfigError

__all__ = ["ENV_PREFIX", "INTERNAL_ENV", "NODE_RULES", "NodeSettings", "SettingsError", "flag_name", "resolve"]

ENV_PREFIX = "ACTORCAST_"
#: Variables a supervisor gives its workers (actors.workers): not settings.
INTERNAL_ENV = frozenset({"ACTORCAST_WORKER_ID", "ACTORCAST_BUS_SOCKET", "ACTORCAST_READY_FD",
                          "ACTORCAST_SUPERVISOR_PID"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LIMITS = ServerLimits()
_MASK = "********"


class SettingsError(ConfigError):
    """The settings are wrong; ``problems`` holds one line per mistake (all of them)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


def _cores() -> int:
    # The cores this process may run on (a container's CPU set), not all the machine has.
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _workers_ok(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "auto"
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _workers_text(text: str) -> Any:
    return text if text.strip().lower() == "auto" else int(text.strip(), 10)


def _adapter_ok(value: Any) -> bool:
    return value is None or (string().ok(value) and (value == "local" or value.startswith(_ADAPTER_SCHEMES)))


_ADAPTER_SCHEMES = ("redis://", "rediss://", "unix://")

#: What each node setting accepts (the apps are checked by transport.config).
NODE_RULES: dict[str, Rule] = {
    "host": string(),
    "port": integer(0, 65535),
    "metrics_host": string(null=True),
    "metrics_port": dataclasses.replace(
        integer(-1, 65535, null=True), allowed="an integer from 0 to 65535, or -1 (off)",
        text_allowed="an integer from 0 to 65535, or -1 (off)", normal=lambda v: None if v == -1 else v),
    "workers": Rule("a positive number or 'auto'", _workers_ok, _workers_text,
                    normal=lambda v: _cores() if isinstance(v, str) else v),
    "adapter": Rule("redis://[:password@]host:port/db (or rediss://, unix://path), or local", _adapter_ok,
                    lambda text: text, normal=lambda v: None if v == "local" else v),
    "log_level": choice(LOG_LEVELS, upper=True),
    "log_format": choice(("text", "json")),
    "tls_cert": string(null=True),
    "tls_key": string(null=True),
    "metrics_tls": switch(),
    **LIMIT_RULES,
    "heartbeat_interval": number(positive=True),
    "request_timeout": number(positive=True),
}


@dataclass(frozen=True)
class NodeSettings:
    """Everything a node runs with, checked (see :func:`resolve`)."""

    host: str = "0.0.0.0"
    port: int = 6001
    metrics_host: str | None = None  # None: the same as host
    metrics_port: int | None = 9601  # None: no metrics port
    workers: int = 1
    adapter: str | None = None  # None: one node on its own
    log_level: str = "INFO"
    log_format: str = "text"
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics_tls: bool = False
    header_timeout: float = _LIMITS.header_timeout
    body_timeout: float = _LIMITS.body_timeout
    idle_timeout: float = _LIMITS.idle_timeout
    send_timeout: float = _LIMITS.send_timeout
    max_head_bytes: int = _LIMITS.max_head_bytes
    max_headers: int = _LIMITS.max_headers
    max_body_bytes: int = _LIMITS.max_body_bytes
    shutdown_grace: float = _LIMITS.shutdown_grace
    max_log_lines_per_client: int = _LIMITS.max_log_lines_per_client
    log_window: float = _LIMITS.log_window
    heartbeat_interval: float = 2.0
    request_timeout: float = 0.5
    apps: tuple[App, ...] = (App(),)

    @property
    def limits(self) -> ServerLimits:
        """The :class:`ServerLimits` part."""
        return ServerLimits(**{name: getattr(self, name) for name in LIMIT_RULES})

    def node_kwargs(self) -> dict[str, Any]:
        """The ``Node(...)`` arguments (TLS ones only when set)."""
        kwargs: dict[str, Any] = {
            "apps": list(self.apps), "host": self.host, "port": self.port, "metrics_host": self.metrics_host,
            "metrics_port": self.metrics_port, "limits": self.limits, "adapter": self.adapter,
            "heartbeat_interval": self.heartbeat_interval, "request_timeout": self.request_timeout,
        }
        if self.tls_cert is not None:
            kwargs["tls_cert"] = self.tls_cert
        if self.tls_key is not None:
            kwargs["tls_key"] = self.tls_key
        if self.metrics_tls:
            kwargs["metrics_tls"] = True
        return kwargs

    def secret_warnings(self) -> list[str]:
        """One line per app whose secret is the well-known default (the zero-config try-out app)."""
        return [f"app {app.id} (key {app.key}) has the well-known secret {App.secret!r}: anyone who can reach "
                "the node can sign API calls and private subscriptions for it; fine for a try-out, otherwise set "
                "ACTORCAST_APP_SECRET (or the app's secret in the config file)"
                for app in self.apps if app.secret == App.secret]

    def to_dict(self, *, mask: bool = True) -> dict[str, Any]:
        """As a config file would say it; ``mask`` hides secrets (app secrets, passwords, header values)."""
        out = {name: getattr(self, name) for name in NODE_RULES}
        out["log_level"] = self.log_level.lower()  # as the README, --help and the flag say it
        out["apps"] = [app.to_dict() for app in self.apps]
        if mask:
            out["adapter"] = _mask_url(self.adapter)
            for app in out["apps"]:
                app["secret"] = _MASK
                for hook in app["webhooks"]:
                    if "headers" in hook:  # often an Authorization
                        hook["headers"] = {name: _MASK for name in hook["headers"]}
        return out


def flag_name(setting: str) -> str:
    """``metrics_port`` -> ``--metrics-port``."""
    return "--" + setting.replace("_", "-")


def env_name(setting: str) -> str:
    """``metrics_port`` -> ``ACTORCAST_METRICS_PORT``."""
    return ENV_PREFIX + setting.upper()


class _Layers:
    """The values found so far, each with where it came from (later layers win)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origin: dict[str, str] = {}
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def set(self, name: str, value: Any, origin: str) -> None:
        self.values[name] = value
        self.origin[name] = origin

    def label(self, name: str) -> str:
        return self.origin.get(name, f"{name} (default)")


def resolve(flags: Mapping[str, Any], env: Mapping[str, str]) -> tuple[NodeSettings, list[str]]:
    """The settings ``flags`` (argparse's ``dest -> text``, ``config`` included), the config file and ``env`` give.

    Returns the settings and warnings to log (soketi variables we do not
    support, ...); raises :class:`SettingsError` listing every problem.
    """
    layers = _Layers()
    found = soketi.read(env)
    layers.problems += [p.render() for p in found.problems]
    layers.warnings += found.warnings
    for name, (value, var) in found.node.items():
        layers.set(name, value, var)
    _read_env(env, layers)
    app_values, problems = app_env_values(env)
    layers.problems += [p.render() for p in problems]
    app_values = {**{name: value for name, (value, _) in found.app.items()}, **app_values}
    app_vars = sorted({var for _, var in found.app.values()} | {v for v in env if v.startswith("ACTORCAST_APP_") and env[v]})
    path = flags.get("config") or env.get("ACTORCAST_CONFIG") or None
    apps = _read_file(path, layers) if path else None
    _read_flags(flags, layers)
    if apps is None:  # the default app, as the environment describes it
        own = [var for var in app_vars if var.endswith(("_APP_ID", "_APP_KEY"))]
        if own and "secret" not in app_values:
            # A real app, but with the secret everyone knows: anyone could sign API calls for it.
            layers.problems.append(f"{' and '.join(own)} set but no secret: an app of your own needs a secret of "
                                   "its own too, the SDKs sign with it (set ACTORCAST_APP_SECRET)")
        apps = [App(**app_values)] if not layers.problems else []
    elif app_vars:
        layers.warnings.append(f"{', '.join(app_vars)} ignored: the config file {path} lists the apps")
    _cross_checks(layers)
    if layers.problems:
        raise SettingsError(layers.problems)
    return NodeSettings(**layers.values, apps=tuple(apps)), layers.warnings


def _read_env(env: Mapping[str, str], layers: _Layers) -> None:
    known = {env_name(name): name for name in NODE_RULES}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or not env[var] or var.startswith("ACTORCAST_APP_"):
            continue
        name = known.get(var)
        if name is None:
            if var not in INTERNAL_ENV and var != "ACTORCAST_CONFIG":
                layers.warnings.append(f"{var} is not an actorcast setting and is ignored (see actorcast --help)")
            continue
        value, bad = NODE_RULES[name].read((var,), env[var])
        if bad is not None:
            layers.problems.append(bad.render())
        else:
            layers.set(name, value, var)


def _read_flags(flags: Mapping[str, Any], layers: _Layers) -> None:
    for name, given in flags.items():
        rule = NODE_RULES.get(name)
        if rule is None or given is None:
            continue  # "config", the command
        if isinstance(given, bool):  # a switch flag (--metrics-tls)
            layers.set(name, given, flag_name(name))
            continue
        value, bad = rule.read((flag_name(name),), given)
        if bad is not None:
            layers.problems.append(bad.render())
        else:
            layers.set(name, value, flag_name(name))


class _Twice(ValueError):
    """A JSON object names one key twice (json.loads would keep the last silently)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Twice(f"the key {json.dumps(key)} is given twice in one object")
        seen[key] = value
    return seen


def _read_file(path: str, layers: _Layers) -> list[App] | None:
    """Read the config file into ``layers``; its apps (None: it lists none; ``[]``: it is wrong)."""
    where = f"{path}: "
    try:
        with open(path, encoding="utf-8") as f:
            data = json.loads(f.read(), object_pairs_hook=_no_duplicates)
    except OSError as exc:
        layers.problems.append(f"cannot read config {path}: {exc.strerror or exc}")
        return []
    except UnicodeDecodeError as exc:
        layers.problems.append(f"{where}not valid JSON: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return []
    except _Twice as exc:
        layers.problems.append(f"{where}{exc}")
        return []
    except ValueError as exc:
        layers.problems.append(f"{where}not valid JSON: {exc}")
        return []
    if isinstance(data, list):  # a bare list of apps (the old form)
        data = {"apps": data}
    if not isinstance(data, dict):
        layers.problems.append(f'{where}must be a JSON object of settings, with the apps in "apps": [...]')
        return []
    problems: list[Problem] = []
    for key, value in data.items():
        rule = NODE_RULES.get(key)
        if key == "apps":
            continue
        if rule is None:
            problems.append(Problem((key,), note=f"unknown setting; known: apps, {', '.join(NODE_RULES)}"))
        elif (bad := rule.check((key,), value)) is not None:
            problems.append(bad)
        else:
            layers.set(key, rule.value(value), f"{where}{key}")
    apps = data.get("apps")
    if apps is not None:
        problems += _apps_problems(apps)
    layers.problems += [p.render(where) for p in problems]
    if apps is None:
        return None
    return [] if problems else [App(**item) for item in apps]


def _apps_problems(apps: Any) -> list[Problem]:
    if not isinstance(apps, list) or not apps:
        return [Problem(("apps",), "a list of at least one app", apps)]
    problems = [p.under("apps", i) for i, item in enumerate(apps) for p in app_problems(item)]
    for field in ("id", "key"):
        first: dict[str, int] = {}
        for i, item in enumerate(apps):
            if not isinstance(item, Mapping):
                continue
            value = str(item.get(field, getattr(App, field)))
            if value in first:
                problems.append(Problem(("apps", i, field),
                                        note=f"duplicate app {field} {value!r} (apps[{first[value]}] has it too)"))
            first.setdefault(value, i)
    return problems


def _cross_checks(layers: _Layers) -> None:
    """What no setting can say on its own: TLS settings that go together, distinct ports.

    The TLS files themselves are read (and their mistakes named) by ``transport.tls`` at start.
    """
    values = layers.values
    cert, key = values.get("tls_cert"), values.get("tls_key")
    if key is not None and cert is None:  # a certificate alone is fine: its file may hold the key
        layers.problems.append(f"{layers.label('tls_key')} is set but tls_cert is not: a TLS key needs its "
                               f"certificate ({flag_name('tls_cert')} FILE)")
    if values.get("metrics_tls") and cert is None:
        layers.problems.append(f"{layers.label('metrics_tls')} needs TLS: give --tls-cert and --tls-key too")
    port, metrics = values.get("port", NodeSettings.port), values.get("metrics_port", NodeSettings.metrics_port)
    same_host = values.get("metrics_host") in (None, values.get("host", NodeSettings.host))
    if port and port == metrics and same_host:
        layers.problems.append(f"{layers.label('metrics_port')} is {metrics}, the main port too "
                               f"({layers.label('port')}): the metrics port needs one of its own (or -1: off)")


def _mask_url(url: str | None) -> str | None:
    """``redis://:secret@host/0`` -> ``redis://:********@host/0``."""
    if not url or "@" not in url:
        return url
    parts = urlsplit(url)
    user, _, password = parts.netloc.rpartition("@")[0].partition(":")
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:{_MASK}@{host}" if password else f"{_MASK}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))

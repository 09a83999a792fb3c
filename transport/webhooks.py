"""Webhooks, as Pusher sends them: events, filters, bodies, headers, batches, retries.

Pure code (no sockets, no actors). The webhook actor (``actors.webhooks``)
builds events with the functions below, keeps those a :class:`Webhook`
wants, holds back ``channel_vacated`` / ``member_removed`` in a
:class:`Delayer` (a page reload sends nothing), and POSTs
:func:`body` with :func:`request_headers`, retrying as
:func:`next_retry` says::

    >>> hook = Webhook.from_dict({"url": "http://example.com/hook", "event_types": ["channel_occupied"]})
    >>> hook.wants(channel_occupied("news"))
    True
    >>> hook.wants(member_added("presence-x", "u1"))
    False
    >>> body([channel_occupied("news")], 1700000000000)
    b'{"time_ms":1700000000000,"events":[{"name":"channel_occupied","channel":"news"}]}'
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .auth import webhook_signature
from .checks import MISSING, Problem, string
from .errors import ConfigError

__all__ = [
    "DELAYED",
    "EVENT_TYPES",
    "MAX_BATCH_EVENTS",
    "SHARED",
    "Delayer",
    "Webhook",
    "batches",
    "body",
    "cache_miss",
    "channel_occupied",
    "channel_vacated",
    "client_event",
    "member_added",
    "member_removed",
    "lane_of",
    "next_retry",
    "parse_webhooks",
    "request_headers",
    "retryable",
    "subject",
    "subscription_count",
    "webhook_problems",
    "webhooks_problems",
]

EVENT_TYPES = (
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
)
#: Events held back for the app's ``webhook_delay_seconds``, cancelled by a quick return.
DELAYED = frozenset({"channel_vacated", "member_removed"})
#: Events about the whole cluster's state: every node works them out, one node sends them
#: (``transport.webhook_ledger``). The others are sent by the node that saw them.
SHARED = frozenset({"channel_occupied", "channel_vacated", "member_added", "member_removed"})
MAX_BATCH_EVENTS = 100  # events in one POST (Pusher's batch size)

FIRST_RETRY = 1.0  # seconds before the first retry; then doubling
MAX_RETRY_GAP = 60.0  # seconds between two attempts at most
RETRY_FOR = 300.0  # seconds after the first attempt past which a webhook is given up

# --- events ------------------------------------------------------------------


def channel_occupied(channel: str) -> dict[str, Any]:
    """The channel's first subscriber (anywhere) joined."""
    return {"name": "channel_occupied", "channel": channel}


def channel_vacated(channel: str) -> dict[str, Any]:
    """The channel's last subscriber (anywhere) left."""
    return {"name": "channel_vacated", "channel": channel}


def member_added(channel: str, user_id: str) -> dict[str, Any]:
    """A user's first socket (anywhere) joined a presence channel."""
    return {"name": "member_added", "channel": channel, "user_id": user_id}


def member_removed(channel: str, user_id: str) -> dict[str, Any]:
    """A user's last socket (anywhere) left a presence channel."""
    return {"name": "member_removed", "channel": channel, "user_id": user_id}


def client_event(channel: str, event: str, data: Any, socket_id: str, user_id: str | None = None) -> dict[str, Any]:
    """A client event a subscriber sent (``user_id`` on presence channels); ``data`` as the client sent it."""
    out = {"name": "client_event", "channel": channel, "event": event, "data": data, "socket_id": socket_id}
    if user_id is not None:
        out["user_id"] = user_id
    return out


def cache_miss(channel: str) -> dict[str, Any]:
    """A subscriber joined a cache channel holding no event."""
    return {"name": "cache_miss", "channel": channel}


def subscription_count(channel: str, count: int) -> dict[str, Any]:
    """A channel's subscription count changed."""
    return {"name": "subscription_count", "channel": channel, "subscription_count": count}


# --- configuration -------------------------------------------------------------

_HOOK_KEYS = ("event_types", "filter", "headers", "url")
_FILTERS = ("channel_name_starts_with", "channel_name_ends_with")
_RESERVED_HEADERS = ("content-length", "host", "transfer-encoding", "connection")
_TOKEN_EXTRA = "!#$%&'*+-.^_`|~"
_URL = string()
_TEXT = string(empty=True)


def webhook_problems(data: Any) -> list[Problem]:
    """Every mistake in one webhook's config mapping (paths relative to it); [] if it is valid."""
    if not isinstance(data, Mapping):
        return [Problem((), 'an object with a "url"', data)]
    problems = [Problem((key,), note=f"unknown setting; a webhook has: {', '.join(_HOOK_KEYS)}")
                for key in data if key not in _HOOK_KEYS]
    url = data.get("url", MISSING)
    if url is MISSING:
        problems.append(Problem(("url",), _URL.allowed))
    elif (bad := _URL.check(("url",), url)) is not None:
        problems.append(bad)
    else:
        from .http_client import parse_url  # config-time check of what the sender will need

        try:
            parse_url(url)
        except ValueError as exc:
            problems.append(Problem(("url",), note=str(exc)))
    types = data.get("event_types")
    if types is not None:
        if not isinstance(types, (list, tuple)) or not types:
            problems.append(Problem(("event_types",), "a non-empty list of event types (omit it for every event)",
                                    types))
        else:
            problems.extend(Problem(("event_types", i), note=f"unknown event type {t!r}; known: {', '.join(EVENT_TYPES)}")
                            for i, t in enumerate(types) if t not in EVENT_TYPES)
    filt = data.get("filter")
    if filt is not None and not isinstance(filt, Mapping):
        problems.append(Problem(("filter",), "an object", filt))
    elif filt is not None:
        for name, value in filt.items():
            if name not in _FILTERS:
                problems.append(Problem(("filter", name), note=f"unknown filter; known: {', '.join(_FILTERS)}"))
            elif (bad := _TEXT.check(("filter", name), value)) is not None:
                problems.append(bad)
    headers = data.get("headers")
    if headers is not None and not isinstance(headers, Mapping):
        problems.append(Problem(("headers",), "an object of header names to values", headers))
    elif headers is not None:
        for name, value in headers.items():
            problems.extend(_header_problems(name, value))
    return problems


def _header_problems(name: Any, value: Any) -> list[Problem]:
    path = ("headers", str(name))
    if not isinstance(name, str) or not name or not all(c.isascii() and (c.isalnum() or c in _TOKEN_EXTRA) for c in name):
        return [Problem(path, note=f"header name {name!r} is not a valid HTTP token")]
    if name.lower() in _RESERVED_HEADERS:
        return [Problem(path, note=f"header {name!r} is set by the sender and cannot be configured")]
    bad = _TEXT.check(path, value)
    return [bad] if bad is not None else []


@dataclass(frozen=True)
class Webhook:
    """One webhook URL of an app: which events it wants, and extra headers to send."""

    url: str
    event_types: frozenset[str] | None = None  # None: every event type
    starts_with: str = ""
    ends_with: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_dict(cls, data: Any, where: str = "webhook") -> Webhook:
        """A webhook from its config mapping; every mistake is in the ConfigError (see :func:`webhook_problems`)."""
        if isinstance(data, Webhook):
            return data
        problems = webhook_problems(data)
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(p.render_code() for p in problems))
        types = data.get("event_types")
        filt = data.get("filter") or {}
        return cls(
            data["url"],
            None if types is None else frozenset(types),
            filt.get("channel_name_starts_with", ""),
            filt.get("channel_name_ends_with", ""),
            tuple((data.get("headers") or {}).items()),
        )

    def to_dict(self) -> dict[str, Any]:
        """The config mapping this webhook was built from (as a config file writes it)."""
        out: dict[str, Any] = {"url": self.url}
        if self.event_types is not None:
            out["event_types"] = [t for t in EVENT_TYPES if t in self.event_types]
        filt = {k: v for k, v in zip(_FILTERS, (self.starts_with, self.ends_with), strict=True) if v}
        if filt:
            out["filter"] = filt
        if self.headers:
            out["headers"] = dict(self.headers)
        return out

    def wants(self, event: Mapping[str, Any]) -> bool:
        """True if this webhook takes ``event`` (its type and channel filter)."""
        if self.event_types is not None and event["name"] not in self.event_types:
            return False
        channel = event.get("channel", "")
        return channel.startswith(self.starts_with) and channel.endswith(self.ends_with)


def webhooks_problems(value: Any, name: str = "webhooks") -> list[Problem]:
    """Every mistake in an app's ``webhooks`` setting (paths start at ``name``: the key or variable)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [Problem((name,), 'a list of {"url": ...} objects', value)]
    return [p.under(name, i) for i, item in enumerate(value) if not isinstance(item, Webhook)
            for p in webhook_problems(item)]


def parse_webhooks(app_id: str, value: Any) -> tuple[Webhook, ...]:
    """The app's ``webhooks`` setting (a list of mappings or :class:`Webhook`) as a tuple."""
    problems = webhooks_problems(value)
    if problems:
        raise ConfigError(f"app {app_id}: " + "; ".join(p.render_code() for p in problems))
    return tuple(Webhook.from_dict(item) for item in value or ())


# --- the request -----------------------------------------------------------------


def body(events: Iterable[Mapping[str, Any]], time_ms: int) -> bytes:
    """The POST body ``{"time_ms": ..., "events": [...]}`` as UTF-8 JSON."""
    text = json.dumps({"time_ms": time_ms, "events": list(events)}, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def request_headers(key: str, secret: str, payload: bytes, extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """Headers of a webhook POST: JSON, the app key and the body's signature, then the configured ones."""
    headers = [
        ("Content-Type", "application/json"),
        ("X-Pusher-Key", key),
        ("X-Pusher-Signature", webhook_signature(secret, payload)),
    ]
    ours = {name.lower() for name, _ in headers}
    headers.extend((name, value) for name, value in extra if name.lower() not in ours)
    return headers


def lane_of(channel: str, lanes: int) -> int:
    """Which of a URL's ``lanes`` carries the events of ``channel``: the same on every node and run.

    One lane sends one request at a time, so a channel's events arrive in
    order while the other lanes go on past a slow or failing request.
    """
    return zlib.crc32(channel.encode("utf-8", "surrogatepass")) % lanes if lanes > 1 else 0


_E = TypeVar("_E")


def batches(events: list[_E], limit: int = MAX_BATCH_EVENTS) -> list[list[_E]]:
    """``events`` cut into POSTs of at most ``limit`` events, in order."""
    return [events[i : i + limit] for i in range(0, len(events), limit)]


# --- retries -----------------------------------------------------------------------


def retryable(status: int | None) -> bool:
    """Worth another attempt: a connection error or timeout (None), 5xx, 408 or 429."""
    return status is None or status >= 500 or status in (408, 429)


def next_retry(
    attempt: int,
    elapsed: float,
    status: int | None,
    *,
    first: float = FIRST_RETRY,
    max_gap: float = MAX_RETRY_GAP,
    retry_for: float = RETRY_FOR,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None: delivered, or given up.

    ``attempt`` counts attempts made (1 after the first), ``elapsed`` is the
    time since the first one, ``status`` what the last one got (None for a
    connection error or timeout). 2xx and 3xx are delivered; other 4xx are
    the receiver's final word; the rest are retried after ``first`` seconds,
    doubling, at most ``max_gap`` apart, while within ``retry_for``.
    """
    if status is not None and status < 400:
        return None
    if not retryable(status):
        return None
    delay = min(first * 2 ** (attempt - 1), max_gap)
    if elapsed + delay > retry_for:
        return None
    return delay


# --- the delay on vacated / removed -------------------------------------------------


def subject(event: Mapping[str, Any]) -> tuple[str, ...]:
    """What an occupancy or member event is about: ``("channel", name)`` or ``("member", name, user_id)``."""
    if event["name"] in ("member_added", "member_removed"):
        return ("member", event["channel"], event["user_id"])
    return ("channel", event["channel"])


class Delayer:
    """Holds ``channel_vacated`` / ``member_removed`` for ``delay`` seconds.

    A ``channel_occupied`` / ``member_added`` for what is held cancels both:
    the channel (or user) came back in time, nothing changed for the app::

        >>> d = Delayer(3.0)
        >>> d.offer(channel_vacated("news"), now=10.0)
        []
        >>> d.offer(channel_occupied("news"), now=11.0)
        []
        >>> d.offer(channel_vacated("news"), now=12.0), d.due(now=15.0)
        ([], [{'name': 'channel_vacated', 'channel': 'news'}])
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._held: dict[tuple[str, ...], tuple[float, dict[str, Any]]] = {}  # insertion order = due order

    def offer(self, event: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """What to send now for ``event`` (it, nothing, or with no delay configured: it)."""
        name = event["name"]
        if name in DELAYED:
            if self.delay <= 0:
                return [event]
            key = subject(event)
            self._held.pop(key, None)
            self._held[key] = (now + self.delay, event)
            return []
        if name in ("channel_occupied", "member_added") and self._held.pop(subject(event), None) is not None:
            return []  # came back within the delay: neither the held event nor this one
        return [event]

    def due(self, now: float) -> list[dict[str, Any]]:
        """The held events whose delay has passed, oldest first."""
        out = []
        for key, (when, event) in list(self._held.items()):
            if when > now:
                break
            del self._held[key]
            out.append(event)
        return out

    def next_due(self) -> float | None:
        """When the oldest held event is due, or None."""
        for when, _ in self._held.values():
            return when
        return None

    def flush(self) -> list[dict[str, Any]]:
        """Every held event, now (shutdown)."""
        out = [event for _, event in self._held.values()]
        self._held.clear()
        return out

    def __len__(self) -> int:
        return len(self._held)

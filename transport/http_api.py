"""The Pusher HTTP API as pure code: a request in, a status and a JSON body out.

:func:`handle_request` routes, checks the signature (``http_signing``),
validates bodies and limits, and calls a :class:`Backend` for what only the
node knows (who is subscribed) or does (deliver an event). Every refusal is
an :class:`~transport.errors.HttpError` turned into ``{"error": "..."}``.

Every string from the request is checked here, before a backend sees it: the
body must be UTF-8 JSON without lone surrogates (from ``"\\ud800"``
escapes), every field of an event has its type, characters and limits, and
the path and query must be valid Unicode. Anything else is a 400.

Routes (``{id}`` is the app id)::

    POST /apps/{id}/events                          trigger one event
    POST /apps/{id}/batch_events                    trigger up to max_batch_events
    GET  /apps/{id}/channels                        occupied channels
    GET  /apps/{id}/channels/{channel}              one channel's state
    GET  /apps/{id}/channels/{channel}/users        presence members
    POST /apps/{id}/users/{user}/terminate_connections
    POST /users/{user}/terminate_connections        (as pusher-http-python 3.x sends it)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, unquote

import ujson

from . import names
from .config import App, AppTable
from .errors import HttpError, ProtocolError
from .http_signing import verify_request
from .protocol import dumps, encode_data
from .text import decode_utf8, has_lone_surrogate, has_unicode_escape, json_problem

__all__ = ["Backend", "Response", "handle_request"]

# ASCII digits only (\d would take any script's digits) and bounded: ours
# are two 31-bit integers.
_SOCKET_ID = re.compile(r"\A[0-9]{1,20}\.[0-9]{1,20}\Z")
_INFO_ATTRIBUTES = frozenset({"user_count", "subscription_count"})


@dataclass(frozen=True)
class Response:
    """An HTTP answer: status code and JSON-encodable body."""

    status: int
    body: Any

    def encoded(self) -> bytes:
        """The body as JSON bytes."""
        # Input is checked on the way in, so no lone surrogate should reach an
        # answer; should one slip into a message anyway, escape it, never 500.
        return dumps(self.body).encode("utf-8", "backslashreplace")


class Backend(Protocol):
    """What the HTTP API needs from a node."""

    def trigger(self, app: App, channels: Sequence[str], event: str, data: str, socket_id: str | None) -> None:
        """Deliver one event to ``channels``."""

    def channel_info(self, app: App, channel: str) -> dict[str, int] | None:
        """``{"subscription_count": n, "user_count"?: n}``, or None when unoccupied."""

    def channels(self, app: App, users: bool = False) -> dict[str, dict[str, int]]:
        """Every occupied channel with its ``channel_info`` (``users``: presence user counts as of the call)."""

    def users(self, app: App, channel: str) -> list[str]:
        """User ids present in a presence channel."""

    def terminate_user(self, app: App, user_id: str) -> None:
        """Close every connection of a signed-in user."""


def handle_request(
    method: str,
    path: str,
    query_string: str,
    body: bytes,
    apps: AppTable,
    backend: Backend,
    now: float,
) -> Response:
    """Answer one HTTP API request (never raises for bad input)."""
    try:
        if has_lone_surrogate(path) or has_lone_surrogate(query_string or ""):
            # A server that decoded the request line with surrogateescape.
            raise HttpError(400, "The request path or query is not valid UTF-8")
        return _route(method.upper(), path, query_string, body, apps, backend, now)
    except HttpError as exc:
        return Response(exc.status, {"error": exc.message})


def _route(method: str, path: str, query_string: str, body: bytes, apps: AppTable, backend: Backend, now: float) -> Response:
    query = _parse_query(query_string)
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if len(parts) == 3 and parts[0] == "users" and parts[2] == "terminate_connections":
        app = _app_by_key(apps, query)
        _authorize(app, method, path, query, body, now)
        return _terminate(method, app, parts[1], backend)
    if len(parts) < 3 or parts[0] != "apps":
        raise HttpError(404, f"Not found: {path}")
    found = apps.by_id(parts[1])
    if found is None:
        raise HttpError(404, f"Unknown app id {parts[1]!r}")
    app = found
    _authorize(app, method, path, query, body, now)
    rest = parts[2:]
    if rest == ["events"]:
        _need(method, "POST")
        return _trigger_one(app, _json_body(body), query, backend)
    if rest == ["batch_events"]:
        _need(method, "POST")
        return _trigger_batch(app, _json_body(body), backend)
    if rest == ["channels"]:
        _need(method, "GET")
        return _list_channels(app, query, backend)
    if len(rest) == 2 and rest[0] == "channels":
        _need(method, "GET")
        return _one_channel(app, rest[1], query, backend)
    if len(rest) == 3 and rest[0] == "channels" and rest[2] == "users":
        _need(method, "GET")
        return _channel_users(app, rest[1], backend)
    if len(rest) == 3 and rest[0] == "users" and rest[2] == "terminate_connections":
        return _terminate(method, app, rest[1], backend)
    raise HttpError(404, f"Not found: {path}")


# --- checks -------------------------------------------------------------------


def _parse_query(query_string: str) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in parse_qsl(query_string or "", keep_blank_values=True):
        if key in query:
            raise HttpError(400, f"Query parameter {key!r} given twice")
        query[key] = value
    return query


def _app_by_key(apps: AppTable, query: Mapping[str, str]) -> App:
    app = apps.by_key(query.get("auth_key", ""))
    if app is None:
        raise HttpError(401, "Unknown auth_key")
    return app


def _authorize(app: App, method: str, path: str, query: Mapping[str, str], body: bytes, now: float) -> None:
    verify_request(method, path, query, body, app.key, app.secret, now)
    if not app.enabled:
        raise HttpError(403, "App is disabled")


def _need(method: str, expected: str) -> None:
    if method != expected:
        raise HttpError(405, f"Use {expected} for this path")


def _json_body(body: bytes) -> dict[str, Any]:
    # Decoded strictly first: ujson alone would take UTF-8-encoded surrogates.
    text = decode_utf8(body or b"")
    if text is None:
        raise HttpError(400, "Body is not valid JSON: it is not UTF-8 text")
    try:
        value = ujson.loads(text)
    except (ValueError, TypeError) as exc:
        raise HttpError(400, "Body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise HttpError(400, "Body must be a JSON object")
    # Only a \u escape can make a lone surrogate: then check every string in
    # the body at once (NaN in 'data' is refused where 'data' is encoded).
    if has_unicode_escape(text):
        problem = json_problem(value)
        if problem is not None:
            raise HttpError(400, f"Body is not valid JSON text: it holds {problem}")
    return value


def _info_attributes(query: Mapping[str, Any]) -> set[str]:
    info = query.get("info") or ""
    if not isinstance(info, str):
        raise HttpError(400, "'info' must be a comma-separated string, e.g. \"subscription_count,user_count\"")
    wanted = {part.strip() for part in info.split(",") if part.strip()}
    unknown = wanted - _INFO_ATTRIBUTES
    if unknown:
        raise HttpError(400, f"Unknown info attribute(s) {sorted(unknown)}; use user_count, subscription_count")
    return wanted


def _check_channel(app: App, channel: Any, *, allow_server_to_user: bool = False) -> str:
    try:
        return names.validate_channel_name(channel, app.max_channel_name_length, allow_server_to_user=allow_server_to_user)
    except ProtocolError as exc:
        raise HttpError(400, exc.message) from exc


def _shorten(value: Any, limit: int = 60) -> str:
    # Error messages quote what was sent, never more than a readable prefix.
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_presence(channel: str) -> bool:
    return names.channel_kind(channel) is names.ChannelKind.PRESENCE


# --- events ---------------------------------------------------------------------


def _validated_event(app: App, event: Any) -> tuple[tuple[str, ...], str, str, str | None]:
    if not isinstance(event, dict):
        raise HttpError(400, "Each event must be a JSON object")
    name = event.get("name")
    try:
        names.validate_event_name(name, app.max_event_name_length)
    except ProtocolError as exc:
        raise HttpError(400, f"Invalid event name: {exc.message}") from exc
    if "channels" in event:
        channels = event["channels"]
        if not isinstance(channels, list) or not channels:
            raise HttpError(400, "'channels' must be a non-empty list of channel names")
    elif "channel" in event:
        channels = [event["channel"]]
    else:
        raise HttpError(400, "Give 'channel' or 'channels'")
    if len(channels) > app.max_channels_per_event:
        raise HttpError(400, f"An event may go to at most {app.max_channels_per_event} channels, not {len(channels)}")
    channels = tuple(_check_channel(app, c, allow_server_to_user=True) for c in channels)
    if "data" not in event:
        raise HttpError(400, "Missing 'data' (a string; SDKs JSON-encode objects)")
    try:
        data = encode_data(event["data"])
    except (OverflowError, TypeError) as exc:  # NaN / Infinity parsed from the body
        raise HttpError(400, "'data' holds a number JSON cannot carry (NaN or Infinity)") from exc
    try:
        size = len(data.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate from a "\ud800" escape
        raise HttpError(400, "'data' is not valid UTF-8 text") from exc
    if size > app.max_event_bytes:
        raise HttpError(413, f"Event data is {size} bytes; the limit is {app.max_event_bytes}")
    socket_id = event.get("socket_id")
    if socket_id is not None and (not isinstance(socket_id, str) or not _SOCKET_ID.match(socket_id)):
        raise HttpError(400, f"Invalid socket_id {_shorten(socket_id)}: expected digits.digits")
    return channels, cast(str, name), data, socket_id  # validate_event_name checked it is a str


def _channel_attributes(app: App, channels: Sequence[str], wanted: set[str], backend: Backend) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for channel in channels:
        info = backend.channel_info(app, channel) or {"subscription_count": 0, "user_count": 0}
        attrs: dict[str, Any] = {}
        if "subscription_count" in wanted:
            attrs["subscription_count"] = info.get("subscription_count", 0)
        if "user_count" in wanted and _is_presence(channel):
            attrs["user_count"] = info.get("user_count", 0)
        out[channel] = attrs
    return out


def _trigger_one(app: App, body: dict[str, Any], query: Mapping[str, str], backend: Backend) -> Response:
    channels, name, data, socket_id = _validated_event(app, body)
    wanted = _info_attributes({"info": body.get("info") or query.get("info", "")})
    backend.trigger(app, channels, name, data, socket_id)
    if wanted:
        return Response(200, {"channels": _channel_attributes(app, channels, wanted, backend)})
    return Response(200, {})


def _trigger_batch(app: App, body: dict[str, Any], backend: Backend) -> Response:
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise HttpError(400, "Body must be {\"batch\": [event, ...]}")
    if len(batch) > app.max_batch_events:
        raise HttpError(400, f"A batch may hold at most {app.max_batch_events} events, not {len(batch)}")
    # Validate everything first: a batch is sent whole or not at all.
    events = [(_validated_event(app, event), _info_attributes(event)) for event in batch]
    for (channels, name, data, socket_id), _ in events:
        backend.trigger(app, channels, name, data, socket_id)
    if any(wanted for _, wanted in events):
        infos = [
            _channel_attributes(app, channels[:1], wanted, backend).get(channels[0], {})
            for (channels, _, _, _), wanted in events
        ]
        return Response(200, {"batch": infos})
    return Response(200, {})


# --- channel queries ----------------------------------------------------------------


def _list_channels(app: App, query: Mapping[str, str], backend: Backend) -> Response:
    prefix = query.get("filter_by_prefix", "")
    wanted = _info_attributes(query)
    if "user_count" in wanted and not prefix.startswith("presence-"):
        raise HttpError(400, "info=user_count needs filter_by_prefix=presence-")
    # user_count as of the question: the backend asks every node (only then: it costs their member lists).
    infos = backend.channels(app, users="user_count" in wanted)
    # Written for 10,000 channels: one pass, no per-channel work that is not needed.
    # ("#" starts only the reserved #server-to-user- channels: no channel name may hold it.)
    listed = [c for c in infos if c.startswith(prefix) and not c.startswith("#")]
    listed.sort()
    if not wanted:
        out: dict[str, Any] = dict.fromkeys(listed, {})  # one shared {}: encoded at once, never changed
    elif len(wanted) == 1:
        (attr,) = wanted
        out = {c: {attr: infos[c].get(attr, 0)} for c in listed}
    else:
        out = {c: {attr: infos[c].get(attr, 0) for attr in wanted} for c in listed}
    return Response(200, {"channels": out})


def _one_channel(app: App, channel: str, query: Mapping[str, str], backend: Backend) -> Response:
    channel = _check_channel(app, channel)
    wanted = _info_attributes(query)
    if "user_count" in wanted and not _is_presence(channel):
        raise HttpError(400, "user_count is only available for presence channels")
    info = backend.channel_info(app, channel)
    body: dict[str, Any] = {"occupied": bool(info and info.get("subscription_count"))}
    for attr in sorted(wanted):
        body[attr] = (info or {}).get(attr, 0)
    return Response(200, body)


def _channel_users(app: App, channel: str, backend: Backend) -> Response:
    channel = _check_channel(app, channel)
    if not _is_presence(channel):
        raise HttpError(400, "Users are only available for presence channels")
    return Response(200, {"users": [{"id": user_id} for user_id in backend.users(app, channel)]})


def _terminate(method: str, app: App, user_id: str, backend: Backend) -> Response:
    _need(method, "POST")
    if not user_id:
        raise HttpError(400, "Missing user id")
    backend.terminate_user(app, user_id)
    return Response(200, {})

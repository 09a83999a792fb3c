"""The Pusher Channels protocol (version 7) as pure functions and data.

Client text goes in through :func:`parse_client_message` and comes out as one
of the small immutable message types below, or raises
:class:`~transport.errors.ProtocolError` with the Pusher code. Server messages
come out of the ``*_frame`` builders as finished WebSocket frames (bytes), so
the I/O layer only moves bytes. :func:`event_frame` is the broadcast encoder:
called once per broadcast and channel, whatever the number of subscribers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import ujson

from . import names
from .errors import ActorcastError, ProtocolError
from .frames import text_frame
from .text import LONE_SURROGATE, decode_utf8, has_lone_surrogate, has_unicode_escape, json_problem

if TYPE_CHECKING:
    from .config import App

__all__ = [
    "PROTOCOL_VERSION",
    "ClientEvent",
    "Ping",
    "Pong",
    "Signin",
    "Subscribe",
    "Unknown",
    "Unsubscribe",
    "check_broadcast",
    "check_connect_request",
    "connection_established_frame",
    "dumps",
    "encode_data",
    "error_frame",
    "event_frame",
    "event_json",
    "new_socket_id",
    "parse_client_message",
]

PROTOCOL_VERSION = 7
SUPPORTED_PROTOCOLS = frozenset({7})

# Pusher codes the connection layer uses (see shared/PUSHER.md).
APP_NOT_FOUND = 4001
APP_DISABLED = 4003
OVER_QUOTA = 4004
PATH_NOT_FOUND = 4005
INVALID_VERSION = 4006
UNSUPPORTED_PROTOCOL = 4007
NO_PROTOCOL = 4008
UNAUTHORIZED = 4009
OVER_CAPACITY = 4100
RECONNECT = 4200
PONG_NOT_RECEIVED = 4201
CLOSED_INACTIVE = 4202
CLIENT_EVENT_REJECTED = 4301


def dumps(value: Any) -> str:
    """Compact JSON the way Pusher sends it (UTF-8, slashes not escaped).

    NaN and Infinity are refused (OverflowError): JSON has no such values and
    clients would fail to parse them.
    """
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False, allow_nan=False)


# --- client -> server -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """``pusher:ping``: the client checks the connection; answer ``pusher:pong``."""


@dataclass(frozen=True, slots=True)
class Pong:
    """``pusher:pong``: the answer to our ``pusher:ping``."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``pusher:subscribe``; ``auth``/``channel_data`` for private and presence channels."""

    channel: str
    auth: str | None = None
    channel_data: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """``pusher:unsubscribe``: leave a channel (no reply)."""

    channel: str


@dataclass(frozen=True, slots=True)
class Signin:
    """``pusher:signin``: user authentication, ``auth`` signs ``user_data``."""

    auth: str
    user_data: str


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """A ``client-*`` event a client sends to the others on a channel."""

    event: str
    channel: str
    data: Any


@dataclass(frozen=True, slots=True)
class Unknown:
    """An event we do not handle; Pusher ignores these, and so do we."""

    event: str


ClientMessage = Ping | Pong | Subscribe | Unsubscribe | Signin | ClientEvent | Unknown


def _field(data: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ProtocolError(None, f"'{name}' must be a string")
    return value


def _channel(value: Any, escaped: bool, complaint: str = "'channel' must be a string") -> str:
    # The alphabet and the length are the app's rules (names.validate_channel_name,
    # applied where the app is known); what no channel may be is broken text.
    if not isinstance(value, str):
        raise ProtocolError(None, complaint)
    if escaped and has_lone_surrogate(value):
        raise ProtocolError(names.INVALID_NAME_CODE, f"Invalid channel name: it holds {LONE_SURROGATE}")
    return value


def _signin_field(data: dict[str, Any], name: str, escaped: bool) -> str:
    value = _field(data, name)
    assert value is not None  # required=True: _field raised instead
    if escaped and has_lone_surrogate(value):
        # Pusher answers a bad sign-in by closing with 4009, and so do we.
        raise ProtocolError(UNAUTHORIZED, f"Invalid sign-in: '{name}' holds {LONE_SURROGATE}", fatal=True)
    return value


def _payload(message: dict[str, Any]) -> dict[str, Any]:
    data = message.get("data", {})
    if isinstance(data, str):
        # Some clients double-encode data on the way in, as the server does out.
        try:
            data = ujson.loads(data)
        except ValueError as exc:
            raise ProtocolError(None, "'data' is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ProtocolError(None, "'data' must be a JSON object")
    return data


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse one client message; raise ProtocolError for anything malformed.

    Every field a message type uses is checked here, so no actor holds a value
    that raises later: its JSON type; valid Unicode (no lone surrogates, which
    a ``"\\ud800"`` escape produces); event names free of control characters
    (code 4302, as for other bad names); client-event ``data`` that re-encodes
    as standard JSON (no NaN, no Infinity). A bad sign-in field is fatal with
    4009, as a failed sign-in is.

    Left to the caller, which knows the app: name lengths and the channel
    alphabet (:mod:`transport.names`), and the signed strings of a subscribe
    (``auth``, ``channel_data``), because a bad one must be answered with a
    ``pusher:subscription_error``: :mod:`transport.auth` refuses broken text
    in them with AuthError / ProtocolError.
    """
    if isinstance(text, (bytes, bytearray)):
        decoded = decode_utf8(text)
        if decoded is None:
            # Checked before ujson, which would accept UTF-8-encoded surrogates.
            raise ProtocolError(None, "Invalid JSON: the message is not valid UTF-8")
        text = decoded
    try:
        message = ujson.loads(text)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(None, "Invalid JSON: expected an object like {\"event\": ...}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(None, "A message must be a JSON object")
    event = message.get("event")
    if not isinstance(event, str):
        raise ProtocolError(None, "'event' must be a string")
    if event == "pusher:ping":
        return Ping()
    if event == "pusher:pong":
        return Pong()
    # Valid UTF-8 holds a lone surrogate only through a \u escape: without
    # one (nearly all traffic) the deep checks below are skipped.
    escaped = has_unicode_escape(text)
    if event == "pusher:subscribe":
        data = _payload(message)
        return Subscribe(
            _channel(data.get("channel"), escaped),
            _field(data, "auth", required=False),
            _field(data, "channel_data", required=False),
        )
    if event == "pusher:unsubscribe":
        return Unsubscribe(_channel(_payload(message).get("channel"), escaped))
    if event == "pusher:signin":
        data = _payload(message)
        return Signin(_signin_field(data, "auth", escaped), _signin_field(data, "user_data", escaped))
    names.check_event_name_characters(event)
    if event.startswith("client-"):
        channel = _channel(message.get("channel"), escaped, "A client event needs a 'channel' string")
        event_data = message.get("data")
        problem = json_problem(event_data, surrogates=escaped)
        if problem is not None:
            raise ProtocolError(None, f"Client event data holds {problem}: JSON cannot carry it on")
        return ClientEvent(event, channel, event_data)
    return Unknown(event)


def check_connect_request(path: str, query_string: str) -> str:
    """Validate ``/app/{key}?protocol=7...``; return the app key.

    Raises ProtocolError 4005 (bad path), 4008 (no protocol), 4006/4007
    (bad or unsupported protocol version). Whether the key exists is for the
    caller to decide (4001).
    """
    parts = path.strip("/").split("/")
    if len(parts) != 2 or parts[0] != "app" or not parts[1]:
        raise ProtocolError(PATH_NOT_FOUND, f"Path not found: {path}", fatal=True)
    query = parse_qs(query_string or "")
    versions = query.get("protocol")
    if not versions:
        raise ProtocolError(NO_PROTOCOL, "No protocol version given: add ?protocol=7", fatal=True)
    try:
        version = int(versions[0])
    except ValueError:
        raise ProtocolError(INVALID_VERSION, f"Invalid protocol version {versions[0]!r}", fatal=True) from None
    if version not in SUPPORTED_PROTOCOLS:
        raise ProtocolError(
            UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {version}: this server speaks 7", fatal=True
        )
    return parts[1]


# --- server -> client -------------------------------------------------------


def new_socket_id() -> str:
    """A fresh socket id: two random integers joined by a dot."""
    return f"{random.getrandbits(31)}.{random.getrandbits(31)}"


def encode_data(data: Any) -> str:
    """Event data as Pusher carries it: a string; other JSON values are encoded."""
    return data if isinstance(data, str) else dumps(data)


def check_broadcast(app: App, channels: str | Iterable[str], event: str, data: Any) -> tuple[tuple[str, ...], str]:
    """What ``Node.broadcast`` checks in the caller's thread; returns the channels and the data as sent.

    ``app`` is a ``transport.config.App`` (its name limits apply).

    Names raise ProtocolError; data JSON cannot carry (NaN, objects, lone
    surrogates) raises ActorcastError here, in the caller, never inside an actor.
    """
    channels = (channels,) if isinstance(channels, str) else tuple(channels)
    for channel in channels:
        names.validate_channel_name(channel, app.max_channel_name_length, allow_server_to_user=True)
    names.validate_event_name(event, app.max_event_name_length)
    try:
        encoded = encode_data(data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ActorcastError(f"event data is not JSON-serializable: {exc}") from exc
    if has_lone_surrogate(encoded):
        raise ActorcastError("event data holds a lone surrogate (e.g. '\\ud800'): it has no UTF-8 form")
    return channels, encoded


def _frame(message: dict[str, Any]) -> bytes:
    return text_frame(dumps(message))


def event_json(channel: str | None, event: str, data: Any, user_id: str | None = None) -> str:
    """The JSON text of one event on one channel: what a frame carries, and a cluster publish."""
    message: dict[str, Any] = {"event": event}
    if channel is not None:
        message["channel"] = channel
    message["data"] = encode_data(data)
    if user_id is not None:
        message["user_id"] = user_id
    return dumps(message)


def event_frame(channel: str | None, event: str, data: Any, user_id: str | None = None) -> bytes:
    """A finished frame for one event on one channel (the broadcast encoder)."""
    return text_frame(event_json(channel, event, data, user_id))


def connection_established_frame(socket_id: str, activity_timeout: int) -> bytes:
    """``pusher:connection_established`` with the socket id and activity timeout."""
    data = {"socket_id": socket_id, "activity_timeout": activity_timeout}
    return event_frame(None, "pusher:connection_established", data)


def error_frame(code: int | None, message: str) -> bytes:
    """``pusher:error`` carrying a Pusher code (or null) and a readable message."""
    return _frame({"event": "pusher:error", "data": {"code": code, "message": message}})


PING_FRAME = event_frame(None, "pusher:ping", {})
PONG_FRAME = event_frame(None, "pusher:pong", {})

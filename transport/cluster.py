"""The cluster message codec: what nodes tell each other over the bus, as bytes.

Pure code (no sockets, no actors): :func:`encode` turns one of the message
types below into the bytes a bus carries, :func:`decode` turns bytes from the
bus back into a message or raises :class:`~transport.errors.ProtocolError`.
A bad message from the bus (another version, a bug, a stray publisher on the
Redis channel) must never kill anything, so :func:`decode` raises nothing
else, and a message it returns holds only values of the declared types that
can be encoded again (valid Unicode, no NaN or Infinity).

On the wire a message is one JSON object: ``"k"`` names its kind (see
:data:`KINDS`), one-letter keys hold its fields. Keys a decoder does not know
are ignored, so a newer node may add fields without breaking older ones.

::

    >>> encode(Heartbeat("n1", 7))
    b'{"k":"hb","o":"n1","s":7}'
    >>> decode(b'{"k":"hb","o":"n1","s":7}')
    Heartbeat(origin='n1', seq=7)

``origin`` is always the sending node's id (non-empty): a node recognises
its own broadcasts by it. ``target`` names the node a reply is meant for
(``""`` = every node).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

import ujson

from .errors import ProtocolError
from .text import decode_utf8, has_lone_surrogate, has_unicode_escape, json_problem
from .webhook_ledger import WebhookLog, check_finished, check_queued

__all__ = [
    "KINDS",
    "Admit",
    "Answer",
    "Bye",
    "ClusterMessage",
    "Count",
    "Heartbeat",
    "Member",
    "Occupancy",
    "Publish",
    "Release",
    "Request",
    "Sync",
    "SyncRequest",
    "TerminateUser",
    "WebhookLog",
    "decode",
    "encode",
]


class Publish(NamedTuple):
    """Events for the subscribers of ``app_id`` on every other node.

    ``frames`` are ``(channel, event_json_text)`` pairs: the JSON text of each
    Pusher event as it goes inside a WebSocket text frame, so a receiver frames
    it with :func:`transport.frames.text_frame` and never re-encodes it.
    ``except_socket_id`` is the socket that must not get them (or None).
    """

    origin: str
    app_id: str
    frames: tuple[tuple[str, str], ...]
    except_socket_id: str | None


class Member(NamedTuple):
    """A user's first socket on ``origin`` joined a presence channel (``joined``),
    or its last one there left (``joined`` False, ``user_info`` None)."""

    origin: str
    app_id: str
    channel: str
    user_id: str
    user_info: Any
    joined: bool


class Occupancy(NamedTuple):
    """A channel of ``app_id`` got its first subscriber on ``origin`` (``occupied``), or lost its last.

    Sent only for apps with webhooks: what makes ``channel_occupied`` /
    ``channel_vacated`` mean the whole cluster. An empty ``channel`` with
    ``occupied`` False: ``origin`` holds none of the app's channels any more.
    """

    origin: str
    app_id: str
    channel: str
    occupied: bool


class Heartbeat(NamedTuple):
    """``origin`` is alive; ``seq`` counts its heartbeats."""

    origin: str
    seq: int


class Bye(NamedTuple):
    """``origin`` is stopping cleanly: forget its members now."""

    origin: str


class SyncRequest(NamedTuple):
    """``origin`` (re)joined the cluster and asks every node for its presence state."""

    origin: str


class Sync(NamedTuple):
    """``origin``'s local presence members of one app: ``{channel: {user_id: user_info}}``.

    ``target`` is the node that asked (``""`` = everyone).
    """

    origin: str
    target: str
    app_id: str
    members: dict[str, dict[str, Any]]


class TerminateUser(NamedTuple):
    """Close every connection of ``user_id`` in ``app_id``, on every node."""

    origin: str
    app_id: str
    user_id: str


class Request(NamedTuple):
    """A cluster-wide question (``query`` with ``params``) about ``app_id``."""

    origin: str
    request_id: str
    app_id: str
    query: str
    params: dict[str, Any]


class Answer(NamedTuple):
    """One node's answer ``value`` to request ``request_id`` of node ``target``."""

    origin: str
    target: str
    request_id: str
    value: Any


class Admit(NamedTuple):
    """``origin`` asks to admit one connection of an app with a connection quota.

    Every node sees the bus's messages in one order, so every node decides
    the same way: admitted while the cluster's count is under the quota at
    this point of the stream. ``request_id`` is the asker's ticket.
    """

    origin: str
    app_id: str
    request_id: str


class Release(NamedTuple):
    """``seq`` admitted connections of ``origin`` closed."""

    origin: str
    app_id: str
    seq: int


class Count(NamedTuple):
    """``origin`` holds ``seq`` admitted connections of ``app_id`` (sent on (re)joining)."""

    origin: str
    app_id: str
    seq: int


ClusterMessage = (
    Publish | Member | Occupancy | Heartbeat | Bye | SyncRequest | Sync | TerminateUser | Request | Answer | Admit | Release | Count
    | WebhookLog  # defined, with its field checks, beside the webhook ledger it feeds
)

#: Kind name on the wire -> message class.
KINDS: dict[str, type] = {
    "pub": Publish,
    "mem": Member,
    "occ": Occupancy,
    "hb": Heartbeat,
    "bye": Bye,
    "sreq": SyncRequest,
    "sync": Sync,
    "term": TerminateUser,
    "req": Request,
    "ans": Answer,
    "adm": Admit,
    "rel": Release,
    "cnt": Count,
    "whl": WebhookLog,
}

_KIND_OF: dict[type, str] = {cls: kind for kind, cls in KINDS.items()}

#: Field name -> its one-letter key on the wire.
_KEYS: dict[str, str] = {
    "origin": "o",
    "app_id": "a",
    "frames": "f",
    "except_socket_id": "x",
    "channel": "c",
    "user_id": "u",
    "user_info": "i",
    "joined": "j",
    "occupied": "b",
    "seq": "s",
    "target": "t",
    "members": "m",
    "request_id": "r",
    "query": "q",
    "params": "p",
    "value": "v",
    "queued": "w",
    "finished": "d",
}


# --- encoding ------------------------------------------------------------------


def encode(message: ClusterMessage) -> bytes:
    """The bytes a bus carries for ``message``.

    Raises TypeError for anything that is not a cluster message, and
    ValueError / OverflowError / UnicodeEncodeError for values JSON cannot
    carry (NaN, a lone surrogate): those are bugs of the sender, refused here
    rather than by every receiver.
    """
    kind = _KIND_OF.get(type(message))
    if kind is None:
        raise TypeError(f"not a cluster message: {type(message).__name__}")
    obj: dict[str, Any] = {"k": kind}
    for name, value in zip(message._fields, message, strict=True):
        obj[_KEYS[name]] = value
    text = ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False, allow_nan=False)
    return text.encode("utf-8")


# --- decoding ------------------------------------------------------------------


class _Checker:
    """Field checks for one message; ``escaped`` says whether deep Unicode checks are needed."""

    def __init__(self, kind: str, escaped: bool) -> None:
        self.kind = kind
        self.escaped = escaped

    def fail(self, name: str, what: str) -> ProtocolError:
        return ProtocolError(None, f"Cluster message {self.kind!r}: {name!r} {what}")

    def text(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(name, "must be a string")
        # Valid UTF-8 holds a lone surrogate only through a \u escape.
        if self.escaped and has_lone_surrogate(value):
            raise self.fail(name, "holds a lone surrogate")
        return value

    def origin(self, name: str, value: Any) -> str:
        if not self.text(name, value):
            raise self.fail(name, "must not be empty")
        return value

    def optional_text(self, name: str, value: Any) -> str | None:
        return None if value is None else self.text(name, value)

    def flag(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false")
        return value

    def integer(self, name: str, value: Any) -> int:
        # bool is an int in Python but not in the protocol.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(name, "must be an integer")
        return value

    def json(self, name: str, value: Any) -> Any:
        problem = json_problem(value, surrogates=self.escaped)
        if problem is not None:
            raise self.fail(name, f"holds {problem}")
        return value

    def obj(self, name: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(name, "must be an object")
        # Keys are strings (JSON allows nothing else); the check covers them too.
        return self.json(name, value)

    def frames(self, name: str, value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, list):
            raise self.fail(name, "must be a list of [channel, event] pairs")
        pairs = []
        for pair in value:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise self.fail(name, "must be a list of [channel, event] pairs")
            pairs.append((self.text(name, pair[0]), self.text(name, pair[1])))
        return tuple(pairs)

    def members(self, name: str, value: Any) -> dict[str, dict[str, Any]]:
        if not isinstance(value, dict):
            raise self.fail(name, "must be an object of channels")
        for users in value.values():
            if not isinstance(users, dict):
                raise self.fail(name, "must map each channel to an object of users")
        return self.json(name, value)


_Check = Callable[[_Checker, str, Any], Any]

#: Field name -> how to check it (fields not listed here are plain strings).
_FIELD_CHECKS: dict[str, _Check] = {
    "origin": _Checker.origin,
    "frames": _Checker.frames,
    "except_socket_id": _Checker.optional_text,
    "user_info": _Checker.json,
    "joined": _Checker.flag,
    "occupied": _Checker.flag,
    "seq": _Checker.integer,
    "members": _Checker.members,
    "params": _Checker.obj,
    "value": _Checker.json,
    "queued": check_queued,
    "finished": check_finished,
}

#: Message class -> [(field name, wire key, check)], in field order.
_SCHEMAS: dict[type, list[tuple[str, str, _Check]]] = {
    cls: [(name, _KEYS[name], _FIELD_CHECKS.get(name, _Checker.text)) for name in cls._fields]  # type: ignore[attr-defined]
    for cls in KINDS.values()
}


def decode(data: bytes) -> ClusterMessage:
    """The message in ``data`` (bytes from the bus); ProtocolError for anything malformed.

    Malformed: not valid UTF-8, not a JSON object, an unknown kind, a missing
    field, a field of the wrong type, a string with a lone surrogate, a value
    holding NaN or Infinity. Nothing else is ever raised.
    """
    if isinstance(data, str):
        text = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        # Checked before ujson, which would accept UTF-8-encoded surrogates.
        decoded = decode_utf8(bytes(data))
        if decoded is None:
            raise ProtocolError(None, "Cluster message is not valid UTF-8")
        text = decoded
    else:
        raise ProtocolError(None, f"Cluster message must be bytes, not {type(data).__name__}")
    try:
        obj = ujson.loads(text)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ProtocolError(None, "Cluster message is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(None, "Cluster message must be a JSON object")
    kind = obj.get("k")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        shown = kind[:40] if isinstance(kind, str) and not has_lone_surrogate(kind) else type(kind).__name__
        raise ProtocolError(None, f"Unknown cluster message kind: {shown!r}")
    checker = _Checker(cast(str, kind), has_unicode_escape(text))  # a str: KINDS matched it
    values = []
    for name, key, check in _SCHEMAS[cls]:
        if key not in obj:
            raise checker.fail(name, "is missing")
        values.append(check(checker, name, obj[key]))
    return cls(*values)

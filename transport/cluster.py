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
are ignored, and a field added later has a default that a message lacking it
gets, so nodes of two versions still understand each other.

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

from typing import Any, NamedTuple, cast

import ujson

from .cluster_fields import FIELD_CHECKS, Check, Checker
from .errors import ProtocolError
from .text import decode_utf8, has_lone_surrogate, has_unicode_escape
from .webhook_ledger import WebhookLog

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
    "SubscriptionCounts",
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
    ``seq`` numbers the origin's own publishes (1, 2, ...) so that it knows
    each one when the bus brings it back; 0 is a publish the origin has
    delivered already (a client event).
    """

    origin: str
    app_id: str
    frames: tuple[tuple[str, str], ...]
    except_socket_id: str | None
    seq: int = 0


class Member(NamedTuple):
    """A user's first socket on ``origin`` joined a presence channel (``joined``),
    or its last one there left (``joined`` False, ``user_info`` None).

    ``ask``: a join that every node decides at its place in the bus's order
    (the member limit, ``transport.presence.RemotePresence.ask``); without it
    (an older node, or one that decided alone) the join is taken as it is.
    ``seq``: the origin's number for it, to know its own message when it comes
    back (0: the origin applied it already and ignores it then).
    """

    origin: str
    app_id: str
    channel: str
    user_id: str
    user_info: Any
    joined: bool
    ask: bool = False
    seq: int = 0


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


class SubscriptionCounts(NamedTuple):
    """``origin``'s own subscriber counts of channels of ``app_id``: ``{channel: count}``.

    Sent only for apps with ``enable_subscription_count``, batched: one
    message holds every channel whose count changed since the last one (0 =
    no subscriber left there). ``snapshot`` says it holds every channel the
    origin has (sent on a sync): channels it does not list are at 0 there.
    """

    origin: str
    app_id: str
    counts: dict[str, int]
    snapshot: bool


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
    Publish | Member | Occupancy | SubscriptionCounts | Heartbeat | Bye | SyncRequest | Sync | TerminateUser | Request
    | Answer | Admit | Release | Count | WebhookLog  # defined, with its field checks, beside the webhook ledger it feeds
)

#: Kind name on the wire -> message class.
KINDS: dict[str, type] = {
    "pub": Publish,
    "mem": Member,
    "occ": Occupancy,
    "subs": SubscriptionCounts,
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
    "counts": "n",
    "snapshot": "z",
    "ask": "e",
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


#: Message class -> [(field name, wire key, check)], in field order.
_SCHEMAS: dict[type, list[tuple[str, str, Check]]] = {
    cls: [(name, _KEYS[name], FIELD_CHECKS.get(name, Checker.text)) for name in cls._fields]  # type: ignore[attr-defined]
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
    escaped = has_unicode_escape(text)
    if kind == "pub" and not escaped:
        publish = _plain_publish(obj)
        if publish is not None:
            return publish
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        shown = kind[:40] if isinstance(kind, str) and not has_lone_surrogate(kind) else type(kind).__name__
        raise ProtocolError(None, f"Unknown cluster message kind: {shown!r}")
    checker = Checker(cast(str, kind), escaped)  # a str: KINDS matched it
    values = []
    defaults: dict[str, Any] = getattr(cls, "_field_defaults", {})
    for name, key, check in _SCHEMAS[cls]:
        if key in obj:
            values.append(check(checker, name, obj[key]))
        elif name in defaults:  # a field added later: an older node's message lacks it
            values.append(defaults[name])
        else:
            raise checker.fail(name, "is missing")
    return cls(*values)


def _plain_publish(obj: dict[str, Any]) -> Publish | None:
    """The Publish in ``obj`` when every field is plainly right, else None (the full checks decide).

    Every node decodes every publish of the cluster, so the common case is
    checked inline: text without a ``\\u`` escape cannot hold a lone
    surrogate (the caller made sure), which leaves only the types to check.
    Anything unusual (a field missing or of another type, a key too many)
    goes the general way, which says what is wrong.
    """
    if len(obj) != 6:
        return None
    origin, app_id, frames, except_socket_id, seq = obj.get("o"), obj.get("a"), obj.get("f"), obj.get("x", 0), obj.get("s")
    if not (type(origin) is str and origin and type(app_id) is str and type(frames) is list and type(seq) is int
            and (except_socket_id is None or type(except_socket_id) is str)):
        return None
    pairs = []
    for pair in frames:
        if not (type(pair) is list and len(pair) == 2 and type(pair[0]) is str and type(pair[1]) is str):
            return None
        pairs.append((pair[0], pair[1]))
    return Publish(origin, app_id, tuple(pairs), except_socket_id, seq)

"""Pusher signatures: private/presence subscriptions, sign-in and webhooks.

Every signature is a lowercase hex HMAC-SHA256 keyed with the app secret.
Clients send ``auth`` as ``"{app_key}:{hex}"`` where the hex signs:

==============  ==========================================
private         ``socket_id:channel``
presence        ``socket_id:channel:channel_data``
sign-in         ``socket_id::user::user_data``
webhook         the raw request body (no key prefix)
==============  ==========================================

``channel_data`` and ``user_data`` are signed as the exact strings the client
sent, so they are parsed only after the signature verified, and the parsed
values keep the original text in ``raw``.

Verification raises :class:`~transport.errors.AuthError`; its message tells
a client developer what was expected but never the expected signature.
Malformed ``channel_data`` / ``user_data`` raise
:class:`~transport.errors.ProtocolError`. Text that is not valid Unicode (a
lone surrogate from a JSON ``"\\ud800"`` escape) is one of those errors too,
never a ``UnicodeEncodeError`` from the HMAC. The parser leaves the signed
strings of a subscribe to this module, whose errors the connection answers
with a ``pusher:subscription_error``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Any, cast

import ujson

from .errors import AuthError, ProtocolError
from .text import LONE_SURROGATE, has_lone_surrogate, printable

__all__ = [
    "DEFAULT_MAX_USER_INFO_BYTES",
    "USER_INFO_TOO_LARGE_CODE",
    "PresenceMember",
    "SignedInUser",
    "channel_auth_string",
    "make_channel_auth",
    "make_user_auth",
    "parse_presence_channel_data",
    "parse_user_data",
    "sign",
    "user_auth_string",
    "verify_channel_auth",
    "verify_user_auth",
    "webhook_signature",
]

#: Pusher code for a presence ``user_info`` over the size limit.
USER_INFO_TOO_LARGE_CODE = 4303

#: Pusher's default limit for a presence member's ``user_info`` (JSON bytes).
DEFAULT_MAX_USER_INFO_BYTES = 2048

# Error messages quote what was signed; cap it so a huge channel_data does
# not turn into a huge error frame.
_QUOTE_LIMIT = 300


@dataclass(frozen=True)
class PresenceMember:
    """A presence channel member, parsed from verified ``channel_data``.

    ``user_id`` is always a string (SDKs turn numeric ids into strings);
    ``user_info`` is whatever JSON the app put there, or ``None``;
    ``raw`` is the ``channel_data`` text exactly as signed.
    """

    user_id: str
    user_info: Any
    raw: str


@dataclass(frozen=True)
class SignedInUser:
    """A user from verified sign-in ``user_data``.

    ``watchlist`` is a tuple of user ids (empty when absent); ``raw`` is the
    ``user_data`` text exactly as signed, echoed in ``pusher:signin_success``.
    """

    id: str
    user_info: Any
    watchlist: tuple[str, ...]
    raw: str


def sign(secret: str, string_to_sign: str) -> str:
    """Return the lowercase hex HMAC-SHA256 of ``string_to_sign``."""
    return hmac.new(
        secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def channel_auth_string(
    socket_id: str, channel: str, channel_data: str | None = None
) -> str:
    """Return the text a channel ``auth`` signs.

    ``"socket_id:channel"``, or ``"socket_id:channel:channel_data"`` when
    ``channel_data`` is given (presence channels).
    """
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def user_auth_string(socket_id: str, user_data: str) -> str:
    """Return the text a sign-in ``auth`` signs: ``"socket_id::user::user_data"``."""
    return f"{socket_id}::user::{user_data}"


def make_channel_auth(
    key: str,
    secret: str,
    socket_id: str,
    channel: str,
    channel_data: str | None = None,
) -> str:
    """Return the ``"key:hex"`` auth an auth endpoint gives for a channel."""
    return f"{key}:{sign(secret, channel_auth_string(socket_id, channel, channel_data))}"


def make_user_auth(key: str, secret: str, socket_id: str, user_data: str) -> str:
    """Return the ``"key:hex"`` auth an auth endpoint gives for a sign-in."""
    return f"{key}:{sign(secret, user_auth_string(socket_id, user_data))}"


def verify_channel_auth(
    key: str,
    secret: str,
    socket_id: str,
    channel: str,
    auth: object,
    channel_data: str | None = None,
) -> None:
    """Check a subscription's ``auth`` for ``channel``; return if it verifies.

    Raises:
        AuthError: ``auth`` is missing, not ``"key:hex"``, made for another
            app key, or its signature does not match.
        ProtocolError: ``channel`` or ``channel_data`` is not valid Unicode.
    """
    _check_unicode(channel, "channel")
    if channel_data is not None:
        _check_unicode(channel_data, "channel_data")
    signed = channel_auth_string(socket_id, channel, channel_data)
    _verify(key, secret, signed, auth, what=f"channel {channel!r}")


def verify_user_auth(
    key: str, secret: str, socket_id: str, user_data: str, auth: object
) -> None:
    """Check a ``pusher:signin`` ``auth``; return if it verifies.

    Raises:
        AuthError: as :func:`verify_channel_auth`.
        ProtocolError: ``user_data`` is not valid Unicode.
    """
    _check_unicode(user_data, "user_data")
    _verify(key, secret, user_auth_string(socket_id, user_data), auth, what="sign-in")


def webhook_signature(secret: str, body: bytes) -> str:
    """Return the ``X-Pusher-Signature`` header value for a webhook body."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def parse_presence_channel_data(
    channel_data: object, max_user_info_bytes: int = DEFAULT_MAX_USER_INFO_BYTES
) -> PresenceMember:
    """Parse a presence subscription's ``channel_data``.

    It must be a JSON object with a ``user_id`` (a non-empty string, or a
    number, turned into a string as JavaScript would: ``5`` and ``5.0`` give
    ``"5"``) and an optional ``user_info`` of at most ``max_user_info_bytes``
    bytes of JSON.

    Raises:
        ProtocolError: code ``None`` for malformed data, code
            :data:`USER_INFO_TOO_LARGE_CODE` when ``user_info`` is too large.
    """
    if channel_data is None:
        raise ProtocolError(
            None,
            "Presence channels need channel_data: a JSON string such as "
            '\'{"user_id":"42","user_info":{}}\', signed together with the channel',
        )
    obj = _load_object(channel_data, "channel_data")
    if "user_id" not in obj:
        raise ProtocolError(None, "channel_data must contain a user_id")
    user_id = _user_id_to_str(obj["user_id"])
    user_info = obj.get("user_info")
    if user_info is not None:
        size = len(_dump(user_info, "user_info"))
        if size > max_user_info_bytes:
            raise ProtocolError(
                USER_INFO_TOO_LARGE_CODE,
                f"user_info is {size} bytes of JSON; the limit is "
                f"{max_user_info_bytes} bytes",
            )
    return PresenceMember(user_id=user_id, user_info=user_info, raw=cast(str, channel_data))  # a str: loaded above


def parse_user_data(user_data: object) -> SignedInUser:
    """Parse a ``pusher:signin`` ``user_data``.

    It must be a JSON object with a non-empty string ``id`` and may have
    ``user_info`` (any JSON) and ``watchlist`` (a list of user id strings).

    Raises:
        ProtocolError: code ``None``; the message says which field is wrong.
    """
    if user_data is None:
        raise ProtocolError(
            None,
            "pusher:signin needs user_data: a JSON string such as "
            '\'{"id":"42"}\', signed with the auth',
        )
    obj = _load_object(user_data, "user_data")
    user_id = obj.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise ProtocolError(
            None, f"user_data must have a non-empty string id, got {_describe(user_id)}"
        )
    watchlist = obj.get("watchlist")
    if watchlist is None:
        watchlist = []
    if not isinstance(watchlist, list) or not all(
        isinstance(item, str) and item for item in watchlist
    ):
        raise ProtocolError(
            None, "user_data watchlist must be a list of non-empty user id strings"
        )
    return SignedInUser(
        id=user_id,
        user_info=obj.get("user_info"),
        watchlist=tuple(watchlist),
        raw=cast(str, user_data),  # a str: loaded above
    )


def _verify(key: str, secret: str, signed: str, auth: object, what: str) -> None:
    if not isinstance(auth, str) or not auth:
        raise AuthError(
            f"Missing auth for {what}: send the 'auth' value returned by your "
            "auth endpoint"
        )
    if has_lone_surrogate(auth):
        raise AuthError(f"Invalid auth for {what}: it is not valid Unicode (it holds a lone surrogate)")
    # The signature is hex and never holds a ':', so split at the last one.
    auth_key, sep, signature = auth.rpartition(":")
    if not sep:
        raise AuthError(f"Invalid auth for {what}: expected 'app_key:signature'")
    if auth_key != key:
        raise AuthError(
            f"Invalid auth for {what}: it was made with a different app key "
            "than the one this connection uses"
        )
    expected = sign(secret, signed)
    # Bytes, because compare_digest refuses non-ASCII str (hostile input).
    if not hmac.compare_digest(signature.encode("utf-8"), expected.encode("ascii")):
        raise AuthError(
            "Invalid signature: expected HMAC SHA256 hex digest of "
            f"{_quote(signed)}, keyed with the app secret"
        )


def _check_unicode(text: object, field: str) -> None:
    # A lone surrogate cannot be UTF-8 encoded for the HMAC: refuse it first.
    if isinstance(text, str) and has_lone_surrogate(text):
        raise ProtocolError(None, f"{field} is not valid Unicode: it holds {LONE_SURROGATE}")


def _load_object(text: object, field: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ProtocolError(
            None,
            f"{field} must be a string holding JSON, got {type(text).__name__}",
        )
    _check_unicode(text, field)
    try:
        obj = ujson.loads(text)
    except ValueError:
        raise ProtocolError(None, f"{field} is not valid JSON: {_quote(text)}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(
            None, f"{field} must be a JSON object, got {_describe(obj)}"
        )
    # Parsed values are sent on to other clients; refuse what cannot be
    # re-encoded as standard JSON (NaN, Infinity, lone surrogates) right here.
    _dump(obj, field)
    return obj


def _dump(value: Any, field: str) -> bytes:
    try:
        # Encoding to UTF-8 here is what catches lone surrogates.
        return ujson.dumps(
            value, ensure_ascii=False, escape_forward_slashes=False, allow_nan=False
        ).encode("utf-8")
    except (OverflowError, UnicodeError, ValueError, TypeError):
        raise ProtocolError(
            None, f"{field} holds values that are not valid JSON (NaN, Infinity "
            "or broken unicode)"
        ) from None


def _user_id_to_str(value: Any) -> str:
    # bool is an int subclass in Python, but JSON true is no user id.
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        # JavaScript prints whole numbers without ".0" (below 1e21).
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    raise ProtocolError(
        None,
        f"channel_data user_id must be a non-empty string or a number, "
        f"got {_describe(value)}",
    )


def _describe(value: Any) -> str:
    # Says what the client sent, in JSON terms, without echoing big values.
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {_quote(value, 40)}" if value else "an empty string"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _quote(text: str, limit: int = _QUOTE_LIMIT) -> str:
    # Quoted text goes into error frames: it must encode as UTF-8.
    text = printable(text)
    if len(text) <= limit:
        return f"'{text}'"
    return f"'{text[:limit]}...' ({len(text)} characters)"

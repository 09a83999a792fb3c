"""What an app's auth endpoint receives and answers, as pure code.

pusher-js asks the app's own server to sign a subscription to a private or
presence channel (``POST /pusher/auth``) and a user sign-in
(``POST /pusher/user-auth``). Its body is form-encoded
(``socket_id=1.2&channel_name=private-a``, plus any ``params`` the page
configured); other clients and custom authorizers send the same fields as a
JSON object. :func:`parse_auth_request` checks that body and either returns
an :class:`AuthRequest` or raises :class:`~transport.errors.HttpError`
(400 malformed, 415 another content type), so the app's code only ever
sees a valid socket id and channel name.

The answers pusher-js expects, signed with ``transport.auth``::

    private / private-encrypted   {"auth": "key:hex"}  (+ "shared_secret")
    presence                      {"auth": "key:hex", "channel_data": "<JSON>"}
    sign-in                       {"auth": "key:hex", "user_data": "<JSON>"}

:func:`channel_answer` and :func:`user_answer` build them from the app's
decision and raise ``ValueError`` when that decision is malformed (a bug in
the app, not in the request).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import ujson

from . import auth, names
from .errors import HttpError, ProtocolError
from .text import decode_utf8, json_problem

__all__ = [
    "FORM",
    "JSON",
    "MAX_FIELDS",
    "AuthRequest",
    "channel_answer",
    "parse_auth_request",
    "user_answer",
]

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

#: At most this many fields in one body: pusher-js sends two plus the
#: page's own ``params``; thousands would only cost parsing time.
MAX_FIELDS = 32

# ASCII digits only and bounded, as socket ids are checked everywhere else.
_SOCKET_ID = re.compile(r"\A[0-9]{1,20}\.[0-9]{1,20}\Z")


@dataclass(frozen=True)
class AuthRequest:
    """A checked auth request.

    ``socket_id`` is ``digits.digits``; ``channel_name`` is a valid private,
    presence or private-encrypted channel name, or ``None`` for a sign-in;
    ``params`` holds every field of the body as sent (the page's extra
    ``params`` included), values being strings for a form body and any JSON
    value for a JSON body.
    """

    socket_id: str
    channel_name: str | None
    params: Mapping[str, Any] = field(default_factory=dict)


def parse_auth_request(
    body: bytes,
    content_type: str | None,
    *,
    channel: bool,
    max_channel_name_length: int = names.DEFAULT_MAX_NAME_LENGTH,
) -> AuthRequest:
    """Check an auth endpoint's request body; ``channel`` is False for a sign-in.

    Raises:
        HttpError: 415 for a content type other than form or JSON; 400 for
            a body that is not UTF-8, not well-formed, repeats a field, or
            lacks a valid ``socket_id`` (and, with ``channel``, a valid
            ``channel_name`` of a channel that needs auth).
    """
    params = _parse_body(body, _media_type(content_type))
    socket_id = params.get("socket_id")
    if not isinstance(socket_id, str) or not _SOCKET_ID.match(socket_id):
        raise HttpError(400, "socket_id must be the connection's socket id, two integers joined by a dot")
    if not channel:
        return AuthRequest(socket_id, None, params)
    name = params.get("channel_name")
    if name is None:
        raise HttpError(400, "channel_name is missing")
    try:
        name = names.validate_channel_name(name, max_channel_name_length)
    except ProtocolError as exc:
        raise HttpError(400, exc.message) from None
    if not names.channel_kind(name).needs_auth:
        raise HttpError(400, f"{name} is a public channel: only private- and presence- channels need auth")
    return AuthRequest(socket_id, name, params)


def channel_answer(
    key: str,
    secret: str,
    socket_id: str,
    channel: str,
    member: Mapping[str, Any] | None = None,
    *,
    encryption_master_key: bytes | None = None,
    max_user_info_bytes: int = auth.DEFAULT_MAX_USER_INFO_BYTES,
) -> dict[str, str]:
    """The signed answer that lets ``socket_id`` subscribe to ``channel``.

    ``member`` (presence channels only, required there) is
    ``{"user_id": ..., "user_info"?: ...}``. A ``private-encrypted-`` channel
    needs ``encryption_master_key`` (32 bytes): the answer then carries the
    channel's ``shared_secret``, which pusher-js decrypts events with.

    Raises:
        ValueError: ``member`` is missing or malformed for a presence
            channel, or an encrypted channel has no master key.
    """
    kind = names.channel_kind(channel)
    if kind is names.ChannelKind.PRESENCE:
        channel_data = _presence_channel_data(member, max_user_info_bytes)
        return {
            "auth": auth.make_channel_auth(key, secret, socket_id, channel, channel_data),
            "channel_data": channel_data,
        }
    answer = {"auth": auth.make_channel_auth(key, secret, socket_id, channel)}
    if kind is names.ChannelKind.PRIVATE_ENCRYPTED:
        if encryption_master_key is None or len(encryption_master_key) != 32:
            raise ValueError(f"{channel} is an encrypted channel: pass a 32-byte encryption_master_key")
        # Pusher's scheme: the channel's key is sha256(channel name + master key).
        digest = hashlib.sha256(channel.encode("utf-8") + encryption_master_key).digest()
        answer["shared_secret"] = base64.b64encode(digest).decode("ascii")
    return answer


def user_answer(key: str, secret: str, socket_id: str, user: Mapping[str, Any]) -> dict[str, str]:
    """The signed answer to a sign-in; ``user`` is ``{"id": "...", "user_info"?, "watchlist"?}``.

    Raises:
        ValueError: ``user`` has no non-empty string ``id``, a malformed
            ``watchlist``, or values JSON cannot carry.
    """
    if not isinstance(user, Mapping):
        raise ValueError(f"the user must be a mapping such as {{'id': '42'}}, not {type(user).__name__}")
    user_data = _dumps(dict(user), "user")
    try:
        auth.parse_user_data(user_data)
    except ProtocolError as exc:
        raise ValueError(exc.message) from None
    return {"auth": auth.make_user_auth(key, secret, socket_id, user_data), "user_data": user_data}


def _media_type(content_type: str | None) -> str:
    # "application/x-www-form-urlencoded; charset=UTF-8" -> the part before ";".
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in (FORM, JSON):
        raise HttpError(415, f"send the fields as {FORM} (as pusher-js does) or {JSON}")
    return media


def _parse_body(body: bytes, media: str) -> dict[str, Any]:
    text = decode_utf8(body)
    if text is None:
        raise HttpError(400, "the body is not valid UTF-8")
    if media == JSON:
        return _parse_json(text)
    try:
        # Strict: every field is "k=v"; percent-escapes must decode to UTF-8
        # (so no lone surrogate gets in); a flood of fields is refused.
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                          errors="strict", max_num_fields=MAX_FIELDS)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        raise HttpError(400, f"the body is not well-formed {FORM}") from None
    params: dict[str, Any] = {}
    for name, value in pairs:
        if name in params:
            raise HttpError(400, f"{name} is sent more than once")
        params[name] = value
    return params


def _parse_json(text: str) -> dict[str, Any]:
    try:
        value = ujson.loads(text)
    except ValueError:
        raise HttpError(400, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise HttpError(400, "the body must be a JSON object")
    if len(value) > MAX_FIELDS:
        raise HttpError(400, f"more than {MAX_FIELDS} fields")
    problem = json_problem(value)
    if problem:
        raise HttpError(400, f"the body holds {problem}")
    return value


def _presence_channel_data(member: Mapping[str, Any] | None, max_user_info_bytes: int) -> str:
    if not isinstance(member, Mapping) or "user_id" not in member:
        raise ValueError("a presence channel needs the member: a mapping such as "
                         "{'user_id': '42', 'user_info': {'name': 'Ann'}}")
    data = {"user_id": member["user_id"]}
    if member.get("user_info") is not None:
        data["user_info"] = member["user_info"]
    channel_data = _dumps(data, "member")
    try:
        # The node will check the same rules; failing here names the culprit.
        auth.parse_presence_channel_data(channel_data, max_user_info_bytes)
    except ProtocolError as exc:
        raise ValueError(exc.message) from None
    return channel_data


def _dumps(value: dict[str, Any], what: str) -> str:
    # ASCII-only JSON: the signed text then reads the same in every encoding.
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the {what} holds values JSON cannot carry: {exc}") from None

"""What the chat accepts from a browser: names, messages, rooms, and the signed name cookie.

Pure functions, no I/O. The page runs the same checks (``static/chat.js``)
so people see the reason before they send, but the server never trusts the
page: every request is checked here again, and a refusal is a 400 with a
JSON ``{"error": reason}`` the page shows as it is.

The cookie holds who you are (a random id and the name you chose), signed
with an HMAC so a browser cannot pretend to be someone else::

    cookie = sign_user(secret, User("u-1f2e3d4c", "Ann"))
    user = read_user(secret, cookie)        # User, or None if forged/garbled
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from dataclasses import dataclass

__all__ = [
    "MAX_NAME",
    "MAX_TEXT",
    "Refused",
    "User",
    "check_name",
    "check_room",
    "check_text",
    "new_user_id",
    "read_user",
    "sign_user",
]

MAX_NAME = 32  # characters (code points), as the page counts them
MAX_TEXT = 500

_USER_ID = re.compile(r"\Au-[0-9a-f]{8}\Z")
# Bidirectional overrides make a name display as something else ("evil" as
# "live"); nobody needs them in a chat name.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class Refused(ValueError):
    """Input the chat does not accept; ``str(exc)`` is the reason shown to the user."""


@dataclass(frozen=True)
class User:
    """Who a browser is: ``id`` (random, stable while the cookie lives) and the chosen ``name``."""

    id: str
    name: str


def new_user_id() -> str:
    """A fresh random user id, ``u-`` and 8 hex digits."""
    return f"u-{secrets.token_hex(4)}"


def _check_text(value: object, what: str, limit: int, *, bidi: bool) -> str:
    if not isinstance(value, str):
        raise Refused(f"{what} must be text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A JSON "\ud800" escape decodes to a lone surrogate, which no
        # browser can display and no JSON encoder should pass on.
        raise Refused(f"{what} is not valid Unicode") from None
    value = value.strip()
    if not value:
        raise Refused(f"{what} is empty")
    if len(value) > limit:
        raise Refused(f"{what} is longer than {limit} characters")
    for char in value:
        if unicodedata.category(char) == "Cc" or (not bidi and char in _BIDI_CONTROLS):
            raise Refused(f"{what} holds a control character (U+{ord(char):04X})")
    return value


def check_name(value: object) -> str:
    """Return the name stripped of surrounding spaces, or raise :class:`Refused`."""
    return _check_text(value, "Name", MAX_NAME, bidi=False)


def check_text(value: object) -> str:
    """Return the message stripped of surrounding spaces, or raise :class:`Refused`."""
    return _check_text(value, "Message", MAX_TEXT, bidi=True)


def check_room(value: object, rooms: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``rooms``, or raise :class:`Refused`."""
    if not isinstance(value, str) or value not in rooms:
        raise Refused(f"unknown room; rooms are {', '.join(rooms)}")
    return value


def _mac(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode("ascii"), hashlib.sha256).hexdigest()


def sign_user(secret: bytes, user: User) -> str:
    """The cookie value for ``user``: base64url JSON, a dot, its HMAC-SHA256 in hex."""
    payload = base64.urlsafe_b64encode(
        json.dumps({"id": user.id, "name": user.name}, separators=(",", ":")).encode()
    ).decode("ascii")
    return f"{payload}.{_mac(secret, payload)}"


def read_user(secret: bytes, cookie: str | None) -> User | None:
    """The :class:`User` a cookie value names, or None if it is missing, forged or garbled."""
    if not cookie:
        return None
    payload, _, mac = cookie.rpartition(".")
    if not payload or not payload.isascii() or not mac.isascii():
        return None
    if not hmac.compare_digest(mac.encode("ascii"), _mac(secret, payload).encode("ascii")):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload))
        user = User(data["id"], check_name(data["name"]))
    except (binascii.Error, ValueError, KeyError, TypeError):  # Refused is a ValueError
        return None
    return user if isinstance(user.id, str) and _USER_ID.match(user.id) else None

"""Channel and event name rules of the Pusher protocol.

Pure functions: they look at a name and either answer a question about it
(:func:`channel_kind`, :func:`is_cache_channel`, :func:`is_client_event`) or
check it and raise :class:`~transport.errors.ProtocolError` with
:data:`INVALID_NAME_CODE` and a message that says what to change.

Every rule matches a *prefix* exactly; nothing searches for a substring, so
``my-cache-channel`` is a plain public channel and ``xprivate-a`` is public too.

::

    >>> channel_kind("presence-room-1")
    <ChannelKind.PRESENCE: 'presence'>
    >>> is_cache_channel("private-cache-prices")
    True
    >>> validate_channel_name("private-chat@42")
    'private-chat@42'
"""

from __future__ import annotations

import enum
import re

from .errors import ProtocolError

__all__ = [
    "CACHE_PREFIXES",
    "CLIENT_EVENT_PREFIX",
    "DEFAULT_MAX_NAME_LENGTH",
    "INVALID_NAME_CODE",
    "SERVER_TO_USER_PREFIX",
    "ChannelKind",
    "channel_kind",
    "check_event_name_characters",
    "is_cache_channel",
    "is_client_event",
    "server_to_user_channel",
    "user_id_from_server_to_user",
    "validate_channel_name",
    "validate_event_name",
]

#: Pusher code for a bad channel or event name (4300-4399: "other errors",
#: the connection stays open).
INVALID_NAME_CODE = 4302

#: Pusher's default limit for channel and event names, in characters.
DEFAULT_MAX_NAME_LENGTH = 200

#: Reserved prefix of the channel that reaches one signed-in user's sockets.
SERVER_TO_USER_PREFIX = "#server-to-user-"

#: Events a client may send to other subscribers start with this.
CLIENT_EVENT_PREFIX = "client-"

#: Channels that keep their last event. Longest first only for readability:
#: each is matched as an exact prefix, so the order does not change results.
CACHE_PREFIXES = (
    "private-encrypted-cache-",
    "presence-cache-",
    "private-cache-",
    "cache-",
)

# The documented alphabet. Spelled out instead of \w so that no non-ASCII
# letter slips in, and matched with fullmatch so a trailing "\n" fails too.
_CHANNEL_CHARS = re.compile(r"[A-Za-z0-9_\-=@,.;]+")
_ALLOWED_CHARS_TEXT = "A-Z, a-z, 0-9 and _ - = @ , . ;"

# Event names: C0 controls, DEL, C1 controls and (lone) surrogates.
_BAD_EVENT_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class ChannelKind(enum.Enum):
    """What a channel name asks for when subscribing."""

    PUBLIC = "public"
    PRIVATE = "private"
    PRESENCE = "presence"
    PRIVATE_ENCRYPTED = "private-encrypted"

    @property
    def needs_auth(self) -> bool:
        """True when a subscription must carry a signature."""
        return self is not ChannelKind.PUBLIC


def channel_kind(name: str) -> ChannelKind:
    """Return the kind of channel ``name`` is, by its exact prefix.

    ``private-encrypted-`` is tested before ``private-`` because it is the
    longer of the two. Anything without a known prefix is public. The name is
    not validated here; call :func:`validate_channel_name` for that.
    """
    if name.startswith("private-encrypted-"):
        return ChannelKind.PRIVATE_ENCRYPTED
    if name.startswith("private-"):
        return ChannelKind.PRIVATE
    if name.startswith("presence-"):
        return ChannelKind.PRESENCE
    return ChannelKind.PUBLIC


def is_cache_channel(name: str) -> bool:
    """True if ``name`` starts with one of :data:`CACHE_PREFIXES`."""
    return name.startswith(CACHE_PREFIXES)


def is_client_event(name: str) -> bool:
    """True if ``name`` is a client event (starts with ``client-``)."""
    return name.startswith(CLIENT_EVENT_PREFIX)


def validate_channel_name(
    name: object,
    max_length: int = DEFAULT_MAX_NAME_LENGTH,
    *,
    allow_server_to_user: bool = False,
) -> str:
    """Check a channel name and return it unchanged.

    A valid name is a ``str`` of 1 to ``max_length`` characters from
    ``A-Z a-z 0-9 _ - = @ , . ;``. The reserved ``#server-to-user-{user_id}``
    form is accepted only with ``allow_server_to_user=True`` (the HTTP API
    may send to it; clients may never subscribe to it), and then its user id
    must use the same alphabet.

    Raises:
        ProtocolError: code :data:`INVALID_NAME_CODE`; the message names the
            rule that failed.
    """
    name = _check_length("Channel", name, max_length)
    if name.startswith(SERVER_TO_USER_PREFIX):
        _check_server_to_user(name, allow_server_to_user)
    elif not _CHANNEL_CHARS.fullmatch(name):
        raise ProtocolError(
            INVALID_NAME_CODE,
            f"Invalid channel name {_shorten(name)}: only {_ALLOWED_CHARS_TEXT} "
            f"are allowed (found {_first_bad_char(name)!r})",
        )
    return name


def validate_event_name(
    name: object, max_length: int = DEFAULT_MAX_NAME_LENGTH
) -> str:
    """Check an event name and return it unchanged.

    Pusher limits the length of event names (1 to ``max_length``
    characters), not their alphabet: ``pusher:`` and ``client-`` names and
    spaces all pass. What no name may hold is a control character or a lone
    surrogate (see :func:`check_event_name_characters`).

    Raises:
        ProtocolError: code :data:`INVALID_NAME_CODE`.
    """
    return check_event_name_characters(_check_length("Event", name, max_length))


def check_event_name_characters(name: str) -> str:
    """Refuse control characters and lone surrogates in an event name; return it.

    Control characters (C0, DEL, C1) have no business in a name that apps
    bind handlers to and logs print; a lone surrogate (from a JSON
    ``"\\ud800"`` escape) cannot even be encoded as UTF-8 to send the event
    on. Length is not checked here: the parser calls this before it knows
    the app's limit.

    Raises:
        ProtocolError: code :data:`INVALID_NAME_CODE`.
    """
    if name.isascii() and name.isprintable():
        return name  # the common case, answered without a regex
    bad = _BAD_EVENT_CHARS.search(name)
    if bad is not None:
        kind = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        raise ProtocolError(
            INVALID_NAME_CODE,
            f"Invalid event name {_shorten(name)}: it holds {kind} ({bad.group()!r}); "
            "use printable text",
        )
    return name


def _check_length(what: str, name: object, max_length: int) -> str:
    # The rules channel and event names share: a str of 1..max_length chars.
    if not isinstance(name, str):
        raise ProtocolError(INVALID_NAME_CODE, f"{what} name must be a string, got {type(name).__name__}")
    if not name:
        raise ProtocolError(INVALID_NAME_CODE, f"{what} name must not be empty")
    if len(name) > max_length:
        raise ProtocolError(
            INVALID_NAME_CODE,
            f"{what} name is {len(name)} characters long; the limit is {max_length}: {_shorten(name)}",
        )
    return name


def server_to_user_channel(user_id: str) -> str:
    """Return the reserved channel that reaches the signed-in user ``user_id``."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError(f"user_id must be a non-empty string, got {user_id!r}")
    return SERVER_TO_USER_PREFIX + user_id


def user_id_from_server_to_user(channel: str) -> str | None:
    """Return the user id of a ``#server-to-user-`` channel, else ``None``."""
    if channel.startswith(SERVER_TO_USER_PREFIX):
        # An empty id is not a user: the bare prefix is no channel at all.
        return channel[len(SERVER_TO_USER_PREFIX):] or None
    return None


def _check_server_to_user(name: str, allowed: bool) -> None:
    if not allowed:
        raise ProtocolError(
            INVALID_NAME_CODE,
            f"Channel {_shorten(name)} is reserved for the server; to reach a "
            "signed-in user, send to it with the HTTP API",
        )
    user_id = name[len(SERVER_TO_USER_PREFIX):]
    if not user_id:
        raise ProtocolError(
            INVALID_NAME_CODE,
            f"Channel {SERVER_TO_USER_PREFIX!r} needs a user id after the prefix",
        )
    if not _CHANNEL_CHARS.fullmatch(user_id):
        raise ProtocolError(
            INVALID_NAME_CODE,
            f"Invalid user id in {_shorten(name)}: only {_ALLOWED_CHARS_TEXT} "
            f"are allowed (found {_first_bad_char(user_id)!r})",
        )


def _first_bad_char(text: str) -> str:
    # Pointing at the offending character saves the reader a hunt.
    for char in text:
        if not _CHANNEL_CHARS.fullmatch(char):
            return char
    return ""


def _shorten(text: str, limit: int = 60) -> str:
    # Names can be long or hostile; never echo more than a readable prefix.
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + "..."

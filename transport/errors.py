"""One error tree for actorcast.

::

    ActorcastError
    ├── ConfigError          bad app config / CLI flags (raised at start-up)
    ├── ProtocolError        a client broke the Pusher protocol; carries the Pusher code
    │   └── AuthError        a channel or user signature did not verify
    └── HttpError            an HTTP API request was refused; carries the HTTP status

Protocol errors become a ``pusher:error`` frame (and, for codes that end the
connection, a close with the same code). HTTP errors become the response status
and a JSON body ``{"error": message}``.
"""

from __future__ import annotations

__all__ = [
    "ActorcastError",
    "AuthError",
    "ConfigError",
    "HttpError",
    "ProtocolError",
    "listen_error",
]


class ActorcastError(Exception):
    """Root of every error actorcast raises on purpose."""


class ConfigError(ActorcastError):
    """The node or app configuration is invalid; the message says which field."""


class ProtocolError(ActorcastError):
    """A Pusher protocol error with its Pusher error code.

    ``code`` is ``None`` for errors Pusher reports without a code (for example
    a malformed message), otherwise a number from the 4000-4399 ranges.
    ``fatal`` tells the server to close the connection with ``code``.
    """

    def __init__(self, code: int | None, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, fatal={self.fatal})"


class AuthError(ProtocolError):
    """A subscription or sign-in signature was missing or wrong (status 401)."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(4009, message)
        self.status = status


class HttpError(ActorcastError):
    """An HTTP API request failed; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, *, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers  # extra response headers, e.g. Sec-WebSocket-Version on a 426


def listen_error(what: str, host: str, port: int, exc: OSError) -> OSError:
    """``exc`` (from bind/listen) saying which port it was: ``cannot listen on ... (the metrics port): ...``.

    Still an OSError with the same errno, so callers that catch OSError keep working.
    """
    reason = (exc.strerror or str(exc)).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    return OSError(exc.errno, f"cannot listen on {host}:{port} ({what}): {reason}")

"""CORS for an auth endpoint that a page on another origin calls, as pure code.

A page served from ``http://localhost:3000`` whose pusher-js asks
``http://localhost:8000/pusher/auth`` for signatures makes a cross-origin
request: the browser lets the page read the answer only if it carries
``Access-Control-Allow-Origin`` naming the page's origin, and before a
request with custom headers (Laravel Echo adds ``X-CSRF-TOKEN``) it sends
an ``OPTIONS`` *preflight* that must be answered the same way.

Only origins listed exactly are allowed, and the allowed origin is echoed
(never ``*``): the answers are signatures for the visitor's own session, so
any other site must not be able to read them.

::

    >>> allowed = parse_origins(["http://localhost:3000"])
    >>> cors_headers("http://localhost:3000", allowed)
    [('Vary', 'Origin'), ('Access-Control-Allow-Origin', 'http://localhost:3000'), ('Access-Control-Allow-Credentials', 'true')]
    >>> cors_headers("http://evil.example", allowed)
    [('Vary', 'Origin')]
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import ConfigError, HttpError

__all__ = ["PREFLIGHT_MAX_AGE", "cors_headers", "parse_origins", "preflight_headers"]

#: Seconds a browser may cache a preflight's answer.
PREFLIGHT_MAX_AGE = 600

# An origin as browsers send it: scheme, host (a name, IPv4 or [IPv6]) and
# an optional port; no path, no trailing slash, no credentials.
_ORIGIN = re.compile(r"\Ahttps?://(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?\Z")
# Header names are RFC 9110 tokens; a preflight lists them with commas.
_TOKEN = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_MAX_REQUESTED_HEADERS = 32


def parse_origins(origins: Iterable[str]) -> frozenset[str]:
    """Check a configured list of allowed origins; return them lower-cased.

    Raises:
        ConfigError: an entry is not ``http(s)://host[:port]`` (``*``,
            ``null``, paths and trailing slashes are refused: browsers
            never send them, so such an entry would silently match nothing,
            or, for ``*``, everything).
    """
    if isinstance(origins, str):
        raise ConfigError("allowed_origins must be a list of origins, not one string")
    allowed = set()
    for origin in origins:
        if not isinstance(origin, str) or not _ORIGIN.match(origin.lower()):
            raise ConfigError(
                f"allowed origin {origin!r} must look like 'http://localhost:3000': scheme, host and "
                "optional port, no path or trailing slash ('*' is not supported)"
            )
        allowed.add(origin.lower())
    return frozenset(allowed)


def cors_headers(origin: str | None, allowed: frozenset[str]) -> list[tuple[str, str]]:
    """The CORS headers of an answer to a request from ``origin`` (its ``Origin`` header).

    ``Vary: Origin`` always, so a cache never serves one origin's answer to
    another; the allow headers only when ``origin`` is in ``allowed``.
    """
    headers = [("Vary", "Origin")]
    if origin is not None and origin.lower() in allowed:
        headers.append(("Access-Control-Allow-Origin", origin))
        # Cookies identify the visitor to the app's authorize callback.
        headers.append(("Access-Control-Allow-Credentials", "true"))
    return headers


def preflight_headers(
    origin: str | None, method: str | None, requested_headers: str | None, allowed: frozenset[str]
) -> list[tuple[str, str]]:
    """The headers of a ``204`` answer to a preflight, or an HttpError.

    ``method`` and ``requested_headers`` are the preflight's
    ``Access-Control-Request-Method`` and ``-Headers``. The requested
    headers are allowed as listed (they are the page's own, e.g. a CSRF
    token), once the origin is known to be allowed.

    Raises:
        HttpError: 403 for an origin not allowed, 405 for a method other
            than POST, 400 for a malformed header list.
    """
    if origin is None or origin.lower() not in allowed:
        raise HttpError(403, f"origin {origin!r} is not allowed to call this auth endpoint")
    if method != "POST":
        raise HttpError(405, "the auth endpoint answers POST only", headers=(("Allow", "POST, OPTIONS"),))
    names = [name.strip() for name in (requested_headers or "").split(",") if name.strip()]
    if len(names) > _MAX_REQUESTED_HEADERS or not all(_TOKEN.match(name) for name in names):
        raise HttpError(400, "Access-Control-Request-Headers must be a short list of header names")
    headers = cors_headers(origin, allowed)
    headers.append(("Access-Control-Allow-Methods", "POST, OPTIONS"))
    if names:
        headers.append(("Access-Control-Allow-Headers", ", ".join(names)))
    headers.append(("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE)))
    return headers

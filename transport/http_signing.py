"""Signed Pusher HTTP API requests (auth_version 1.0).

A signed request carries these query parameters:

* ``auth_key`` — the app key;
* ``auth_timestamp`` — unix seconds, within ``max_skew`` of the server clock;
* ``auth_version`` — ``1.0``;
* ``body_md5`` — hex md5 of the body (required when there is a body);
* ``auth_signature`` — hex HMAC-SHA256, keyed with the app secret, of::

      METHOD\\nPATH\\nk1=v1&k2=v2...

  where the query part is every other parameter with lower-cased keys,
  sorted by key and joined without URL-escaping.

:func:`verify_request` checks all of that and raises
:class:`~transport.errors.HttpError` (401 for authentication, 400 for a
malformed request). It is pure: the caller passes the clock in ``now`` and the
*decoded* query parameters. Whether the app exists (404) is decided before,
by whoever looks the app up.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from .errors import HttpError

__all__ = [
    "AUTH_VERSION",
    "DEFAULT_MAX_SKEW",
    "request_string_to_sign",
    "sign_request",
    "verify_request",
]

#: The only signing version Pusher defines.
AUTH_VERSION = "1.0"

#: How far ``auth_timestamp`` may be from the server clock, in seconds.
DEFAULT_MAX_SKEW = 600

_SIGNATURE = "auth_signature"


def request_string_to_sign(method: str, path: str, query: Mapping[str, str]) -> str:
    """Return ``"METHOD\\nPATH\\nQUERY"`` for a request's parameters.

    ``auth_signature`` is left out if present; keys are lower-cased and
    sorted; values are used as given (decoded, not URL-escaped).
    """
    params = sorted(
        (name.lower(), value) for name, value in query.items() if name.lower() != _SIGNATURE
    )
    joined = "&".join(f"{name}={value}" for name, value in params)
    return f"{method.upper()}\n{path}\n{joined}"


def sign_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    key: str,
    secret: str,
    body: bytes = b"",
    timestamp: int | float | None = None,
) -> dict[str, str]:
    """Return ``query`` plus the auth parameters that sign the request.

    ``timestamp`` defaults to the current time. ``body_md5`` is added only
    when there is a body. The input mapping is not changed.
    """
    if timestamp is None:
        timestamp = time.time()
    signed = dict(query)
    signed.update(
        auth_key=key,
        auth_timestamp=str(int(timestamp)),
        auth_version=AUTH_VERSION,
    )
    if body:
        signed["body_md5"] = hashlib.md5(body).hexdigest()
    signed.pop(_SIGNATURE, None)
    signed[_SIGNATURE] = _hmac_hex(secret, request_string_to_sign(method, path, signed))
    return signed


def verify_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    body: bytes,
    key: str,
    secret: str,
    now: float,
    max_skew: float = DEFAULT_MAX_SKEW,
) -> None:
    """Check the signature of an HTTP API request; return if it is valid.

    ``path`` is the request path without the query string; ``query`` holds
    the decoded query parameters; ``now`` is the server's unix time.

    Raises:
        HttpError: 401 for a missing or wrong ``auth_key``, a missing or
            wrong ``auth_signature``, or a missing, malformed or stale
            ``auth_timestamp``; 400 for duplicate parameters, a missing or
            unknown ``auth_version``, or a ``body_md5`` that is missing or
            does not match the body.
    """
    params = _lower_keys(query)

    auth_key = params.get("auth_key")
    if not auth_key:
        raise HttpError(401, "Missing auth_key query parameter")
    if auth_key != key:
        raise HttpError(401, "Invalid auth_key: it is not this app's key")

    signature = params.get(_SIGNATURE)
    if not signature:
        raise HttpError(401, "Missing auth_signature query parameter")

    timestamp = _parse_timestamp(params.get("auth_timestamp"))

    version = params.get("auth_version")
    if not version:
        raise HttpError(400, f"Missing auth_version query parameter (use {AUTH_VERSION})")
    if version != AUTH_VERSION:
        raise HttpError(400, f"Unsupported auth_version {version!r}: use {AUTH_VERSION}")

    body_md5 = params.get("body_md5")
    if body and not body_md5:
        raise HttpError(400, "Missing body_md5 query parameter: a request "
                        "with a body must send the hex md5 of the body")

    # Only presence and format were checked so far; the clock and the body
    # are judged after the signature, so an unsigned request learns nothing.
    string_to_sign = request_string_to_sign(method, path, params)
    expected = _hmac_hex(secret, string_to_sign)
    # Bytes, because compare_digest refuses non-ASCII str (hostile input).
    if not hmac.compare_digest(signature.encode("utf-8"), expected.encode("ascii")):
        raise HttpError(
            401,
            "Invalid signature: expected HMAC SHA256 hex digest of "
            f"{string_to_sign!r}, keyed with the app secret",
        )

    skew = now - timestamp
    if abs(skew) > max_skew:
        raise HttpError(
            401,
            f"Stale auth_timestamp: it is {abs(skew):.0f} s "
            f"{'behind' if skew > 0 else 'ahead of'} the server clock; the "
            f"limit is {max_skew:.0f} s (check the client's clock)",
        )

    # SDKs also send body_md5 for empty GET bodies; when present it must match.
    if body_md5 is not None and body_md5.lower() != hashlib.md5(body).hexdigest():
        raise HttpError(400, "body_md5 does not match the hex md5 of the request body")


def _lower_keys(query: Mapping[str, str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in query.items():
        lowered = name.lower()
        # Two spellings of one key would make the signed string ambiguous.
        if lowered in params:
            raise HttpError(400, f"Duplicate query parameter {lowered!r}")
        params[lowered] = value
    return params


def _parse_timestamp(value: str | None) -> int:
    if not value:
        raise HttpError(401, "Missing auth_timestamp query parameter")
    # int() would also take " 12", "+12" or "1_2"; a timestamp is plain digits.
    if not value.isascii() or not value.isdigit():
        raise HttpError(401, f"Invalid auth_timestamp {value!r}: use unix time in seconds")
    return int(value)


def _hmac_hex(secret: str, text: str) -> str:
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()

"""A WSGI auth endpoint for pusher-js: channel authorization and user sign-in.

pusher-js asks the page's server to sign each subscription to a private or
presence channel and each sign-in; this is that server part, for any WSGI
server (gevent.pywsgi, gunicorn, waitress, or mounted in Flask/Django). It
needs no running node, only the app's key and secret::

    from actors import App
    from actors.auth_endpoint import AuthEndpoint

    def authorize(environ, socket_id, channel):
        user = my_session_user(environ)            # your login, e.g. a cookie
        if user is None:
            return None                            # 403
        if channel.startswith("presence-"):
            return {"user_id": user.id, "user_info": {"name": user.name}}
        return True                                # private channels: allowed

    def authenticate_user(environ, socket_id):
        user = my_session_user(environ)
        return None if user is None else {"id": user.id, "user_info": {"name": user.name}}

    wsgi_app = AuthEndpoint(App(id="1", key="app-key", secret="app-secret"), authorize,
                            authenticate_user, allowed_origins=["http://localhost:3000"],
                            fallback=my_other_wsgi_app)

It answers ``POST /pusher/auth`` and ``POST /pusher/user-auth`` (pusher-js's
default paths, relative to the mount point) with the signed JSON pusher-js
expects, ``OPTIONS`` preflights from ``allowed_origins``, and everything
else with ``fallback`` (or 404). Statuses: 400 malformed request (bad
``socket_id``, channel name, body), 403 refused by your callback, 404 sign-in
without ``authenticate_user``, 405 other methods, 411/413 missing or too
large ``Content-Length``, 415 a body neither form nor JSON; errors are JSON
``{"error": "..."}``. Flow: read at most ``max_body_bytes`` ->
``transport.auth_request`` checks the fields -> your callback decides ->
``transport.auth_request`` signs. The checked request is also in
``environ["actorcast.auth_request"]`` (its ``params``: the page's extra
fields). Bounding how long a slow client may take to send its body is the
WSGI server's job (gevent.pywsgi: pass it a ``socket`` timeout).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from transport import auth_request, cors
from transport.config import App
from transport.errors import HttpError

__all__ = ["ENVIRON_KEY", "AuthEndpoint", "AuthenticateUser", "Authorize", "WSGIApp"]

log = logging.getLogger(__name__)

Environ = dict[str, Any]  # PEP 3333: CGI strings and the wsgi.* objects
StartResponse = Callable[[str, list[tuple[str, str]]], object]  # as called here (a server's also takes exc_info)
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
#: ``authorize(environ, socket_id, channel_name)``: None or False refuses (403);
#: for a presence channel return the member ``{"user_id", "user_info"?}``;
#: for other channels True (or any mapping) allows.
Authorize = Callable[[Environ, str, str], Mapping[str, Any] | bool | None]
#: ``authenticate_user(environ, socket_id)``: the user ``{"id", "user_info"?,
#: "watchlist"?}``, or None to refuse (403).
AuthenticateUser = Callable[[Environ, str], Mapping[str, Any] | None]

#: Where the checked :class:`~transport.auth_request.AuthRequest` is put in the environ.
ENVIRON_KEY = "actorcast.auth_request"

_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
            415: "Unsupported Media Type", 500: "Internal Server Error"}


class AuthEndpoint:
    """A WSGI app signing pusher-js's channel authorizations and sign-ins for one app."""

    def __init__(
        self,
        app: App,
        authorize: Authorize,
        authenticate_user: AuthenticateUser | None = None,
        allowed_origins: Sequence[str] = (),
        *,
        encryption_master_key: bytes | None = None,
        channel_path: str = "/pusher/auth",
        user_path: str = "/pusher/user-auth",
        max_body_bytes: int = 8192,
        fallback: WSGIApp | None = None,
    ) -> None:
        """``app`` gives the key, secret and limits; the callbacks decide who gets what.

        ``allowed_origins``: exact origins (``http://localhost:3000``) whose
        pages may call the endpoint across origins (CORS); same-origin pages
        need none. ``encryption_master_key`` (32 bytes) enables
        ``private-encrypted-`` channels. ``fallback`` answers every other
        path, so the endpoint can wrap the rest of a WSGI app.

        Raises:
            ConfigError: an allowed origin is malformed.
            ValueError: a bad path, body limit or master key.
        """
        if encryption_master_key is not None and len(encryption_master_key) != 32:
            raise ValueError("encryption_master_key must be 32 bytes")
        if not (channel_path.startswith("/") and user_path.startswith("/")) or channel_path == user_path:
            raise ValueError("channel_path and user_path must be two different paths starting with '/'")
        if max_body_bytes < 64:
            raise ValueError("max_body_bytes must be at least 64")
        self.app = app
        self.authorize = authorize
        self.authenticate_user = authenticate_user
        self.allowed_origins = cors.parse_origins(allowed_origins)
        self.encryption_master_key = encryption_master_key
        self.channel_path = channel_path
        self.user_path = user_path
        self.max_body_bytes = max_body_bytes
        self.fallback = fallback

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request (the WSGI entry point)."""
        path = environ.get("PATH_INFO") or "/"
        if path not in (self.channel_path, self.user_path):
            if self.fallback is not None:
                return self.fallback(environ, start_response)
            return _reply(start_response, 404, {"error": "not found"}, [])
        origin = environ.get("HTTP_ORIGIN")
        try:
            status, body, headers = self._answer(environ, path, origin)
        except HttpError as exc:
            if exc.status >= 500:
                # The app's callback answered something unusable: its bug, told
                # to its log (the message may hold user data, so not to the client).
                log.error("auth endpoint %s: %s", path, exc.message)
                status, body = exc.status, {"error": "the auth endpoint failed; its log says why"}
            else:
                log.debug("auth endpoint %s refused with %d: %s", path, exc.status, exc.message)
                status, body = exc.status, {"error": exc.message}
            headers = list(exc.headers)
            if environ.get("REQUEST_METHOD") != "OPTIONS":
                headers += cors.cors_headers(origin, self.allowed_origins)
        return _reply(start_response, status, body, headers)

    def _answer(
        self, environ: Environ, path: str, origin: str | None
    ) -> tuple[int, dict[str, str] | None, list[tuple[str, str]]]:
        method = environ.get("REQUEST_METHOD")
        if method == "OPTIONS":
            if "HTTP_ACCESS_CONTROL_REQUEST_METHOD" not in environ:  # a plain OPTIONS, no preflight
                return 204, None, [("Allow", "POST, OPTIONS")]
            headers = cors.preflight_headers(origin, environ["HTTP_ACCESS_CONTROL_REQUEST_METHOD"],
                                             environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"),
                                             self.allowed_origins)
            return 204, None, headers
        if method != "POST":
            raise HttpError(405, "the auth endpoint answers POST only", headers=(("Allow", "POST, OPTIONS"),))
        is_channel = path == self.channel_path
        if not is_channel and self.authenticate_user is None:
            raise HttpError(404, "user sign-in is not enabled on this endpoint")
        request = auth_request.parse_auth_request(
            self._read_body(environ), environ.get("CONTENT_TYPE"), channel=is_channel,
            max_channel_name_length=self.app.max_channel_name_length,
        )
        environ[ENVIRON_KEY] = request
        answer = self._channel(environ, request) if is_channel else self._user(environ, request)
        return 200, answer, cors.cors_headers(origin, self.allowed_origins)

    def _read_body(self, environ: Environ) -> bytes:
        length_text = environ.get("CONTENT_LENGTH") or ""
        if not length_text:
            raise HttpError(411, "send a Content-Length")
        if not (length_text.isascii() and length_text.isdigit()):
            raise HttpError(400, "Content-Length must be a number")
        length = int(length_text)
        if length > self.max_body_bytes:
            raise HttpError(413, f"the body is over {self.max_body_bytes} bytes")
        body = environ["wsgi.input"].read(length) if length else b""
        if len(body) != length:
            raise HttpError(400, "the body is shorter than its Content-Length")
        return bytes(body)

    def _channel(self, environ: Environ, request: auth_request.AuthRequest) -> dict[str, str]:
        channel = request.channel_name
        assert channel is not None  # parse_auth_request(channel=True) guarantees it
        decision = self.authorize(environ, request.socket_id, channel)
        if decision is None or decision is False:
            raise HttpError(403, f"not allowed to join {channel}")
        member = decision if isinstance(decision, Mapping) else None
        try:
            return auth_request.channel_answer(
                self.app.key, self.app.secret, request.socket_id, channel, member,
                encryption_master_key=self.encryption_master_key,
                max_user_info_bytes=self.app.max_user_info_bytes,
            )
        except ValueError as exc:
            raise HttpError(500, f"authorize({channel!r}) returned {decision!r}: {exc}") from None

    def _user(self, environ: Environ, request: auth_request.AuthRequest) -> dict[str, str]:
        assert self.authenticate_user is not None  # checked before the body was read
        user = self.authenticate_user(environ, request.socket_id)
        if user is None:
            raise HttpError(403, "not signed in")
        try:
            return auth_request.user_answer(self.app.key, self.app.secret, request.socket_id, user)
        except ValueError as exc:
            raise HttpError(500, f"authenticate_user returned {user!r}: {exc}") from None


def _reply(
    start_response: StartResponse, status: int, body: dict[str, str] | None, headers: list[tuple[str, str]]
) -> list[bytes]:
    data = b"" if body is None else json.dumps(body).encode("ascii")
    all_headers = [("Cache-Control", "no-store")]  # signatures are for this socket only
    if body is not None:
        all_headers.append(("Content-Type", "application/json"))
    all_headers.append(("Content-Length", str(len(data))))
    start_response(f"{status} {_REASONS.get(status, 'Error')}", all_headers + headers)
    return [data]

"""The chat's web app: one WSGI callable that serves the page and the chat's JSON endpoints.

Routes (JSON in, JSON out, ``{"error": reason}`` with a 4xx when refused)::

    GET  /                      the page (static/index.html; it holds no user text)
    GET  /static/chat.js|.css   the page's own script and style
    GET  /vendor/pusher.min.js  pusher-js, from node_modules (npm ci --prefix examples/chat)
    GET  /session               {"user": {id, name} | null, "pusher": {...}, "rooms": [...]}
    POST /session               {"name": "Ann"}: sets the signed name cookie
    POST /logout                forgets the cookie (to pick another name)
    POST /pusher/auth           pusher-js's channel authorization (presence rooms only)
    POST /pusher/user-auth      pusher-js's user sign-in
    GET  /messages?room=lobby   the room's recent messages (kept by this app, see History)
    POST /messages              {"room": "lobby", "text": "hi"}: checked, kept, broadcast

A message is sent to the room's presence channel with ``node.broadcast``,
in-process: no HTTP hop between the web app and the node.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from actors import ActorcastError, App
from transport import auth

from .checks import Refused, User, check_name, check_room, check_text, new_user_id, read_user, sign_user

__all__ = ["COOKIE", "ChatApp", "History", "channel_of"]

COOKIE = "chat_user"
COOKIE_MAX_AGE = 30 * 24 * 3600
MAX_BODY = 16 * 1024  # the biggest valid request is a 500-character message: plenty

HERE = Path(__file__).resolve().parent
STATIC = {  # the only files served: nothing is looked up from the URL
    "/": (HERE / "static" / "index.html", "text/html; charset=utf-8"),
    "/static/chat.js": (HERE / "static" / "chat.js", "text/javascript; charset=utf-8"),
    "/static/chat.css": (HERE / "static" / "chat.css", "text/css; charset=utf-8"),
    "/vendor/pusher.min.js": (HERE / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js",
                              "text/javascript; charset=utf-8"),
}
# The page runs only its own scripts; even if some text were ever rendered as
# HTML by mistake, an injected <script> or onerror= would not run.
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
]
_SOCKET_ID = re.compile(r"\A\d{1,20}\.\d{1,20}\Z")

Handler = Callable[[dict, "User | None"], tuple[str, Any]]


def channel_of(room: str) -> str:
    """The presence channel a room lives on."""
    return f"presence-room-{room}"


class History:
    """The last ``limit`` messages of each room, in memory (one web app process)."""

    def __init__(self, rooms: Iterable[str], limit: int = 50) -> None:
        self._rooms = {room: deque[dict[str, Any]](maxlen=limit) for room in rooms}

    def add(self, message: dict[str, Any]) -> None:
        self._rooms[message["room"]].append(message)

    def recent(self, room: str) -> list[dict[str, Any]]:
        return list(self._rooms[room])


class ChatApp:
    """The WSGI app. ``node`` is anything with ``broadcast(app_id, channel, event, data)``: an actors.Node.

    ``cookie_secret`` signs the name cookie (every web process behind one
    address needs the same one); ``ws_host`` / ``ws_port`` tell pusher-js
    where the node is (host: the page's own when None).
    """

    def __init__(self, node: Any, app: App, rooms: tuple[str, ...], cookie_secret: bytes,
                 ws_port: int, ws_host: str | None = None, history: History | None = None) -> None:
        self.node, self.app, self.rooms = node, app, rooms
        self.secret = cookie_secret
        self.ws_host, self.ws_port = ws_host, ws_port
        self.history = history or History(rooms)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/session"): self.get_session,
            ("POST", "/session"): self.post_session,
            ("POST", "/logout"): self.logout,
            ("POST", "/pusher/auth"): self.channel_auth,
            ("POST", "/pusher/user-auth"): self.user_auth,
            ("GET", "/messages"): self.get_messages,
            ("POST", "/messages"): self.post_message,
        }

    # --- WSGI ------------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if path in STATIC:
            if method not in ("GET", "HEAD"):
                return _json(start_response, "405 Method Not Allowed", {"error": "GET only"}, [("Allow", "GET")])
            return self.static(path, start_response)
        handler = self.routes.get((method, path))
        if handler is None:
            known = [m for (m, p) in self.routes if p == path]
            if known:
                return _json(start_response, "405 Method Not Allowed", {"error": f"use {' or '.join(known)}"},
                             [("Allow", ", ".join(known))])
            return _json(start_response, "404 Not Found", {"error": "no such page"})
        user = read_user(self.secret, _cookie(environ, COOKIE))
        try:
            status, body = handler(environ, user)
        except Refused as exc:
            status, body = "400 Bad Request", {"error": str(exc)}
        except _HttpError as exc:
            status, body = exc.status, {"error": exc.reason}
        headers = environ.pop("chat.set_cookie", [])
        return _json(start_response, status, body, headers)

    def static(self, path: str, start_response: Callable) -> list[bytes]:
        file, content_type = STATIC[path]
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            reason = "pusher-js is not installed: run npm ci --prefix examples/chat" if "vendor" in path else "missing"
            return _json(start_response, "500 Internal Server Error", {"error": reason})
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(data))),
                                  ("Cache-Control", "no-cache"), *SECURITY_HEADERS])
        return [data]

    # --- who you are -------------------------------------------------------------

    def get_session(self, environ: dict, user: User | None) -> tuple[str, Any]:
        pusher = {"key": self.app.key, "wsHost": self.ws_host, "wsPort": self.ws_port}
        return "200 OK", {"user": _public(user), "pusher": pusher, "rooms": list(self.rooms)}

    def post_session(self, environ: dict, user: User | None) -> tuple[str, Any]:
        name = check_name(_json_body(environ).get("name"))
        # Keep the id when only the name changes: the same person, renamed.
        chosen = User(user.id if user else new_user_id(), name)
        cookie = f"{COOKIE}={sign_user(self.secret, chosen)}; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax"
        environ["chat.set_cookie"] = [("Set-Cookie", cookie)]
        return "200 OK", {"user": _public(chosen)}

    def logout(self, environ: dict, user: User | None) -> tuple[str, Any]:
        environ["chat.set_cookie"] = [("Set-Cookie", f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")]
        return "200 OK", {"user": None}

    # --- pusher-js's auth endpoints ---------------------------------------------

    def channel_auth(self, environ: dict, user: User | None) -> tuple[str, Any]:
        form = _form_body(environ)
        socket_id, channel = _socket_id(form), form.get("channel_name", "")
        user = _signed_in(user)
        room = channel.removeprefix("presence-room-")
        if channel != channel_of(room) or room not in self.rooms:
            raise _HttpError("403 Forbidden", f"{channel[:100]!r} is not a room of this chat")
        channel_data = json.dumps({"user_id": user.id, "user_info": {"name": user.name}})
        signature = auth.make_channel_auth(self.app.key, self.app.secret, socket_id, channel, channel_data)
        return "200 OK", {"auth": signature, "channel_data": channel_data}

    def user_auth(self, environ: dict, user: User | None) -> tuple[str, Any]:
        socket_id = _socket_id(_form_body(environ))
        user = _signed_in(user)
        user_data = json.dumps({"id": user.id, "user_info": {"name": user.name}})
        signature = auth.make_user_auth(self.app.key, self.app.secret, socket_id, user_data)
        return "200 OK", {"auth": signature, "user_data": user_data}

    # --- messages ------------------------------------------------------------------

    def get_messages(self, environ: dict, user: User | None) -> tuple[str, Any]:
        _signed_in(user)
        query = parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=10)
        room = check_room((query.get("room") or [""])[0], self.rooms)
        return "200 OK", {"messages": self.history.recent(room)}

    def post_message(self, environ: dict, user: User | None) -> tuple[str, Any]:
        body = _json_body(environ)
        user = _signed_in(user)
        room = check_room(body.get("room"), self.rooms)
        message = {
            "id": secrets.token_hex(8),
            "room": room,
            "author": user.name,
            "author_id": user.id,
            "text": check_text(body.get("text")),
            "time": int(time.time() * 1000),  # ms since the epoch: the page shows it in local time
        }
        try:
            self.node.broadcast(self.app.id, channel_of(room), "message", message)
        except ActorcastError as exc:  # the node is stopping
            raise _HttpError("503 Service Unavailable", str(exc)) from None
        self.history.add(message)
        return "200 OK", {"message": message}


class _HttpError(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _public(user: User | None) -> dict[str, str] | None:
    return None if user is None else {"id": user.id, "name": user.name}


def _signed_in(user: User | None) -> User:
    if user is None:
        raise _HttpError("401 Unauthorized", "choose a name first")
    return user


def _socket_id(form: dict[str, str]) -> str:
    socket_id = form.get("socket_id", "")
    if not _SOCKET_ID.match(socket_id):
        raise Refused("socket_id is missing or malformed")
    return socket_id


def _read_body(environ: dict) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Refused("invalid Content-Length") from None
    if length > MAX_BODY:
        raise _HttpError("413 Payload Too Large", f"the body is over {MAX_BODY} bytes")
    try:
        return environ["wsgi.input"].read(length) if length > 0 else b""
    except OSError:  # the server's socket timeout: a body that never came
        raise _HttpError("408 Request Timeout", "the body did not arrive in time") from None


def _json_body(environ: dict) -> dict[str, Any]:
    # Only JSON: a cross-site <form> cannot send it without the browser asking first (CORS).
    if environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower() != "application/json":
        raise _HttpError("415 Unsupported Media Type", "send JSON (Content-Type: application/json)")
    try:
        body = json.loads(_read_body(environ).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Refused("the body must be a JSON object")
    return body


def _form_body(environ: dict) -> dict[str, str]:
    try:
        fields = parse_qs(_read_body(environ).decode("ascii"), max_num_fields=10, errors="strict")
    except (UnicodeDecodeError, ValueError):  # parse_qs raises ValueError past max_num_fields
        raise Refused("the body is not a valid form") from None
    return {name: values[0] for name, values in fields.items()}


def _cookie(environ: dict, name: str) -> str | None:
    # By hand: http.cookies gives up on the whole header at one odd cookie.
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def _json(start_response: Callable, status: str, body: Any, headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = json.dumps(body).encode("utf-8")
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), *(headers or [])])
    return [data]

"""A minimal Pusher auth endpoint, as a WSGI app you can mount in your web app.

pusher-js asks your server to sign private/presence subscriptions and user
sign-in. Mount this app (or copy its two handlers) and point pusher-js at it::

    new Pusher("app-key", {
        wsHost: "127.0.0.1", wsPort: 6001, forceTLS: false, enabledTransports: ["ws"],
        channelAuthorization: {endpoint: "/pusher/auth"},
        userAuthentication: {endpoint: "/pusher/user-auth"},
    });

Who the user is, and whether they may join a channel, is your app's
decision: pass ``identify(environ) -> dict | None`` returning
``{"id": "42", "user_info": {...}}`` for the logged-in user (None: refuse
with 403), and optionally ``may_join(user, channel) -> bool``.

Run it standalone for a demo (every visitor is a random guest)::

    python -m examples.pusher_auth --port 8080
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from typing import Any, Callable
from urllib.parse import parse_qs

from transport import auth, names
from transport.errors import ProtocolError

__all__ = ["make_auth_app"]

User = dict[str, Any]

_SOCKET_ID = re.compile(r"\A\d+\.\d+\Z")


def _guest(environ: dict) -> User:
    return {"id": f"guest-{secrets.token_hex(4)}", "user_info": {"name": "Guest"}}


def make_auth_app(
    key: str = "app-key",
    secret: str = "app-secret",
    identify: Callable[[dict], User | None] = _guest,
    may_join: Callable[[User, str], bool] = lambda user, channel: True,
    encryption_master_key: bytes | None = None,
) -> Callable[[dict, Callable], list[bytes]]:
    """A WSGI app answering ``POST /pusher/auth`` and ``POST /pusher/user-auth``.

    ``encryption_master_key`` (32 bytes) enables ``private-encrypted-``
    channels: the answer then carries the channel's ``shared_secret``.
    """

    def reply(start_response: Callable, status: str, body: Any) -> list[bytes]:
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return reply(start_response, "405 Method Not Allowed", {"error": "POST only"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return reply(start_response, "400 Bad Request", {"error": "invalid Content-Length"})
        body = environ["wsgi.input"].read(max(0, min(length, 65536)))
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        socket_id = form.get("socket_id", "")
        if not _SOCKET_ID.match(socket_id):
            return reply(start_response, "400 Bad Request", {"error": "socket_id missing or malformed"})
        user = identify(environ)
        if user is None:
            return reply(start_response, "403 Forbidden", {"error": "not logged in"})
        path = environ.get("PATH_INFO", "")
        if path.endswith("/user-auth"):
            user_data = json.dumps(user, separators=(",", ":"))
            return reply(
                start_response,
                "200 OK",
                {"auth": auth.make_user_auth(key, secret, socket_id, user_data), "user_data": user_data},
            )
        channel = form.get("channel_name", "")
        try:
            names.validate_channel_name(channel)
        except ProtocolError as exc:
            return reply(start_response, "400 Bad Request", {"error": exc.message})
        if not may_join(user, channel):
            return reply(start_response, "403 Forbidden", {"error": f"may not join {channel}"})
        if names.channel_kind(channel) is names.ChannelKind.PRESENCE:
            channel_data = json.dumps({"user_id": user["id"], "user_info": user.get("user_info", {})})
            signed = auth.make_channel_auth(key, secret, socket_id, channel, channel_data)
            return reply(start_response, "200 OK", {"auth": signed, "channel_data": channel_data})
        answer = {"auth": auth.make_channel_auth(key, secret, socket_id, channel)}
        if names.channel_kind(channel) is names.ChannelKind.PRIVATE_ENCRYPTED:
            if encryption_master_key is None:
                return reply(start_response, "403 Forbidden", {"error": "encrypted channels are not enabled"})
            # pusher-js decrypts with sha256(channel name + master key), base64.
            digest = hashlib.sha256(channel.encode() + encryption_master_key).digest()
            answer["shared_secret"] = base64.b64encode(digest).decode()
        return reply(start_response, "200 OK", answer)

    return app


if __name__ == "__main__":
    import argparse

    from gevent.pywsgi import WSGIServer

    parser = argparse.ArgumentParser(description="A demo Pusher auth endpoint (every visitor is a guest)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--key", default="app-key")
    parser.add_argument("--secret", default="app-secret")
    args = parser.parse_args()
    print(f"auth endpoint on http://127.0.0.1:{args.port}/pusher/auth and /pusher/user-auth")
    WSGIServer(("0.0.0.0", args.port), make_auth_app(args.key, args.secret)).serve_forever()

"""An auth endpoint for pusher-js, built on ``actors.auth_endpoint.AuthEndpoint``.

Your app decides who the user is (``identify(environ)``, e.g. from its
session cookie) and whether they may join a channel (``may_join``);
``AuthEndpoint`` checks the request, signs the answer and handles CORS.
Point pusher-js at it::

    new Pusher("app-key", {
        cluster: "mt1", wsHost: "127.0.0.1", wsPort: 6001, forceTLS: false,
        enabledTransports: ["ws", "wss"],
        channelAuthorization: {endpoint: "http://127.0.0.1:8080/pusher/auth"},
        userAuthentication: {endpoint: "http://127.0.0.1:8080/pusher/user-auth"},
    });

Run it standalone for a demo (every visitor is a random guest; the page on
``--allow-origin`` may call it across origins)::

    python -m examples.pusher_auth --port 8080 --allow-origin http://localhost:3000
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from actors import App
from actors.auth_endpoint import AuthEndpoint

__all__ = ["guest", "make_auth_app"]

User = dict[str, Any]


def guest(environ: dict[str, Any]) -> User:
    """A new random guest for every request: a demo's stand-in for your login."""
    return {"id": f"guest-{secrets.token_hex(4)}", "user_info": {"name": "Guest"}}


def make_auth_app(
    key: str = "app-key",
    secret: str = "app-secret",
    identify: Callable[[dict[str, Any]], User | None] = guest,
    may_join: Callable[[User, str], bool] = lambda user, channel: True,
    encryption_master_key: bytes | None = None,
    allowed_origins: Sequence[str] = (),
) -> AuthEndpoint:
    """The endpoint for one user model: ``identify`` -> ``{"id", "user_info"}`` or None (403)."""

    def authorize(environ: dict[str, Any], socket_id: str, channel: str) -> dict[str, Any] | None:
        user = identify(environ)
        if user is None or not may_join(user, channel):
            return None
        # The member, used as channel_data on presence channels; any other
        # channel only needs the grant.
        return {"user_id": user["id"], "user_info": user.get("user_info", {})}

    def authenticate_user(environ: dict[str, Any], socket_id: str) -> User | None:
        return identify(environ)

    return AuthEndpoint(App(key=key, secret=secret), authorize, authenticate_user, allowed_origins,
                        encryption_master_key=encryption_master_key)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the demo endpoint with gevent.pywsgi until interrupted."""
    import argparse
    import signal

    import gevent
    import gevent.event
    from gevent.pywsgi import WSGIServer

    parser = argparse.ArgumentParser(description="A demo Pusher auth endpoint (every visitor is a guest)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--key", default="app-key")
    parser.add_argument("--secret", default="app-secret")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="a page origin allowed to call the endpoint (CORS), e.g. http://localhost:3000")
    args = parser.parse_args(argv)
    endpoint = make_auth_app(args.key, args.secret, allowed_origins=args.allow_origin)
    server = WSGIServer((args.host, args.port), endpoint, log=None)
    server.start()
    print(f"auth endpoint on http://{args.host}:{server.server_port}/pusher/auth and /pusher/user-auth",
          flush=True)
    # Ctrl-C or SIGTERM ends it quietly: the handlers run on the hub, between requests.
    stop = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    stop.wait()
    server.stop(timeout=1)


if __name__ == "__main__":
    main()

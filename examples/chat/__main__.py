"""Run the chat: an actorcast node and the chat's web app in one process.

::

    npm ci --prefix examples/chat        # pusher-js for the page, once
    python -m examples.chat              # then open http://127.0.0.1:8000/

The node runs on its own gevent hub in a background thread (that is how
``actors.Node`` embeds); the web app is gevent's WSGI server on this thread's
hub. The two meet only in ``node.broadcast``, which is safe from any thread.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from actors import App, Node

from .webapp import STATIC, ChatApp, History

__all__ = ["main"]

SOCKET_TIMEOUT = 30.0  # no browser may hold a web app connection silent for longer
MAX_CONNECTIONS = 1000


class _BoundedHandler(WSGIHandler):
    """pywsgi waits for a request forever by default: bound every read and write."""

    def handle(self) -> None:
        self.socket.settimeout(SOCKET_TIMEOUT)
        super().handle()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.chat", description="A web chat on actorcast.")
    parser.add_argument("--host", default="127.0.0.1", help="address of the page and the node (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="the page's port (default 8000)")
    parser.add_argument("--node-port", type=int, default=6001, help="the node's WebSocket port (default 6001)")
    parser.add_argument("--rooms", default="lobby,random,help", help="comma-separated rooms; the first is the default")
    parser.add_argument("--adapter", default=os.environ.get("ACTORCAST_ADAPTER"),
                        help="join other actorcast nodes, e.g. redis://127.0.0.1:6379/0 (env ACTORCAST_ADAPTER)")
    parser.add_argument("--ws-host", default=None, help="where pages connect (default: the page's own host)")
    parser.add_argument("--ws-port", type=int, default=None, help="where pages connect (default: --node-port)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The node logs what needs attention (a lost Redis, say) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rooms = tuple(room.strip() for room in args.rooms.split(",") if room.strip())
    if not rooms or not all(room.isascii() and room.replace("-", "").isalnum() and len(room) <= 30 for room in rooms):
        print("--rooms: give names of letters, digits and '-' (at most 30 each)", file=sys.stderr)
        return 2
    if not STATIC["/vendor/pusher.min.js"][0].exists():
        print("pusher-js is not installed: run  npm ci --prefix examples/chat  first", file=sys.stderr)
        return 1
    # The defaults of `actorcast serve`, so nodes started by it join this one as they are.
    app = App(id=os.environ.get("ACTORCAST_APP_ID", "1"), key=os.environ.get("ACTORCAST_APP_KEY", "app-key"),
              secret=os.environ.get("ACTORCAST_APP_SECRET", "app-secret"))
    # Web processes behind one address must share it; a random one means
    # everybody picks a name again after a restart, which is fine for a demo.
    cookie_secret = os.environ.get("CHAT_COOKIE_SECRET", "").encode() or secrets.token_bytes(32)

    node = Node(apps=[app], host=args.host, port=args.node_port, metrics_port=None, adapter=args.adapter)
    node.start()
    chat = ChatApp(node, app, rooms, cookie_secret, ws_port=args.ws_port or node.port, ws_host=args.ws_host,
                   history=History(rooms))
    web = WSGIServer((args.host, args.port), chat, handler_class=_BoundedHandler, spawn=Pool(MAX_CONNECTIONS),
                     log=None)
    stopped = gevent.event.Event()
    try:
        web.start()
        gevent.signal_handler(signal.SIGTERM, stopped.set)
        gevent.signal_handler(signal.SIGINT, stopped.set)
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        print(f"chat: open http://{shown}:{web.server_port}/  (node: ws://{shown}:{node.port}, "
              f"rooms: {', '.join(rooms)}; Ctrl-C stops)", flush=True)
        stopped.wait()
    finally:
        web.close()  # no new requests; those being answered finish meanwhile
        node.stop()  # delivers what it accepted, then tells every page to reconnect (4200)
        web.stop(timeout=1)  # pages keep idle keep-alive connections open: do not wait on them
    return 0


if __name__ == "__main__":
    sys.exit(main())

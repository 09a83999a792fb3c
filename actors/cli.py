"""``actorcast serve``: run a node from the command line.

With no flags it serves the default app (id ``1``, key ``app-key``, secret
``app-secret``) on 0.0.0.0:6001 with metrics on 9601. ``ACTORCAST_APP_ID``,
``ACTORCAST_APP_KEY``, ``ACTORCAST_APP_SECRET`` and ``ACTORCAST_PORT`` override
the defaults; ``--config FILE`` lists apps as JSON (see transport.config).
``--workers N`` (env ``ACTORCAST_WORKERS``, ``auto`` = one per core) runs N
worker processes on the one port under a supervising parent
(``actors.workers``); the default, 1, is a single process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from transport.config import App, apps_from_env, load_apps
from transport.errors import ConfigError

from .hub import HubThread
from .node import Node
from .workers import Supervisor, WorkerStartError, worker_count

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``actorcast`` argument parser."""
    parser = argparse.ArgumentParser(prog="actorcast", description="A Pusher Channels server on Pykka and gevent.")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run a node (the default command)")
    for p in (parser, serve):
        p.add_argument("--host", default=None, help="address to listen on (default 0.0.0.0)")
        p.add_argument("--port", type=int, default=None, help="WebSocket + HTTP port (default 6001, env ACTORCAST_PORT)")
        p.add_argument("--config", default=None, help="JSON file listing apps: id, key, secret and limits")
        p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default 9601; -1 turns it off)")
        p.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
        p.add_argument("--adapter", default=None,
                       help="join other nodes: redis://[:password@]host:port/db (env ACTORCAST_ADAPTER; default: none)")
        p.add_argument("--workers", default=None,
                       help="worker processes sharing the port (default 1; 'auto': one per core; env ACTORCAST_WORKERS)")
        p.add_argument("--tls-cert", default=None, metavar="FILE",
                       help="serve https:// and wss:// with this PEM certificate chain (default: plain)")
        p.add_argument("--tls-key", default=None, metavar="FILE", help="its PEM private key (default: in --tls-cert)")
        p.add_argument("--metrics-tls", action="store_true", default=None, help="serve the metrics port over TLS too")
    return parser


def node_from_args(args: argparse.Namespace, env: dict[str, str], **overrides: Any) -> Node:
    """Build (not start) the node the flags and environment describe (``overrides``: more Node arguments)."""
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                apps = load_apps(f.read())
        except OSError as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from exc
    else:
        apps = [apps_from_env(env, App())]
    port = args.port if args.port is not None else int(env.get("ACTORCAST_PORT") or 6001)
    metrics_port = 9601 if args.metrics_port is None else args.metrics_port
    settings: dict[str, Any] = {
        "apps": apps,
        "host": args.host or "0.0.0.0",
        "port": port,
        "metrics_port": None if metrics_port < 0 else metrics_port,
        "adapter": args.adapter or env.get("ACTORCAST_ADAPTER") or None,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "metrics_tls": bool(args.metrics_tls),
    }
    return Node(**{**settings, **overrides})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``actorcast`` and ``python -m actors``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The node runs on its own hub thread; this thread only waits for a signal.
    # Handlers go in first, so a signal during start-up still stops cleanly.
    stop = HubThread.os_event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    env = dict(os.environ)
    supervisor = None
    try:
        workers = worker_count(args.workers if args.workers is not None else env.get("ACTORCAST_WORKERS"))
        node = node_from_args(args, env)
        if workers > 1:  # the node only carries the settings; each worker builds its own
            supervisor = _supervisor(node, workers, sys.argv[1:] if argv is None else list(argv), env)
            supervisor.start()
        else:
            node.start()
    except (ConfigError, OSError, ValueError, WorkerStartError) as exc:
        print(f"actorcast: {exc}", file=sys.stderr)
        return 2
    if supervisor is not None:
        return supervisor.run(stop)
    while not stop.wait(1.0):
        pass
    logging.getLogger("actorcast").info("shutting down")
    node.stop()
    return 0


def _supervisor(node: Node, workers: int, argv: list[str], env: dict[str, str]) -> Supervisor:
    """The parent of ``workers`` processes serving what ``node`` describes."""
    return Supervisor(argv, workers, host=node.host, port=node.port, metrics_host=node.metrics_host,
                      metrics_port=node.metrics_port, limits=node.limits, env=env,
                      tls_cert=node.tls_cert, tls_key=node.tls_key, metrics_tls=node.metrics_tls)


if __name__ == "__main__":
    sys.exit(main())

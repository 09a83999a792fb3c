"""``actorcast``: run a node from the command line.

::

    actorcast [serve|start] [FLAGS]          run a node (the default command)
    actorcast config check [FILE] [FLAGS]    check the settings, print them resolved (secrets masked)
    actorcast --version

Flags go before or after the command alike. Every setting also comes from
the config file or the environment (``transport.settings``: flags > config
file > ``ACTORCAST_*`` > soketi's ``SOKETI_*`` > defaults). A mistake is
never a traceback: each is one line ``actorcast: ...`` on stderr, naming the
flag, variable or file and key, and the exit code is 2.

``--workers N`` runs N worker processes on the one port under a supervising
parent (``actors.workers``); each worker re-reads the same flags, config file
and environment (``actors._worker``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from transport.errors import ConfigError
from transport.settings import NODE_RULES, NodeSettings, SettingsError, flag_name, resolve

from . import __version__
from .logs import configure_logging
from .node import Node
from .stop_signal import StopSignal
from .workers import Supervisor, WorkerStartError

__all__ = ["UsageError", "build_parser", "main", "problem_lines", "read_settings"]

log = logging.getLogger("actorcast")

_HELP = {
    "host": "address to listen on (default 0.0.0.0)",
    "port": "WebSocket + HTTP API port (default 6001; 0: any free port)",
    "metrics_host": "address of the metrics port (default: --host)",
    "metrics_port": "Prometheus /metrics port (default 9601; -1: off)",
    "workers": "worker processes sharing the port: N or 'auto' (one per core; default 1)",
    "adapter": "join other nodes: redis://[:password@]host:port/db (default: none)",
    "log_level": "debug, info (default), warning, error, critical",
    "log_format": "text (default) or json (one object per line)",
    "tls_cert": "TLS certificate chain (PEM): serve wss:// and https:// (with --tls-key)",
    "tls_key": "TLS private key (PEM)",
    "metrics_tls": "serve the metrics port over TLS too",
    "header_timeout": "seconds for a request's head (default 10)",
    "body_timeout": "seconds for a request's body (default 10)",
    "idle_timeout": "seconds a kept-alive HTTP connection may idle (default 30)",
    "send_timeout": "seconds to write one HTTP answer (default 10)",
    "max_head_bytes": "largest request head (default 16384)",
    "max_headers": "most header fields in a request (default 100)",
    "max_body_bytes": "largest HTTP API body (default 1048576)",
    "shutdown_grace": "seconds SIGTERM may take to deliver what was accepted (default 5)",
    "max_log_lines_per_client": "refusal lines per client address in each log window (default 5)",
    "log_window": "seconds of the refusal lines' window (default 10)",
    "heartbeat_interval": "seconds between cluster heartbeats (default 2)",
    "request_timeout": "seconds to wait for other nodes' answers (default 0.5)",
}
assert set(_HELP) == set(NODE_RULES), "every setting has its flag"


class UsageError(ConfigError):
    """The command line itself is wrong (an unknown flag, a missing value)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is an exception (reported as one line), not a usage dump and exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see actorcast --help)")


def build_parser() -> argparse.ArgumentParser:
    """The ``actorcast`` argument parser (every flag before or after the command)."""
    flags = _Parser(add_help=False, allow_abbrev=False)
    # SUPPRESS: a flag not given leaves no attribute, so a command's parser never
    # overwrites what was given before the command (and settings know what was given).
    for name, text in _HELP.items():
        if name == "metrics_tls":
            flags.add_argument(flag_name(name), action="store_true", default=argparse.SUPPRESS, help=text)
        else:
            flags.add_argument(flag_name(name), default=argparse.SUPPRESS, metavar=_metavar(name), help=text)
    flags.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                       help="JSON config file: node settings and apps (env ACTORCAST_CONFIG)")
    flags.add_argument("--version", action="version", version=f"actorcast {__version__}")
    parser = _Parser(prog="actorcast", parents=[flags], allow_abbrev=False,
                     description="A Pusher Channels server on Pykka and gevent. Every flag is also a config "
                                 "file key and an ACTORCAST_* variable (see the README).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.add_parser("serve", parents=[flags], allow_abbrev=False, help="run a node (the default command)")
    commands.add_parser("start", parents=[flags], allow_abbrev=False, help="the same as serve")
    config = commands.add_parser("config", allow_abbrev=False, help="check the settings: actorcast config check [FILE]")
    actions = config.add_subparsers(dest="action", metavar="check", required=True, parser_class=_Parser)
    check = actions.add_parser("check", parents=[flags], allow_abbrev=False,
                               help="check the settings (file, flags, environment) and print them resolved")
    check.add_argument("file", nargs="?", default=argparse.SUPPRESS, help="the config file to check")
    return parser


def _metavar(name: str) -> str:
    if name.endswith(("_timeout", "_grace", "_interval", "_window")):
        return "SECONDS"
    special = {"workers": "N", "max_headers": "N", "max_log_lines_per_client": "N", "adapter": "URL",
               "tls_cert": "FILE", "tls_key": "FILE"}
    return special.get(name, name.rsplit("_", 1)[-1].upper())


def read_settings(argv: Sequence[str], env: dict[str, str]) -> tuple[str, NodeSettings, list[str]]:
    """``(command, settings, warnings)`` for a command line; UsageError / ConfigError if wrong."""
    given = vars(build_parser().parse_args(list(argv)))
    command = given.pop("command", None) or "serve"
    if command == "config":
        given.pop("action", None)
        if "file" in given:
            given["config"] = given.pop("file")
    settings, warnings = resolve(given, env)
    return command, settings, warnings


def problem_lines(exc: ConfigError) -> list[str]:
    """The lines to print for a settings mistake (one per problem)."""
    return list(exc.problems) if isinstance(exc, SettingsError) else str(exc).splitlines() or [repr(exc)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``actorcast`` and ``python -m actors``."""
    args = sys.argv[1:] if argv is None else list(argv)
    env = dict(os.environ)
    try:
        command, settings, warnings = read_settings(args, env)
    except ConfigError as exc:
        for line in problem_lines(exc):
            print(f"actorcast: {line}", file=sys.stderr)
        return 2
    if command == "config":
        for line in [*warnings, *settings.secret_warnings()]:
            print(f"actorcast: warning: {line}", file=sys.stderr)
        try:
            print(json.dumps(settings.to_dict(), indent=2), flush=True)
        except BrokenPipeError:  # `actorcast config check | head`: the reader left, nothing is wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    configure_logging(settings.log_level, settings.log_format)
    for line in warnings:
        log.warning(line)
    return serve(settings, args, env)


def serve(settings: NodeSettings, argv: list[str], env: dict[str, str]) -> int:
    """Run the node (or its supervisor and workers) until SIGTERM/SIGINT; the exit code."""
    # The node runs on its own hub thread; this thread only waits for a signal.
    # Handlers go in first, so a signal during start-up still stops cleanly.
    stop = StopSignal().install()  # not a threading.Event: see actors/stop_signal.py
    supervisor = None
    try:
        if settings.workers > 1:  # each worker builds its own node from the same argv and env
            supervisor = Supervisor(argv, settings.workers, host=settings.host, port=settings.port,
                                    metrics_host=settings.metrics_host or settings.host,
                                    metrics_port=settings.metrics_port, limits=settings.limits, env=env,
                                    tls_cert=settings.tls_cert, tls_key=settings.tls_key,
                                    metrics_tls=settings.metrics_tls)
            supervisor.start()
        else:
            node = Node(**settings.node_kwargs())
            node.start()
    except (ConfigError, OSError, ValueError, WorkerStartError) as exc:
        fail(exc, settings.log_format)
        return 2
    for line in settings.secret_warnings():  # once it serves: a failed start stays one line
        log.warning(line)
    if supervisor is not None:
        return supervisor.run(stop)
    while not stop.wait(1.0):
        pass
    log.info("shutting down")
    node.stop()
    return 0


def fail(exc: BaseException, log_format: str, who: str = "") -> None:
    """Report a failed start as one line: ``actorcast: ...`` (or one JSON record)."""
    message = who + (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
    if log_format == "json":
        log.error(message)
    else:
        print(f"actorcast: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

"""One worker process of ``actorcast serve --workers N`` (started by ``actors.workers``).

It takes the same flags as ``actorcast serve`` and its parent's environment:
``ACTORCAST_WORKER_ID`` (1..N), ``ACTORCAST_BUS_SOCKET`` (the parent's relay),
``ACTORCAST_READY_FD`` (a pipe: one line once the node listens),
``ACTORCAST_WORKER_PEERS`` (how many other workers it must have met before it
listens) and ``ACTORCAST_SUPERVISOR_PID``. It runs one node on the shared port until
SIGTERM/SIGINT, or until its parent is gone (an orphan would keep serving a
port nobody supervises), then drains and exits 0.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from transport.errors import ConfigError
from transport.settings import NodeSettings

from .cli import fail, problem_lines, read_settings
from .logs import configure_logging
from .node import Node
from .stop_signal import StopSignal
from .worker_bus import WorkerBus

__all__ = ["main"]

log = logging.getLogger("actorcast")

ORPHAN_CHECK_SECONDS = 0.5


def cluster_options(settings: NodeSettings, env: dict[str, str]) -> dict[str, Any]:
    """What makes a node a worker: its number, the shared port, the parent's bus, no metrics port of its own.

    A worker of a node that has an adapter of its own (Redis) uses that
    instead of the parent's bus, like any other node.
    """
    # It listens only once it has met the workers its parent runs (ACTORCAST_WORKER_PEERS).
    options: dict[str, Any] = {"metrics_port": None, "reuse_port": True,
                               "expect_peers": int(env.get("ACTORCAST_WORKER_PEERS") or 0)}
    number = env.get("ACTORCAST_WORKER_ID", "")
    if number.isascii() and number.isdigit():  # shown by GET /usage
        options["worker"] = int(number)
    if env.get("ACTORCAST_BUS_SOCKET") and not settings.adapter:
        options["adapter"] = WorkerBus(env["ACTORCAST_BUS_SOCKET"])
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker's node until told to stop."""
    env = dict(os.environ)
    number = env.get("ACTORCAST_WORKER_ID", "?")
    try:
        # The warnings were the parent's to log (once, not once per worker).
        _, settings, _ = read_settings(sys.argv[1:] if argv is None else list(argv), env)
    except ConfigError as exc:
        for line in problem_lines(exc):
            print(f"actorcast: worker {number}: {line}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, worker=number)
    stop = StopSignal().install()  # not a threading.Event: see actors/stop_signal.py
    try:
        node = Node(**{**settings.node_kwargs(), **cluster_options(settings, env)})
        node.start()
    except (ConfigError, OSError, ValueError) as exc:
        fail(exc, settings.log_format, who=f"worker {number}: ")
        return 2
    _tell_parent_ready(env)
    parent = int(env.get("ACTORCAST_SUPERVISOR_PID") or os.getppid())
    while not stop.wait(ORPHAN_CHECK_SECONDS):
        if os.getppid() != parent:
            log.warning("the parent process is gone; stopping")
            break
    node.stop()
    return 0


def _tell_parent_ready(env: dict[str, str]) -> None:
    fd = env.get("ACTORCAST_READY_FD")
    if not fd:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except OSError as exc:  # the parent is gone: the orphan check stops us
        log.warning("could not tell the parent this worker listens: %s", exc)


if __name__ == "__main__":
    sys.exit(main())

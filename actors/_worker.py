"""One worker process of ``actorcast serve --workers N`` (started by ``actors.workers``).

It takes the same flags as ``actorcast serve`` and its parent's environment:
``ACTORCAST_WORKER_ID`` (1..N), ``ACTORCAST_BUS_SOCKET`` (the parent's relay),
``ACTORCAST_READY_FD`` (a pipe: one line once the node listens) and
``ACTORCAST_SUPERVISOR_PID``. It runs one node on the shared port until
SIGTERM/SIGINT, or until its parent is gone (an orphan would keep serving a
port nobody supervises), then drains and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from transport.errors import ConfigError

from .cli import build_parser, node_from_args
from .hub import HubThread
from .worker_bus import WorkerBus

__all__ = ["main"]

log = logging.getLogger("actorcast")

ORPHAN_CHECK_SECONDS = 0.5


def cluster_options(args: Any, env: dict[str, str]) -> dict[str, Any]:
    """What makes a node a worker: its number, the shared port, the parent's bus, no metrics port of its own.

    A worker of a node that has an adapter of its own (Redis) uses that
    instead of the parent's bus, like any other node.
    """
    options: dict[str, Any] = {"metrics_port": None, "reuse_port": True}
    number = env.get("ACTORCAST_WORKER_ID", "")
    if number.isascii() and number.isdigit():  # shown by GET /usage
        options["worker"] = int(number)
    own_adapter = getattr(args, "adapter", None) or env.get("ACTORCAST_ADAPTER")
    if env.get("ACTORCAST_BUS_SOCKET") and not own_adapter:
        options["adapter"] = WorkerBus(env["ACTORCAST_BUS_SOCKET"])
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker's node until told to stop."""
    env = dict(os.environ)
    number = env.get("ACTORCAST_WORKER_ID", "?")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "INFO").upper(),
        format=f"%(asctime)s %(levelname)s worker-{number} %(name)s: %(message)s",
    )
    stop = HubThread.os_event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        node = node_from_args(args, env, **cluster_options(args, env))
        node.start()
    except (ConfigError, OSError, ValueError) as exc:
        print(f"actorcast: worker {number}: {exc}", file=sys.stderr)
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

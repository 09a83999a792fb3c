"""The relay-host process: the parent's side of ``--workers N``, for the benchmark.

``actorcast serve --workers N`` runs one ``Relay`` (actors/worker_relay.py)
on a Unix socket in the parent, on a hub of its own, and its workers'
``WorkerBus`` connect to it. The benchmark starts its worker node hosts
itself (so each is a node host with the measuring tools), and this process
plays the parent's part: the same relay, in a process of its own, so the
relay's CPU is where it is in production (not in a worker).

Usage: ``python -m perf._relay_host PATH``. It says ``started`` {path, pid}
once the relay listens; EOF on stdin (the driver gone or done) stops it.
"""

from __future__ import annotations

import logging
import os
import sys

from perf._proc import die_with_parent, emit

__all__ = ["main"]


def main() -> None:
    """Run the relay on the socket path given, until stdin closes."""
    die_with_parent()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from actors.hub import HubThread
    from actors.worker_relay import Relay

    path = sys.argv[1]
    hub = HubThread(name="perf-relay")
    relay = hub.start(lambda: _started(Relay(path)))
    emit({"ev": "started", "path": path, "pid": os.getpid()})
    try:
        sys.stdin.read()  # no commands: the relay runs until the driver closes our stdin
    finally:
        hub.call(relay.stop, timeout=10)
        hub.stop()


def _started(relay: object) -> object:
    relay.start()  # type: ignore[attr-defined]
    return relay


if __name__ == "__main__":
    main()

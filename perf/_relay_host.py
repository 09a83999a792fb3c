"""The relay-host process: the parent's side of ``--workers N``, for the benchmark.

``actorcast serve --workers N`` runs one ``Relay`` (actors/worker_relay.py)
on a Unix socket in the parent, on a hub of its own, and its workers'
``WorkerBus`` connect to it. The benchmark starts its worker node hosts
itself (so each is a node host with the measuring tools), and this process
plays the parent's part: the same relay, in a process of its own, so the
relay's CPU is where it is in production (not in a worker).

Usage: ``python -m perf._relay_host PATH``. Events: ``started`` {path, pid},
then ``cpu`` {stat_s, sched_s} for each ``cpu`` command; EOF on stdin stops it.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from perf._proc import die_with_parent, emit
from perf._stats import read_proc_cpu


def main() -> None:
    die_with_parent()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from actors.runtime import HubThread
    from actors.worker_relay import Relay

    path = sys.argv[1]
    hub = HubThread(name="perf-relay")
    relay = hub.start(lambda: _started(Relay(path)))
    emit({"ev": "started", "path": path, "pid": os.getpid()})
    try:
        for line in sys.stdin:
            if line.strip() and json.loads(line).get("op") == "cpu":
                emit({"ev": "cpu", **read_proc_cpu(os.getpid())})
    finally:
        hub.call(relay.stop, timeout=10)
        hub.stop()


def _started(relay: object) -> object:
    relay.start()  # type: ignore[attr-defined]
    return relay


if __name__ == "__main__":
    main()

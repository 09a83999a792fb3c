"""The bus kinds the contract suite (test_bus_contract.py) runs against: memory, redis, workers.

``BUS_FACTORIES`` maps a kind's name to ``factory(k)``, which returns k
unstarted buses of that kind joined to each other, and a cleanup to call once
they are stopped. The contract module parametrizes its cases over this table
when pytest collects them (``pytest_generate_tests``), so each kind runs the
contract exactly once, and a kind added here is covered with no other change.
A kind whose server cannot run here skips its cases, saying why.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.bus import MemoryBus
from actors.hub import HubThread
from actors.worker_bus import Relay, WorkerBus

__all__ = ["BUS_FACTORIES", "TIMEOUT", "RelayThread"]

TIMEOUT = 5.0

Factory = Callable[[int], tuple[list[Any], Callable[[], None]]]


class RelayThread:
    """The workers' parent side: a Relay on a hub thread of its own, on a socket in a fresh temp dir."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="actorcast-bus-")
        self.path = str(Path(self.dir) / "bus.sock")
        self.hub = HubThread(name="relay")
        self.relay: Relay | None = None
        self.hub.start(lambda: None)
        self.start()

    def start(self, **kwargs: Any) -> None:
        self.relay = Relay(self.path, **kwargs)
        self.hub.call(self.relay.start, timeout=TIMEOUT)

    def stop_relay(self) -> None:
        self.hub.call(self.relay.stop, timeout=TIMEOUT)

    def peers(self) -> int:
        return self.hub.call(lambda: len(self.relay.peers), timeout=TIMEOUT)

    def close(self) -> None:
        self.stop_relay()
        self.hub.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _memory(k: int) -> tuple[list[Any], Callable[[], None]]:
    name = f"contract-{uuid.uuid4().hex}"
    return [MemoryBus.shared(name) for _ in range(k)], lambda: None


def _redis(k: int) -> tuple[list[Any], Callable[[], None]]:
    from actors.redis_bus import RedisBus
    from tests.cluster.conftest import shared_redis_server  # skips the case when Redis cannot run

    url = shared_redis_server().url()
    prefix = f"contract-{uuid.uuid4().hex[:12]}"
    return [RedisBus(url, prefix=prefix) for _ in range(k)], lambda: None


def _workers(k: int) -> tuple[list[Any], Callable[[], None]]:
    relay = RelayThread()
    return [WorkerBus(relay.path) for _ in range(k)], relay.close


BUS_FACTORIES: dict[str, Factory] = {"memory": _memory, "redis": _redis, "workers": _workers}

"""Buses: how a node's cluster messages reach the other nodes.

A bus moves opaque messages (``bytes``, encoded by ``transport.cluster``)
between the nodes of one cluster and knows nothing of what they mean. Every
message published reaches every node started on the same bus, *including the
publisher* (as Redis pub/sub does): a node recognises its own messages by
their origin id, and hearing its own heartbeat proves the bus works.

Implementations:

* :class:`NoBus` -- a single node (the default): nothing leaves the process.
* :class:`MemoryBus` -- nodes in one process (tests, embedding): a shared
  in-memory fan-out, delivered to each node on its own hub.
* ``actors.redis_bus.RedisBus`` -- nodes anywhere, over Redis pub/sub.
* ``actors.worker_bus.WorkerBus`` -- the worker processes of one
  ``actorcast serve --workers N``, joined through their parent over Unix
  domain sockets.

The contract (``tests/cluster/test_bus_contract.py`` runs it against each):

* ``start(deliver, call_in_hub)`` is called on the node's hub. ``deliver(data)``
  must then be called for every message on the bus, on that hub (use
  ``call_in_hub(deliver, data)``, which is thread-safe, from any other thread),
  in the order the bus carried them; messages from one publisher arrive in the
  order it published them.
* ``publish(data)`` is called on the hub, never blocks, and returns a
  ``gevent.event.AsyncResult`` that is set (on the hub) once the message is
  handed to the bus (Redis acknowledged the PUBLISH; the parent's socket took
  it), or set with an exception (:class:`BusDown`) when it could not be.
  An HTTP trigger waits for it before answering 200.
* ``connected`` is True while messages can flow: always for ``NoBus``, from
  ``start`` to ``stop`` for ``MemoryBus``; for ``RedisBus`` only while it is
  subscribed (False from a lost connection until it has resubscribed), for
  ``WorkerBus`` only while its link to the relay is up. A bus that loses its
  connection logs that once, keeps trying to reconnect with back-off, and
  calls ``deliver`` again once it is back; nothing raises into the node.
  ``GET /ready`` answers 503 while it is False (``actors.health``).
* ``stop()`` is called on the hub; it disconnects and returns promptly.

Delivery is at most once: what is published while the bus is down is lost,
as with Pusher itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import gevent.event

__all__ = ["Bus", "BusDown", "MemoryBus", "NoBus"]

Deliver = Callable[[bytes], None]
CallInHub = Callable[..., None]


class BusDown(ConnectionError):
    """The bus could not take a message (disconnected, or stopped)."""


class Bus(Protocol):
    """Moves cluster messages between nodes (see the module docstring)."""

    #: True while messages can flow (read on the hub, set by the bus from any thread).
    connected: bool

    def start(self, deliver: Deliver, call_in_hub: CallInHub) -> None:
        """Connect; from now on call ``deliver(data)`` on the hub for every message."""

    def publish(self, data: bytes) -> gevent.event.AsyncResult:
        """Send ``data`` to every node (this one included); the result is set once handed over."""

    def stop(self) -> None:
        """Disconnect."""


class NoBus:
    """A node on its own: there is nobody to tell."""

    connected = True

    def start(self, deliver: Deliver, call_in_hub: CallInHub) -> None:
        """Nothing to connect to."""

    def publish(self, data: bytes) -> gevent.event.AsyncResult:
        done = gevent.event.AsyncResult()
        done.set(True)
        return done

    def stop(self) -> None:
        """Nothing to disconnect from."""


class MemoryBus:
    """Nodes of one process joined in memory: ``MemoryBus.shared(name)`` per node.

    Each node gets its own ``MemoryBus`` object on a common :class:`_Hall`;
    a publish hands the bytes to every started member's hub.
    """

    def __init__(self, hall: _Hall | None = None) -> None:
        self.hall = hall or _Hall()
        self.connected = False
        self._deliver: Deliver | None = None
        self._call_in_hub: CallInHub | None = None

    @classmethod
    def shared(cls, name: str) -> MemoryBus:
        """A bus on the hall called ``name`` (created on first use)."""
        hall = _HALLS.get(name)
        if hall is None:
            hall = _HALLS[name] = _Hall()
        return cls(hall)

    def start(self, deliver: Deliver, call_in_hub: CallInHub) -> None:
        self._deliver, self._call_in_hub = deliver, call_in_hub
        self.connected = True
        self.hall.members.append(self)

    def publish(self, data: bytes) -> gevent.event.AsyncResult:
        done = gevent.event.AsyncResult()
        if not self.connected:
            done.set_exception(BusDown("memory bus stopped"))
            return done
        for member in list(self.hall.members):
            member._receive(data)  # noqa: SLF001 - members of one hall
        done.set(True)
        return done

    def _receive(self, data: bytes) -> None:
        if self.connected and self._call_in_hub is not None and self._deliver is not None:
            self._call_in_hub(self._deliver, data)

    def stop(self) -> None:
        self.connected = False
        if self in self.hall.members:
            self.hall.members.remove(self)


class _Hall:
    """The members of one in-memory bus."""

    def __init__(self) -> None:
        self.members: list[MemoryBus] = []


_HALLS: dict[str, _Hall] = {}


def describe(bus: Bus) -> str:
    """A short name for logs: ``"redis://host:6379/0"``, ``"workers"``, ``"memory"``..."""
    return getattr(bus, "description", type(bus).__name__)

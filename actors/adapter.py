"""The adapter seam: how a node reaches the other nodes of its cluster.

An adapter is a :class:`~actors.bus.Bus` (see ``actors/bus.py`` for the
contract): it carries only traffic to and from the *other* nodes. The node
always delivers locally itself, then hands the same pre-encoded event to the
adapter; what arrives from other nodes is delivered by the node as its own.
:class:`~actors.cluster.Cluster` puts the meaning on top (presence replicas,
heartbeats, cluster-wide queries).

``Node(adapter=...)`` takes a Bus object, a URL, or None:

==========================  ==============================================
``None`` / ``"local"``      one node on its own (:class:`LocalAdapter`)
``"redis://host:port/db"``  nodes anywhere, over Redis pub/sub
``"memory://name"``         nodes in one process (tests, embedding)
==========================  ==============================================
"""

from __future__ import annotations

from transport.errors import ConfigError

from .bus import Bus, MemoryBus, NoBus

__all__ = ["Adapter", "LocalAdapter", "make_adapter"]

#: What an adapter is: a bus between nodes.
Adapter = Bus

#: The adapter of a node on its own: nothing leaves the process.
LocalAdapter = NoBus


def make_adapter(spec: Bus | str | None) -> Bus:
    """A Bus for ``spec``: a Bus object (returned as is), a URL, or None (local)."""
    if spec is None or spec == "local":
        return NoBus()
    if not isinstance(spec, str):
        return spec
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from .redis_bus import RedisBus  # redis-py is only imported when Redis is used

        return RedisBus(spec)
    if spec.startswith("memory://"):
        return MemoryBus.shared(spec[len("memory://"):])
    raise ConfigError(f"unknown adapter {spec!r}: use redis://host:port/db (or leave it unset for one node)")

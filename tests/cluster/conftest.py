"""Cluster-test fixtures: real ``redis-server`` processes, and the Redis bus in the contract suite.

* ``redis_server`` (session): one Redis for the whole run, started on first
  use on a free loopback port (``--save '' --appendonly no``) and stopped at
  the end of the session. Tests that stop or pause a Redis use their own:
* ``make_redis_server(password=None, start=True)``: a private server
  (``stop()``, ``start()`` on the same port, ``restart()``, ``pause()``,
  ``resume()``), closed after the test.

Both skip the test, saying why, only when the redis-server binary is absent.
Importing this module registers ``"redis"`` in ``BUS_FACTORIES``, so the bus
contract suite runs against :class:`~actors.redis_bus.RedisBus` too, each
group of buses on a prefix of its own.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest

from tests.cluster.redis_server import RedisServer, missing_reason
from tests.cluster.test_bus_contract import BUS_FACTORIES

_shared: list[RedisServer] = []


def shared_redis_server() -> RedisServer:
    """The session's Redis (started on first use; skips the test when Redis cannot run)."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    if not _shared:
        _shared.append(RedisServer())
    return _shared[0].start()  # started again if a test left it stopped


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    for server in _shared:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The session's running Redis (see the module docstring)."""
    return shared_redis_server()


@pytest.fixture
def make_redis_server():
    """``make_redis_server(password=None, start=True)``: a private Redis, closed after the test."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    made: list[RedisServer] = []

    def make(password: str | None = None, start: bool = True) -> RedisServer:
        server = RedisServer(password=password)
        made.append(server)
        return server.start() if start else server

    yield make
    for server in made:
        server.close()


def _redis_buses(k: int) -> tuple[list[Any], Callable[[], None]]:
    from actors.redis_bus import RedisBus

    url = shared_redis_server().url()
    prefix = f"contract-{uuid.uuid4().hex[:12]}"
    return [RedisBus(url, prefix=prefix) for _ in range(k)], lambda: None


BUS_FACTORIES["redis"] = _redis_buses

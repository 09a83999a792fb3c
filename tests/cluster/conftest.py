"""Cluster-test fixtures: real ``redis-server`` processes, and the Redis bus in the contract suite.

* ``redis_server`` (session): one Redis for the whole run, started on first
  use on a free loopback port (``--save '' --appendonly no``) and stopped at
  the end of the session. Tests that stop or pause a Redis use their own:
* ``make_redis_server(password=None, start=True)``: a private server
  (``stop()``, ``start()`` on the same port, ``restart()``, ``pause()``,
  ``resume()``), closed after the test.

Both skip the test, saying why, only when the redis-server binary is absent.

* ``workers(count, *flags, env=None)``: a started ``actorcast serve
  --workers`` (tests/cluster/worker_node.py), stopped after the test;
  ``clients(port, n)``: connected PusherClients, closed after the test.
* ``cluster(n, **app_settings)`` (memory bus, then Redis): n started nodes on
  one fresh bus, heartbeats every ``HEARTBEAT`` s; ``cluster.new_bus()``
  makes one more member.

"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from typing import Any

import pytest

from tests.cluster.redis_server import RedisServer, missing_reason
from tests.cluster.worker_node import TIMEOUT, Workers
from tests.e2e.test_cli import Serve
from tests.wsclient import PusherClient

HEARTBEAT = 0.1  # fast heartbeats: a silent node is dead in well under a second

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


@pytest.fixture(params=["memory", "redis"])
def cluster(request, make_node):
    """``cluster(n)``: n started nodes on one fresh bus; ``cluster.new_bus()`` makes one more member."""
    from actors import App
    from actors.bus import MemoryBus

    name = uuid.uuid4().hex
    if request.param == "redis":
        from actors.redis_bus import RedisBus

        url = shared_redis_server().url()

        def new_bus():
            return RedisBus(url, prefix=f"test-{name}")
    else:

        def new_bus():
            return MemoryBus.shared(name)

    def make(n: int = 2, **app_settings) -> list:
        return [make_node(App(**app_settings), adapter=new_bus(), heartbeat_interval=HEARTBEAT) for _ in range(n)]

    make.new_bus = new_bus
    return make


@pytest.fixture
def workers():
    """``workers(count, *flags, env=None)``: a started ``serve --workers``, stopped after the test.

    The parent's temp dir (bus socket, metrics files) goes under a TMPDIR of
    the test's, removed afterwards even when a test killed the parent.
    """
    started: list[Serve] = []
    tmp = tempfile.mkdtemp(prefix="aw-")

    def serve(*args: str, env: dict[str, str] | None = None) -> Serve:
        started.append(Serve(*args, env={"TMPDIR": tmp, **(env or {})}))
        return started[-1]

    yield lambda count=2, *args, env=None: Workers(serve, count, *args, env=env)
    for process in started:
        if process.proc.poll() is None:
            process.proc.terminate()
            try:
                process.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def clients():
    opened: list[PusherClient] = []

    def open_(port: int, n: int = 1) -> list[PusherClient]:
        new = [PusherClient.connect(port, timeout=TIMEOUT) for _ in range(n)]
        opened.extend(new)
        return new

    yield open_
    for client in opened:
        client.ws.shutdown()

"""Shared fixtures: stop every actor and node after each test; bounded waits.

* ``stop_all_actors`` (autouse) stops, after each test, the actors still
  registered that live on the test thread's gevent hub (runtime tests), and
  forgets any left on other hubs (a node's hub thread) with a warning, so no
  test sees another test's actors.
* ``make_node`` / ``start_node`` / ``node`` start real nodes on 127.0.0.1,
  port 0 (and a metrics port 0), and stop them after the test.
* ``open_client`` opens websocket-client connections, closed after the test;
  ``connect()`` opens one to ``node``.
* ``wait_until`` polls a condition with a deadline (gevent-aware, so actors
  on the test's own hub keep running while it waits).

``ACTORCAST_TEST_TOPOLOGY`` (``single``, ``redis2``, ``workers2``; see
tests/topology.py) decides what ``make_node`` starts: one Node, two Nodes
joined over Redis, or ``actorcast serve --workers 2``. A test that needs one
in-process node is marked ``@pytest.mark.single_node(reason="...")`` and is
skipped, with its reason, under the other topologies (``also=("redis2",)``:
except those named).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import gevent
import pykka
import pytest

DEFAULT_WAIT = 5.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "single_node(reason, also=()): needs one in-process node; skipped under ACTORCAST_TEST_TOPOLOGY "
        "redis2/workers2 (except the topologies named in also)",
    )
    from tests import topology
    from tests.cluster.redis_server import missing_reason

    try:
        name = topology.current()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if name == "redis2" and missing_reason():
        raise pytest.UsageError(f"{topology.ENV}=redis2 needs redis-server: {missing_reason()}")


def pytest_report_header(config: pytest.Config) -> str:
    from tests import topology

    return f"actorcast test topology: {topology.current()} ({topology.ENV})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests import topology

    name = topology.current()
    for item in items:
        marker = item.get_closest_marker("single_node")
        if marker is None:
            continue
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.single_node needs a reason")
        also = marker.kwargs.get("also", ())
        if name != "single" and name not in also:
            item.add_marker(pytest.mark.skip(reason=f"single node only under {name}: {reason}"))


def wait_until(
    predicate: Callable[[], Any], timeout: float = DEFAULT_WAIT, interval: float = 0.01, message: str = ""
) -> Any:
    """Poll ``predicate()`` until it is truthy; return its value, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {message or predicate!r} (last: {value!r})")
        gevent.sleep(interval)  # yields to the test hub's greenlets, unlike time.sleep


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    return wait_until


def _inbox_hub(ref: pykka.ActorRef) -> Any:
    return getattr(ref.actor_inbox, "hub", None)


@pytest.fixture(autouse=True)
def stop_all_actors():
    """Stop every actor a test left running (Pykka's "stop all actors after each test")."""
    yield
    leftover = pykka.ActorRegistry.get_all()
    if not leftover:
        return
    hub = gevent.get_hub()
    for ref in reversed(leftover):  # last started, first stopped
        if _inbox_hub(ref) is hub:
            try:
                ref.stop(block=True, timeout=2)
            except (pykka.ActorDeadError, pykka.Timeout):
                pykka.ActorRegistry.unregister(ref)
        else:
            # On another hub (a node's thread): telling it from here is not
            # thread-safe, and its node was stopped (or leaked) already.
            warnings.warn(f"actor left running on another hub: {ref}", stacklevel=1)
            pykka.ActorRegistry.unregister(ref)


@pytest.fixture
def make_node():
    """``make_node(App(...), ..., **node_kwargs)``: a started Node on 127.0.0.1:0, stopped after the test.

    Under ``ACTORCAST_TEST_TOPOLOGY=redis2`` / ``workers2`` it is a facade
    over two nodes or a 2-worker node instead (tests/topology.py), unless the
    test passes an ``adapter`` (it joins its nodes itself).
    """
    from actors import App, Node
    from tests import topology

    kind = topology.current()
    nodes: list[Any] = []

    def make(*apps: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        kwargs.setdefault("metrics_port", 0)
        if "adapter" in kwargs:  # the test builds a cluster of its own (tests/cluster): no facade
            node = Node(apps=list(apps) or [App()], **kwargs)
            node.start()
        elif kind == "redis2":
            from tests.cluster.conftest import shared_redis_server

            node = topology.RedisPair(list(apps) or [App()], shared_redis_server().url(), **kwargs)
        elif kind == "workers2":
            node = topology.WorkerNode(list(apps) or [App()], **kwargs)
        else:
            node = Node(apps=list(apps) or [App()], **kwargs)
            node.start()
        nodes.append(node)
        return node

    yield make
    failures: list[BaseException] = []
    for node in reversed(nodes):
        try:
            node.stop()
        except AssertionError as exc:  # a worker node that logged errors: stop the others first
            failures.append(exc)
    if failures:
        raise failures[0]


@pytest.fixture
def start_node(make_node):
    """``start_node(**app_settings)``: ``make_node`` for one ``App(**app_settings)`` (id 1, key app-key)."""
    from actors import App

    return lambda **settings: make_node(App(**settings))


@pytest.fixture
def node(start_node):
    """A started node serving the default app (id 1, key app-key)."""
    return start_node()


@pytest.fixture
def open_client():
    """``open_client(node_or_port, **kwargs)``: a connected PusherClient, closed after the test."""
    from tests.wsclient import PusherClient

    opened: list[Any] = []

    def open_(target: Any, **kwargs: Any) -> Any:
        port = target if isinstance(target, int) else target.port
        client = PusherClient.connect(port, **kwargs)
        opened.append(client)
        return client

    yield open_
    for client in opened:
        client.ws.shutdown()  # cleanup only: no close handshake to wait for


@pytest.fixture
def connect(node, open_client):
    """``connect()``: ``open_client(node)``, a PusherClient to the ``node`` fixture's node."""
    return lambda: open_client(node)

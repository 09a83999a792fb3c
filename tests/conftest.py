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
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import gevent
import pykka
import pytest

DEFAULT_WAIT = 5.0


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
    """``make_node(App(...), ..., **node_kwargs)``: a started Node on 127.0.0.1:0, stopped after the test."""
    from actors import App, Node

    nodes: list[Any] = []

    def make(*apps: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        kwargs.setdefault("metrics_port", 0)
        node = Node(apps=list(apps) or [App()], **kwargs)
        node.start()
        nodes.append(node)
        return node

    yield make
    for node in reversed(nodes):
        node.stop()


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

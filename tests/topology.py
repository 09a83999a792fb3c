"""Which server the end-to-end suite runs against: ``ACTORCAST_TEST_TOPOLOGY``.

============  ================================================================
``single``    (default) each ``make_node`` starts one in-process :class:`Node`
``redis2``    two in-process Nodes joined over the session's redis-server on
              a fresh prefix (:class:`RedisPair`); ``port`` alternates between
              them on every read, so consecutive clients and HTTP calls land
              on different nodes
``workers2``  ``actorcast serve --workers 2`` in a subprocess, on the port its
              parent picks (:class:`WorkerNode`); the kernel spreads
              connections over the workers; ``broadcast`` goes through the
              HTTP API, on one kept-alive connection per publishing thread
============  ================================================================

Both facades behave as one node to a test: counts are the cluster's (summed,
or asked over HTTP), ``stop`` stops everything. What only one in-process node
has (``node._app_actors``, ``node.call``, ``ServerLimits``...) is refused with
an error that says how to mark the test: ``@pytest.mark.single_node(reason=...)``
runs a test only in ``single`` (``also=("redis2",)`` lets it run there too).
A server bug a topology shows is marked ``@known_bug(reason, every_run=...,
some_runs=...)`` (an ``xfail``) until it is fixed.
"""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Iterable
from urllib.parse import quote, urlencode

__all__ = ["DEFAULT", "ENV", "TOPOLOGIES", "RedisPair", "TopologyError", "WorkerNode", "current", "known_bug"]

ENV = "ACTORCAST_TEST_TOPOLOGY"
DEFAULT = "single"
TOPOLOGIES = ("single", "redis2", "workers2")
JOIN_TIMEOUT = 10.0  # two nodes see each other on the bus / two workers listen
HTTP_TIMEOUT = 10.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The parent's own bound: the workers' shutdown grace (5 s) and its margin (5 s),
# then closing the relay and /metrics on its hub (10 s at most); and some.
STOP_TIMEOUT = 30.0
WORKERS_LISTENING = re.compile(
    r"actors\.workers: actorcast listening on ws://[\d.]+:(?P<port>\d+)/app/\S* "
    r"\(metrics on http://[\d.]+:(?P<metrics>\d+)/metrics\), (?P<workers>\d+) workers"
)
# A line a worker node must never print: ERROR means our bug, and so does a traceback.
BAD_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")


class TopologyError(AssertionError):
    """A test asked a multi-node facade for what only one in-process node has."""


def current() -> str:
    """The topology named by ``ACTORCAST_TEST_TOPOLOGY`` (``single`` when unset)."""
    name = os.environ.get(ENV, "").strip() or DEFAULT
    if name not in TOPOLOGIES:
        raise ValueError(f"{ENV}={name!r}: use one of {', '.join(TOPOLOGIES)}")
    return name


def known_bug(reason: str, *, every_run: tuple[str, ...] = (), some_runs: tuple[str, ...] = ()) -> Any:
    """``xfail`` for a server bug this test shows under some topologies (reported, not yet fixed).

    ``every_run``: topologies where it fails whatever happens (strict: a pass
    means the bug is gone, so the mark must go too); ``some_runs``: where it
    fails only when the kernel or timing puts the clients on different nodes.
    """
    import pytest

    name = current()
    return pytest.mark.xfail(name in every_run + some_runs, reason=f"known bug under {name}: {reason}",
                             strict=name in every_run)


def _refuse(topology: str, what: str) -> TopologyError:
    return TopologyError(
        f"{what} is not there under {ENV}={topology}: mark the test "
        f"@pytest.mark.single_node(reason=...) (also=('redis2',) if two in-process nodes will do)"
    )


# --- two nodes over Redis ------------------------------------------------------------


class RedisPair:
    """Two started Nodes on one Redis prefix that a test uses as one node."""

    def __init__(self, apps: list[Any], redis_url: str, **node_kwargs: Any) -> None:
        from actors import Node
        from actors.redis_bus import RedisBus

        prefix = f"e2e-{uuid.uuid4().hex[:12]}"
        self.nodes: list[Any] = []
        self._turn = itertools.count()  # next() is atomic: clients in threads alternate too
        self._metrics_turn = itertools.count()
        try:
            for _ in range(2):
                node = Node(apps=apps, adapter=RedisBus(redis_url, prefix=prefix), **node_kwargs)
                self.nodes.append(node.start())
            self._wait_joined()
        except BaseException:
            self.stop()
            raise

    def _wait_joined(self) -> None:
        # A query counts the nodes in the live-node table, and presence comes from
        # the replica: each node must have met the other and have its state
        # before the test asks anything (as Node(expect_peers=...) waits).
        deadline = time.monotonic() + JOIN_TIMEOUT
        peers = len(self.nodes) - 1
        while not all(node.call(node.cluster.synced_peers) == peers for node in self.nodes):
            if time.monotonic() > deadline:
                raise TopologyError(f"the two nodes did not meet on Redis within {JOIN_TIMEOUT} s")
            time.sleep(0.01)  # polling a bounded deadline

    @property
    def port(self) -> int:
        """The two nodes' ports in turn, one per read."""
        return self.nodes[next(self._turn) % len(self.nodes)].port

    @property
    def metrics_port(self) -> int:
        """The nodes' metrics ports in turn (each node has its own /metrics)."""
        return self.nodes[next(self._metrics_turn) % len(self.nodes)].metrics_port

    @property
    def apps(self) -> Any:
        return self.nodes[0].apps

    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes)

    def start(self) -> RedisPair:
        from actors import ActorcastError

        raise ActorcastError("node already started")

    def broadcast(self, *args: Any, **kwargs: Any) -> None:
        """``Node.broadcast`` on the first node: the bus carries it to the other."""
        self.nodes[0].broadcast(*args, **kwargs)

    def connection_count(self, app_id: str | None = None) -> int:
        return sum(node.connection_count(app_id) for node in self.nodes)

    def subscription_count(self, app_id: str, channel: str) -> int:
        return sum(node.subscription_count(app_id, channel) for node in self.nodes)

    def metrics_totals(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for node in self.nodes:
            for app_id, counts in node.metrics_totals().items():
                mine = totals.setdefault(app_id, {})
                for name, value in counts.items():
                    mine[name] = mine.get(name, 0) + value
        return totals

    def call(self, func: Any, *args: Any, timeout: float | None = 10) -> Any:
        """Run ``func`` on the first node's hub (what it inspects is that node's only)."""
        return self.nodes[0].call(func, *args, timeout=timeout)

    def stop(self, timeout: float | None = None) -> None:
        for node in self.nodes:
            node.stop(timeout)

    def __getattr__(self, name: str) -> Any:
        raise _refuse("redis2", f"node.{name}")


# --- one node of two worker processes ---------------------------------------------------


class WorkerNode:
    """``actorcast serve --workers 2`` in a subprocess, driven as if it were one Node."""

    def __init__(self, apps: list[Any], workers: int = 2, **node_kwargs: Any) -> None:
        unsupported = sorted(set(node_kwargs) - {"host", "port", "metrics_port"})
        if unsupported or node_kwargs.get("port", 0) or node_kwargs.get("metrics_port", 0):
            raise _refuse("workers2", f"make_node(..., {', '.join(unsupported) or 'a fixed port'}) ")
        self.apps = {app.id: app for app in apps}
        self._config = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="actorcast-e2e-", delete=False)
        with self._config:
            json.dump({"apps": [dataclasses.asdict(app) for app in apps]}, self._config)
        self.host = "127.0.0.1"
        # --port 0: the parent picks the port once and hands it to every worker.
        self.process = _Process("--host", self.host, "--port", "0", "--metrics-port", "0",
                                "--workers", str(workers), "--config", self._config.name)
        try:
            # The parent says "listening" once every worker listens, and a worker
            # listens only once it has met the others: the node is formed by then.
            (match,) = self.process.wait_for(WORKERS_LISTENING, timeout=JOIN_TIMEOUT * 3)
        except BaseException:
            self.process.kill()
            os.unlink(self._config.name)
            raise
        self.port = int(match["port"])
        self.metrics_port = int(match["metrics"])
        self._local = threading.local()
        self._publishers: list[http.client.HTTPConnection] = []
        self.running = True

    def start(self) -> WorkerNode:
        from actors import ActorcastError

        raise ActorcastError("node already started")

    # --- the HTTP API, as a server-side app would use it ---------------------------------

    def _app(self, app_id: Any) -> Any:
        from actors import ActorcastError

        app = self.apps.get(str(app_id))
        if app is None:
            raise ActorcastError(f"unknown app id {app_id!r}")
        return app

    def api(self, method: str, app_id: Any, path: str, params: dict[str, str] | None = None,
            body: Any = None, conn: http.client.HTTPConnection | None = None) -> tuple[int, Any]:
        """One signed HTTP API call: on ``conn``, or on a fresh connection (any worker answers)."""
        from transport.http_signing import sign_request

        app = self._app(app_id)
        full = quote(f"/apps/{app.id}{path}")  # signed as sent (a channel may hold '#')
        data = b"" if body is None else json.dumps(body).encode()
        query = urlencode(sign_request(method, full, params or {}, app.key, app.secret, data))
        fresh = conn is None
        conn = conn or http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request(method, f"{full}?{query}", body=data or None,
                         headers={"Content-Type": "application/json"} if data else {})
            response = conn.getresponse()
            text = response.read()
        finally:
            if fresh:
                conn.close()
        return response.status, json.loads(text) if text else None

    def _publisher(self) -> http.client.HTTPConnection:
        """This thread's kept-alive connection for broadcasts, as an SDK publishes (one worker takes them)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
            self._publishers.append(conn)
        return conn

    def broadcast(self, app_id: str, channels: str | Iterable[str], event: str, data: Any,
                  socket_id: str | None = None) -> None:
        """What ``Node.broadcast`` does, through ``POST /apps/{id}/events`` (checked here first, as it is)."""
        from actors import ActorcastError
        from actors.node import check_broadcast

        app = self._app(app_id)
        channels, encoded = check_broadcast(app, channels, event, data)
        if not self.running:
            raise ActorcastError("node is not running")
        body = {"name": event, "channels": list(channels), "data": encoded}
        if socket_id is not None:
            body["socket_id"] = socket_id
        try:
            status, answer = self.api("POST", app.id, "/events", body=body, conn=self._publisher())
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The worker closed the kept-alive connection while it idled: send again on a new one.
            self._local.conn.close()
            self._local.conn = None
            status, answer = self.api("POST", app.id, "/events", body=body, conn=self._publisher())
        if status != 200:
            raise ActorcastError(f"POST /apps/{app.id}/events answered {status}: {answer}")

    def subscription_count(self, app_id: str, channel: str) -> int:
        """The cluster's count, from ``GET /apps/{id}/channels/{channel}?info=subscription_count``."""
        status, answer = self.api("GET", app_id, f"/channels/{channel}", {"info": "subscription_count"})
        if status != 200:
            raise TopologyError(f"GET /channels/{channel} answered {status}: {answer}")
        return int(answer.get("subscription_count", 0))

    # --- /metrics (the parent sums its workers'; they flush every 0.5 s) ----------------------

    def _samples(self) -> dict[tuple[str, str], float]:
        from prometheus_client.parser import text_string_to_metric_families

        conn = http.client.HTTPConnection(self.host, self.metrics_port, timeout=HTTP_TIMEOUT)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        return {(sample.name, sample.labels.get("app_id", "")): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def connection_count(self, app_id: str | None = None) -> int:
        """Open connections per the ``actorcast_connections`` gauge (as of the workers' last flush)."""
        samples = self._samples()
        wanted = self.apps if app_id is None else (str(app_id),)
        return int(sum(samples.get(("actorcast_connections", app), 0) for app in wanted))

    def metrics_totals(self) -> dict[str, dict[str, int]]:
        """``Node.metrics_totals()`` from the counters on /metrics (as of the workers' last flush)."""
        from actors.metrics import COUNTERS

        samples = self._samples()
        totals: dict[str, dict[str, int]] = {}
        for name, (prom, _) in COUNTERS.items():
            for app_id in self.apps:
                value = samples.get((f"{prom}_total", app_id))
                if value:
                    totals.setdefault(app_id, {})[name] = int(value)
        return totals

    # --- what it cannot do, and stopping --------------------------------------------------

    def call(self, func: Any, *args: Any, timeout: float | None = 10) -> Any:
        raise _refuse("workers2", "node.call (code on a node's hub, in this process)")

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the parent (its workers drain, as ``Node.stop``), wait, then check what it logged."""
        if not self.running:
            return
        self.running = False
        for conn in self._publishers:
            conn.close()
        try:
            code = self.process.stop(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the worker node did not stop within {STOP_TIMEOUT} s of SIGTERM; it logged:\n"
                                 + "\n".join(self.process.output[-40:])) from None
        finally:
            self.process.kill()
            os.unlink(self._config.name)
        first_bad = next((i for i, line in enumerate(self.process.output) if BAD_LINE.search(line)), None)
        if first_bad is not None or code != 0:
            shown = self.process.output[first_bad:first_bad + 40] if first_bad is not None else self.process.output[-20:]
            raise AssertionError(f"the worker node exited with {code} and logged:\n" + "\n".join(shown))

    def __getattr__(self, name: str) -> Any:
        raise _refuse("workers2", f"node.{name}")


class _Process:
    """``python -m actors serve ARGS`` with its output (workers' too) collected by one thread."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCAST_")}
        env.update(PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "actors", "serve", *args], cwd=REPO, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.output: list[str] = []
        self._more = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # until every process writing to the pipe (workers too) is gone
            with self._more:
                self.output.append(line.rstrip())
                self._more.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float, count: int = 1) -> list[re.Match[str]]:
        """The first ``count`` lines so far or to come that match ``pattern`` (bounded by ``timeout``)."""
        def found() -> list[re.Match[str]]:
            matches = (pattern.search(line) for line in self.output)
            return [match for match in matches if match][:count]

        with self._more:
            if self._more.wait_for(lambda: len(found()) >= count, timeout=timeout):
                return found()
        raise TopologyError(f"actorcast serve did not say {pattern.pattern!r} {count}x in {timeout} s: "
                            f"{self.output[-20:]}")

    def stop(self, timeout: float) -> int:
        """SIGTERM; the exit code once it and its output are done."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

"""The node: wires apps, actors and the listening sockets together.

::

    node = Node(apps=[App(id="1", key="app-key", secret="app-secret")], port=0)
    node.start()                      # returns once it listens; node.port is real
    node.broadcast("1", "news", "headline", {"title": "hi"})
    node.stop()                       # closes every connection, actor and socket

A node runs on a gevent hub of its own (a background thread, see
``hub.HubThread``), so it embeds in plain threaded code; every public
method here is safe to call from any thread.
"""

from __future__ import annotations

import itertools
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from gevent.event import AsyncResult
from prometheus_client import CollectorRegistry
from pykka import ActorDeadError, Future, Timeout

from transport import cluster as wire
from transport import protocol
from transport.config import App, AppTable, ServerLimits
from transport.errors import ActorcastError, listen_error
from transport.frames import text_frame
from transport.metrics_endpoint import make_metrics_server
from transport.ops_log import OpsLog, RateLimiter
from transport.protocol import check_broadcast  # re-exported: the test facades check as Node does
from transport.routes import PROBES, NodeRoutes
from transport.server import HttpServer
from transport.tls import tls_context
from transport.writer import SocketWriter

from .adapter import make_adapter
from .app import AppActor
from .bus import Bus, describe
from .cluster import Cluster
from .connection import ActorSession, ConnectionActor
from .health import NodeHealth
from .http_backend import NodeBackend
from .hub import HubThread
from .messages import Barrier, PublishFrames
from .metrics import MetricsActor
from .refs import AppRef, MetricsRef, WebhookRef, app_proxy, metrics_proxy
from .runtime import call_later, sleep, tell_if_alive
from .webhooks import AppRestarted, WebhookActor, WebhookTimings, drain_webhooks

__all__ = ["Node", "check_broadcast"]

log = logging.getLogger(__name__)

BUS_CONNECT_SECONDS = 5.0  # how long start() waits for a cluster bus to connect
_T = TypeVar("_T")


class Node:
    """One actorcast node: a Pusher-compatible server for one or more apps.

    ``tls_cert`` (a PEM chain) and ``tls_key`` (its key; None: in the same
    file) make the port serve ``wss://`` and ``https://`` only, and with
    ``metrics_tls`` the metrics port ``https://``; the files are read by
    ``start()``, which raises ConfigError naming a file it cannot use.

    ``metrics_port`` (None: no metrics port) serves Prometheus ``/metrics``;
    an embedded node serves none unless given one, so it never clashes with
    a CLI node's 9601.
    """

    def __init__(
        self,
        apps: Iterable[App] | None = None,
        host: str = "0.0.0.0",
        port: int = 6001,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
        metrics_flush_interval: float = 0.5,
        limits: ServerLimits | None = None,
        adapter: Bus | str | None = None,
        *,
        reuse_port: bool = False,
        heartbeat_interval: float = 2.0,
        request_timeout: float = 0.5,
        webhook_timings: WebhookTimings | None = None,
        worker: int | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        metrics_tls: bool = False,
        expect_peers: int = 0,
    ) -> None:
        self.apps = AppTable(list(apps) if apps is not None else [App()])
        self.limits = limits or ServerLimits()
        self.host = host
        self.port = port
        self.metrics_host = metrics_host or host
        self.metrics_port = metrics_port
        self.metrics_flush_interval = metrics_flush_interval
        # TLS (transport.tls): the files are read at start(); tls_key None = the key is in tls_cert.
        self.tls_cert, self.tls_key, self.metrics_tls = tls_cert, tls_key, metrics_tls
        self._tls: ssl.SSLContext | None = None
        self.registry = CollectorRegistry()
        self._hub = HubThread()
        self._server: HttpServer | None = None
        self._routes: NodeRoutes | None = None
        self._backend: NodeBackend | None = None
        self._metrics_server: HttpServer | None = None
        self._metrics: MetricsRef = cast("MetricsRef", None)  # set by start(), on the hub
        self._app_actors: dict[str, AppRef] = {}
        self._webhook_actors: dict[str, WebhookRef] = {}  # app id -> WebhookActor, for apps with webhooks only
        self.webhook_timings = webhook_timings
        self.adapter = make_adapter(adapter)
        self.reuse_port = reuse_port  # SO_REUSEPORT: worker processes sharing one port
        self.worker = worker  # this process's number under ``actorcast serve --workers N`` (1..N), or None
        limits = self.limits  # one budget of refusal lines per client address, for the whole node (on its hub)
        self._ops = OpsLog(RateLimiter(limits.max_log_lines_per_client, limits.log_window), schedule=call_later)
        # One random number names this node: the origin of its cluster messages and the first half of its socket
        # ids, so socket ids are unique across workers and nodes (exclusion by socket_id relies on it).
        self._tag = random.SystemRandom().randrange(1, 1 << 31)
        self.node_id = str(self._tag)
        self._socket_numbers = itertools.count(random.SystemRandom().randrange(1, 1 << 30))
        self.cluster = Cluster(self.node_id, self.adapter, self._app_actors, self._call_in_hub, expect=expect_peers,
                               heartbeat_interval=heartbeat_interval, request_timeout=request_timeout, apps=self.apps)
        self._health = NodeHealth(self.node_id, worker, self.cluster, self._app_actors)
        self.running = False

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> Node:
        """Start actors and sockets; return once the node listens."""
        if self.running:
            raise ActorcastError("node already started")
        self._tls = tls_context(self.tls_cert, self.tls_key, metrics_tls=self.metrics_tls)  # ConfigError: say which file
        self._hub.start(self._start_in_hub)
        self.running = True
        # On a cluster, wait (bounded) for the bus: what is published before it carries messages reaches no other
        # node. In sync, not just connected: /ready is 503 until the first heartbeat after asking for presence.
        deadline = time.monotonic() + BUS_CONNECT_SECONDS
        while not self.cluster.in_sync and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.cluster.in_sync:
            log.warning("the cluster bus (%s) is not connected yet; serving this node's clients meanwhile",
                        describe(self.adapter))
        if self.worker is not None:  # the parent says where the port and the metrics are, once
            log.debug("worker %d listening on port %d as node %s", self.worker, self.port, self.node_id)
        else:
            scheme = "s" if self._tls is not None else ""
            metrics = (f"on http{'s' if self.metrics_tls else ''}://{self.metrics_host}:{self.metrics_port}/metrics"
                       if self.metrics_port is not None else "off")
            log.info("actorcast listening on ws%s://%s:%d/app/{key} (metrics %s)", scheme, self.host, self.port,
                     metrics)
        return self

    def _start_in_hub(self) -> None:
        self._metrics = metrics = MetricsActor.start(self.registry, self.metrics_flush_interval)
        for app in self.apps:
            if app.webhooks:
                self._webhook_actors[app.id] = WebhookActor.start(app, metrics, self.webhook_timings,
                                                                  cluster=self.cluster)
            self._app_actors[app.id] = AppActor.start(app, metrics, self._app_actor_died, self.cluster,
                                                      self._webhook_actors.get(app.id))
        self.cluster.start()
        self.cluster.meet()  # bounded: it answers nothing it could not answer for the whole cluster
        self._backend = NodeBackend(self._app_actors, self._publish, self.cluster)
        quota = None if self.cluster.solo else self.cluster.quota
        self._routes = NodeRoutes(self.apps, self._connect, self._backend, quota, self._health, self._ops)
        self._server = HttpServer((self.host, self.port), self._routes, self.limits, reuse_port=self.reuse_port,
                                  always_open=PROBES, ops=self._ops, tls=self._tls)
        self._health.serving(self._server)
        listening = False
        try:
            try:
                self._server.start()
            except OSError as exc:
                raise listen_error("the main port", self.host, self.port, exc) from exc
            self.port = self._server.server_port
            if self.metrics_port is not None:
                self._metrics_server = make_metrics_server(
                    (self.metrics_host, self.metrics_port), self.registry, self._flush_metrics, self.limits,
                    self._tls if self.metrics_tls else None,
                )
                try:
                    self._metrics_server.start()
                except OSError as exc:
                    raise listen_error("the metrics port", self.metrics_host, self.metrics_port, exc) from exc
                self.metrics_port = self._metrics_server.server_port
            listening = True
        finally:
            if not listening:  # a port in use, say: undo what started, let the error through
                self._stop_in_hub()

    def stop(self, timeout: float | None = None) -> None:
        """Drain, then close: nothing the node accepted is dropped.

        New HTTP requests and upgrades are answered 503 from now on (the
        probes go on: ``/health`` 200, ``/ready`` 503) and
        ``broadcast`` raises; requests already being answered finish; every
        event accepted so far is delivered; then every client gets Pusher
        4200 (reconnect) and the sockets close. All of it within ``timeout``
        seconds (default: ``limits.shutdown_grace``).
        """
        if not self.running:
            return
        grace = self.limits.shutdown_grace if timeout is None else timeout
        self.running = False
        self._hub.call(self._stop_in_hub, grace, timeout=grace + 10)
        self._hub.stop()
        log.info("%s stopped", "actorcast" if self.worker is None else f"worker {self.worker}")

    def _stop_in_hub(self, grace: float | None = None) -> None:
        grace = self.limits.shutdown_grace if grace is None else grace
        deadline = time.monotonic() + grace
        server = self._server
        if server is not None:
            server.draining = True  # from here every new request is a 503
            while server.busy and time.monotonic() < deadline:
                sleep(0.01)  # requests past their head finish and are answered
        if self._backend is not None:
            self._backend.accepting = False  # one still reading its body gets 503, not a 200 we would drop
        while self.cluster.publishes_in_flight and time.monotonic() < deadline:
            sleep(0.01)  # our own publishes are delivered here when the bus brings them back
        self._deliver_accepted(deadline)
        for ref in list(self._app_actors.values()):
            try:
                app_proxy(ref).terminate_all(protocol.RECONNECT, "Server is shutting down").get(timeout=_left(deadline))
            except (ActorDeadError, Timeout):
                log.warning("an app actor did not close its connections in time")
        # Bounded wait for every socket to flush what it holds, then its close frame.
        while self._routes is not None and self._routes.open_sockets > 0 and time.monotonic() < deadline:
            sleep(0.02)
        if self._routes is not None and self._routes.open_sockets:
            log.warning("%d connections did not close within the %.1f s grace period", self._routes.open_sockets, grace)
        drain_webhooks(self._webhook_actors, self._app_actors, deadline)  # then stops them
        if server is not None:
            server.stop(timeout=1)
        if self._metrics_server is not None:
            self._metrics_server.stop(timeout=1)
        for ref in self._app_actors.values():
            ref.stop(timeout=max(_left(deadline), 1.0))
        self._app_actors.clear()
        self.cluster.stop()
        if self._metrics is not None:
            self._metrics.stop(timeout=5)

    def _deliver_accepted(self, deadline: float) -> None:
        """Wait until every event accepted so far has been offered to its sockets.

        Inboxes are FIFO: once an app actor answers, every publish it got
        before has reached its channel actors' inboxes; once those answer,
        their frames are on the sockets (or in their bounded queues, which
        flush before the close frame).
        """
        for ref in list(self._app_actors.values()):
            try:
                channels = app_proxy(ref).channel_refs().get(timeout=_left(deadline))
            except (ActorDeadError, Timeout):
                continue
            futures: list[Future[bool]] = []  # a Barrier is answered True
            for channel_ref in channels.values():
                try:
                    futures.append(channel_ref.ask(Barrier(), block=False))
                except ActorDeadError:
                    continue
            for future in futures:
                try:
                    future.get(timeout=_left(deadline))
                except (ActorDeadError, Timeout):
                    continue

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- publishing ------------------------------------------------------------

    def broadcast(
        self,
        app_id: str,
        channels: str | Iterable[str],
        event: str,
        data: Any,
        socket_id: str | None = None,
    ) -> None:
        """Send an event to every subscriber of ``channels`` (except ``socket_id``).

        ``data`` is sent as the Pusher HTTP API sends it: a str goes as is,
        any other JSON value is JSON-encoded once. Returns once the event is
        queued for delivery; invalid names raise ProtocolError here.
        """
        app = self.apps.by_id(app_id)
        if app is None:
            raise ActorcastError(f"unknown app id {app_id!r}")
        channels, encoded = check_broadcast(app, channels, event, data)
        if not self.running:
            raise ActorcastError("node is not running")
        events = tuple((channel, protocol.event_json(channel, event, encoded)) for channel in channels)
        self._hub.post(self._publish, app.id, events, socket_id)

    def _call_in_hub(self, func: Callable[..., object], *args: object) -> None:
        # Always through the loop, even from the hub itself: a bus delivery
        # never runs inside the code that published it.
        self._hub.hub.loop.run_callback_threadsafe(func, *args)

    def _publish(self, app_id: str, events: tuple[tuple[str, str], ...], socket_id: str | None) -> AsyncResult | None:
        """Deliver ``events`` ((channel, event JSON) pairs) on every node; the bus's result, or None alone.

        On a cluster it is delivered here too when the bus brings it back (``Cluster.publish``), so every
        node sees one publisher's events in the bus's one order, even when its calls reach different nodes.
        """
        started = time.monotonic()

        def deliver_here() -> None:
            if (ref := self._app_actors.get(app_id)) is not None:  # now: it may have been restarted since
                frames = tuple((channel, text_frame(event)) for channel, event in events)
                tell_if_alive(ref, PublishFrames(frames, socket_id, started))

        if self.cluster.solo:
            deliver_here()
            return None
        return self.cluster.publish(wire.Publish(self.node_id, app_id, events, socket_id), deliver_here)

    # --- glue and queries ------------------------------------------------------

    def _connect(self, app: App, writer: SocketWriter) -> ActorSession:
        socket_id = f"{self._tag}.{next(self._socket_numbers)}"
        ref = ConnectionActor.start(app, writer, self._app_actors[app.id], self._metrics, socket_id, self._ops)
        return ActorSession(ref)

    def _app_actor_died(self, app_id: str, reason: str) -> None:
        # The app actors' supervisor, called on the hub by the dead actor once
        # it closed its connections (4200): log one line and put a fresh actor
        # in the table that NodeBackend, the adapter and _connect read.
        if app_id not in self._app_actors or not self.running:  # the node is stopping: nothing to restore
            log.error("app actor %s died during shutdown: %s", app_id, reason)
            return
        log.error("app actor %s died: %s; restarted, its clients were told to reconnect (4200)", app_id, reason)
        # What the webhook actor announced for its subscribers waits the delay for them to come back.
        webhooks = self._webhook_actors.get(app_id)
        if webhooks is not None:
            tell_if_alive(webhooks, AppRestarted())
        if not self.cluster.solo:
            # The others forget what the dead actor held (its clients come back, or not), and the
            # fresh one gets their state again; all on the bus before the fresh one says anything.
            if webhooks is not None:
                self.cluster.send(wire.Occupancy(self.node_id, app_id, "", False))
            self.cluster.send(wire.Sync(self.node_id, "", app_id, {}))
            self.cluster.send(wire.SyncRequest(self.node_id))
        self._app_actors[app_id] = AppActor.start(self.apps.by_id(app_id), self._metrics, self._app_actor_died,
                                                  self.cluster, self._webhook_actors.get(app_id))

    def _flush_metrics(self) -> None:
        try:
            metrics_proxy(self._metrics).flush().get(timeout=5)
        except (ActorDeadError, Timeout):
            log.warning("metrics actor did not flush before a scrape; serving what it had")

    def _connection_count_in_hub(self) -> int:
        return sum(app_proxy(ref).connection_count().get(timeout=5) for ref in self._app_actors.values())

    def connection_count(self, app_id: str | None = None) -> int:
        """Open connections, for one app or all (asks the app actors)."""
        def count() -> int:
            if app_id is None:
                return self._connection_count_in_hub()
            return app_proxy(self._app_actors[str(app_id)]).connection_count().get(timeout=5)

        return self._hub.call(count, timeout=10)

    def subscription_count(self, app_id: str, channel: str) -> int:
        """Subscribers of one channel on this node (as its app actor last heard)."""
        app_actor = self._app_actors[str(app_id)]

        def count() -> int:
            counts = app_proxy(app_actor).channel_info(channel).get(timeout=5)
            return 0 if counts is None else counts[0]

        return self._hub.call(count, timeout=10)

    def metrics_totals(self) -> dict[str, dict[str, int]]:
        """Exact counter totals ``{app_id: {name: value}}`` (flushes first)."""
        return self._hub.call(lambda: metrics_proxy(self._metrics).totals().get(timeout=5), timeout=10)

    def call(self, func: Callable[..., _T], *args: object, timeout: float | None = 10) -> _T:
        """Run ``func(*args)`` on the node's hub and return its result (for tools and tests)."""
        return self._hub.call(func, *args, timeout=timeout)


def _left(deadline: float) -> float:
    """Seconds until ``deadline``, at least a sliver (asks need a positive timeout)."""
    return max(deadline - time.monotonic(), 0.01)


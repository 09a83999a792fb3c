"""This node's place in a cluster: its id, the live-node table, the bus traffic.

Phoenix Tracker's shape: each node owns its local state and replicates its
changes to the others; every node answers from its replica; heartbeats decide
who is alive. :class:`Cluster` is the node side of ``actors.bus``: it encodes
and decodes ``transport.cluster`` messages, hands what arrives to the app
actors (publishes, presence changes, sign-outs), answers the others'
questions, and asks its own (``request``) with a bounded wait.

Everything here runs on the node's hub thread (bus arrivals are posted to
it), so its small tables (live nodes, pending requests) have one owner and
need no lock. A node alone (``NoBus``) is "solo": nothing is encoded, sent
or waited for.

Node death: a node silent for ``DEAD_AFTER`` heartbeat intervals is dead.
Every survivor drops its members from its replica (its own clients get
``member_removed`` once per user gone); :meth:`is_leader` names one survivor
(the lowest id) for work that must happen exactly once cluster-wide.
Heartbeats also count how long each node has known the cluster's state
(``transport.webhook_ledger.Seniority``): the webhook leader is chosen by it.
A node that does not hear even its own heartbeat for as long asks its bus
to reconnect (a half-open connection).

Its own publishes come back to a node in the bus's order and are delivered
there then (``publish``), so every node sees one publisher's events in the
same order; so do its presence Members, which every node applies in that one
order (``actors.app_presence``). Connection quotas are ``actors.cluster_quota``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from transport import cluster as wire
from transport.errors import ProtocolError
from transport.webhook_ledger import Seniority

from .app_webhooks import RemoteOccupancy
from .bus import Bus, BusDown, NoBus, describe
from .cluster_quota import Quota
from .messages import NodeGone, RemoteCounts, RemoteMember, RemotePublish, RemoteSync, TerminateUser
from .runtime import call_later, proxy_of, tell_if_alive

__all__ = ["Cluster", "DEAD_AFTER"]

log = logging.getLogger(__name__)

DEAD_AFTER = 3  # heartbeat intervals of silence after which a node is dead
MEET_PEERS_SECONDS = 10.0  # how long meet() waits for the peers a node expects
FORGOTTEN_KEPT = 256  # nodes dropped for silence that are remembered, in case they were only slow


class Cluster:
    """The bus side of one node (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        bus: Bus | None,
        app_actors: dict[str, Any],
        call_in_hub: Callable[..., None],
        *,
        heartbeat_interval: float = 2.0,
        request_timeout: float = 0.5,
        apps: Any = None,
        expect: int = 0,
    ) -> None:
        self.node_id = node_id
        self.expect = expect  # peers whose state meet() waits for before the node listens (its sibling workers)
        self.bus: Bus = bus if bus is not None else NoBus()
        self.solo = isinstance(self.bus, NoBus)
        self.app_actors = app_actors
        self.call_in_hub = call_in_hub
        self.heartbeat_interval = heartbeat_interval
        self.request_timeout = request_timeout
        self.peers: dict[str, float] = {}  # node id -> monotonic time last heard
        self._heard_self = 0.0
        self.seniority = Seniority(heartbeat_interval)  # how long each node has known the cluster (webhooks)
        self._requests: dict[str, tuple[set[str], dict[str, Any], gevent.event.Event]] = {}
        self._request_ids = itertools.count()
        self._timer: Any = None
        self._running = False
        # Our own publishes on the bus that have not come back yet: seq ->
        # (when handed over, how to deliver it here). Shutdown waits for them.
        self._own: dict[int, tuple[float, Callable[[], None]]] = {}
        self._publish_seqs = itertools.count(1)
        self._synced = False  # presence exchanged since the bus last (re)connected
        self._synced_from: dict[str, set[str]] = {}  # peer -> the apps whose Sync it sent us
        self._forgotten: dict[str, None] = {}  # nodes dropped for silence (oldest first)
        self.quota = Quota(node_id, apps, self.send)

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Join the bus (on the hub): heartbeats start, the others are asked for their presence."""
        if self.solo:
            return
        self._running = True
        self._heard_self = time.monotonic()
        self.bus.start(self._deliver, self.call_in_hub)
        self._beat()

    def stop(self) -> None:
        """Say goodbye (the others drop our members at once) and leave the bus."""
        if self.solo or not self._running:
            return
        self._running = False
        if self._timer is not None:
            self._timer.kill(block=False)
        self.send(wire.Bye(self.node_id))
        self.bus.stop()

    @property
    def connected(self) -> bool:
        """True while the bus carries messages (always, for a node alone)."""
        return self.solo or bool(self.bus.connected)

    @property
    def in_sync(self) -> bool:
        """Connected, and presence re-synced with the others since the bus last (re)connected."""
        return self.solo or (bool(self.bus.connected) and self._synced)

    def live_nodes(self) -> list[str]:
        """Every node believed alive, this one included."""
        return sorted({self.node_id, *self.peers})

    def uptimes(self) -> dict[str, float | None]:
        """How long each live node has known the cluster's state (``transport.webhook_ledger.Seniority``)."""
        return self.seniority.uptimes(self.peers, self.node_id)

    def is_leader(self) -> bool:
        """True on exactly one live node (the lowest id): for once-per-cluster work."""
        return self.live_nodes()[0] == self.node_id

    # --- sending -------------------------------------------------------------------------

    def send(self, message: Any) -> gevent.event.AsyncResult:
        """Put ``message`` on the bus; the result is set once the bus took it (BusDown if not)."""
        if self.solo:
            done = gevent.event.AsyncResult()
            done.set(True)
            return done
        return self.bus.publish(wire.encode(message))

    @property
    def publishes_in_flight(self) -> int:
        """Our own publishes on the bus that have not come back yet."""
        return len(self._own)

    def publish(self, message: wire.Publish, deliver_here: Callable[[], None]) -> gevent.event.AsyncResult:
        """Put our own publish on the bus; ``deliver_here()`` runs when it comes back (in the bus's order).

        It runs exactly once: when the bus brings the publish back, or at once
        if the bus refuses it (this node's clients still get it; the others
        miss it: at most once, as Pusher), or late if the bus lost it (it did
        not come back within ``DEAD_AFTER`` heartbeat intervals).
        """
        seq = next(self._publish_seqs)
        self._own[seq] = (time.monotonic(), deliver_here)
        handed = self.send(message._replace(seq=seq))

        def refused(result: gevent.event.AsyncResult) -> None:
            if not result.successful():
                self._deliver_own(seq)

        handed.rawlink(refused)
        return handed

    def _deliver_own(self, seq: int) -> None:
        own = self._own.pop(seq, None)  # 0 (a client event) or delivered already: nothing to do
        if own is not None:
            own[1]()

    def synced_peers(self) -> int:
        """How many live peers sent us their state (a Sync for every app of ours) since we joined."""
        apps = set(self.app_actors)
        return sum(1 for node, synced in self._synced_from.items() if node in self.peers and synced >= apps)

    def meet(self) -> None:
        """Wait (on the hub, bounded by ``MEET_PEERS_SECONDS``) until the ``expect`` peers sent their state."""
        deadline = time.monotonic() + MEET_PEERS_SECONDS
        expected = self.expect
        while not self.solo and self.synced_peers() < expected:
            if time.monotonic() >= deadline:
                log.warning("met %d of the %d other nodes expected within %.0f s; listening all the same",
                            self.synced_peers(), expected, MEET_PEERS_SECONDS)
                return
            gevent.sleep(0.005)  # bus deliveries run meanwhile: they are what is waited for

    def admit(self, app: Any) -> bool:
        """Admit one connection of ``app`` cluster-wide (see ``actors.cluster_quota``)."""
        return self.quota.admit(app)

    def release(self, app_id: str) -> None:
        """One admitted connection of ``app_id`` closed here."""
        self.quota.release(app_id)

    def request(self, app_id: str, query: str, params: dict[str, Any]) -> list[Any]:
        """Ask every other live node; their answers within ``request_timeout`` (blocks this greenlet).

        The expected answers come from the live-node table, so a dead or
        slow node costs at most the timeout, never a hang.
        """
        return self.request_each(app_id, query, params)[0]

    def request_each(self, app_id: str, query: str, params: dict[str, Any]) -> tuple[list[Any], int]:
        """As :meth:`request`, and how many live nodes did not answer in time (0: every one did)."""
        waiting = set(self.peers)
        if self.solo or not waiting:
            return [], 0
        request_id = f"{self.node_id}:{next(self._request_ids)}"
        answers: dict[str, Any] = {}
        done = gevent.event.Event()
        self._requests[request_id] = (waiting, answers, done)
        try:
            try:
                self.send(wire.Request(self.node_id, request_id, app_id, query, params)).get(timeout=self.request_timeout)
            except (BusDown, gevent.Timeout):
                return [], len(waiting)
            done.wait(self.request_timeout)
        finally:
            del self._requests[request_id]
        return list(answers.values()), len(waiting)  # a node that died meanwhile left ``waiting``

    # --- arrivals (on the hub) -----------------------------------------------------------

    def _deliver(self, data: bytes) -> None:
        try:
            message = wire.decode(data)
        except ProtocolError as exc:
            log.warning("dropped a malformed cluster message: %s", exc.message)
            return
        origin = message.origin
        now = time.monotonic()
        if isinstance(message, (wire.Admit, wire.Release, wire.Count)):
            self.quota.apply(message)  # our own too: every node applies the stream in one order
            if origin == self.node_id:
                return
        elif origin == self.node_id:
            self._heard_self = now
            if isinstance(message, wire.Publish):  # our own publish, back in the bus's order: delivered here now
                self._deliver_own(message.seq)
            elif isinstance(message, wire.Member) and message.seq:  # our presence change, applied in the order
                self._to_app(message.app_id, RemoteMember(origin, message.channel, message.user_id,
                                                          message.user_info, message.joined, message.ask, message.seq))
            return
        if isinstance(message, wire.Bye):
            self._drop(origin, "stopped")
            return
        if origin not in self.peers:
            log.info("node %s joined the cluster (%s)", origin, describe(self.bus))
            if self._forgotten.pop(origin, "new") is None:
                # Dropped for silence, yet alive (a stalled process, say): what it
                # holds was forgotten here. Ask again; it answers as on a join.
                self.send(wire.SyncRequest(self.node_id))
        self.peers[origin] = now
        if isinstance(message, wire.Publish):
            self._to_app(message.app_id, RemotePublish(message.frames, message.except_socket_id))
        elif isinstance(message, wire.Member):
            self._to_app(message.app_id, RemoteMember(origin, message.channel, message.user_id, message.user_info,
                                                      message.joined, message.ask))
        elif isinstance(message, wire.Occupancy):
            self._to_app(message.app_id, RemoteOccupancy(origin, message.channel, message.occupied))
        elif isinstance(message, wire.SubscriptionCounts):
            self._to_app(message.app_id, RemoteCounts(origin, message.counts, message.snapshot))
        elif isinstance(message, wire.Sync):
            if message.target == self.node_id:
                self.seniority.answered()  # the sender was here before us
            if message.target in ("", self.node_id):
                self._to_app(message.app_id, RemoteSync(origin, message.members))
                self._synced_from.setdefault(origin, set()).add(message.app_id)
        elif isinstance(message, wire.SyncRequest):
            gevent.spawn(self._answer_sync, origin)
            self.quota.send_counts()
        elif isinstance(message, wire.TerminateUser):
            self._to_app(message.app_id, TerminateUser(message.user_id))
        elif isinstance(message, wire.Request):
            gevent.spawn(self._answer, message)
        elif isinstance(message, wire.Answer):
            self._collect(message)
        elif isinstance(message, wire.Heartbeat):
            self.seniority.heard(origin, message.seq)
        elif isinstance(message, wire.WebhookLog):
            self._to_app(message.app_id, message)  # for its webhook actor

    def _to_app(self, app_id: str, message: Any) -> None:
        ref = self.app_actors.get(app_id)
        if ref is not None:
            tell_if_alive(ref, message)

    def _answer_sync(self, target: str) -> None:
        for app_id, ref in list(self.app_actors.items()):
            try:
                members, occupied, counts = proxy_of(ref).sync_state().get(timeout=5)
            except Exception as exc:  # noqa: BLE001 - a dead or restarting app actor: that app sends nothing
                log.debug("no presence sync for app %s: %r", app_id, exc)
                continue
            for channel in occupied:  # a node that joins or reconnects learns what is occupied
                self.send(wire.Occupancy(self.node_id, app_id, channel, True))
            if counts is not None:  # and how many subscribe where (apps with subscription counts)
                self.send(wire.SubscriptionCounts(self.node_id, app_id, counts, True))
            # The Sync goes last: once it arrives, the asker has all of this app's state.
            self.send(wire.Sync(self.node_id, target, app_id, members))

    def _answer(self, message: wire.Request) -> None:
        ref = self.app_actors.get(message.app_id)
        if ref is None:
            return
        try:
            value = proxy_of(ref).answer(message.query, message.params).get(timeout=self.request_timeout)
        except Exception as exc:  # noqa: BLE001 - the asker times out on us; say why here
            log.debug("could not answer %s: %r", message.query, exc)
            return
        self.send(wire.Answer(self.node_id, message.origin, message.request_id, value))

    def _collect(self, message: wire.Answer) -> None:
        if message.target != self.node_id:
            return
        pending = self._requests.get(message.request_id)
        if pending is None:
            return  # too late: the asker gave up on us
        waiting, answers, done = pending
        answers[message.origin] = message.value
        waiting.discard(message.origin)
        if not waiting:
            done.set()

    # --- liveness --------------------------------------------------------------------------

    def _beat(self) -> None:
        if not self._running:
            return
        now = time.monotonic()
        limit = DEAD_AFTER * self.heartbeat_interval
        for node, seen in list(self.peers.items()):
            if now - seen > limit:
                self._drop(node, f"silent for {now - seen:.1f} s")
                self._forgotten[node] = None
                if len(self._forgotten) > FORGOTTEN_KEPT:
                    del self._forgotten[next(iter(self._forgotten))]
        for seq, (handed, _) in list(self._own.items()):
            if now - handed > limit:  # the bus took it but lost it: late here beats never
                log.debug("own publish %d did not come back from the bus in %.1f s; delivered here", seq, now - handed)
                self._deliver_own(seq)
        reconnecting = False
        if now - self._heard_self > limit and hasattr(self.bus, "reconnect"):
            log.warning("not even our own heartbeat came back for %.1f s: reconnecting the bus", now - self._heard_self)
            self._heard_self = now
            self.bus.reconnect()
            # The bus may come back before a beat sees it down: sync again all the
            # same, on the new connection (a beat from now), not on the old one.
            self._synced, reconnecting = False, True
        connected = bool(self.bus.connected) and not reconnecting
        if connected and not self._synced:
            # Just (re)connected: whatever we missed, and whatever the others
            # dropped of ours meanwhile, is exchanged again.
            self._synced = True
            self.seniority.rejoined()  # what we knew may be stale: we count as new
            self.send(wire.SyncRequest(self.node_id))
            gevent.spawn(self._answer_sync, "")
            self.quota.send_counts()
        elif not connected:
            self._synced = False
        self.send(wire.Heartbeat(self.node_id, self.seniority.next_count(self._synced)))
        # Until the bus is up, look again soon: the first sync should not wait a whole interval.
        self._timer = call_later(self.heartbeat_interval if self._synced else 0.05, self._beat)

    def _drop(self, node: str, why: str) -> None:
        self.seniority.forget(node)
        if self.peers.pop(node, None) is None:
            return
        log.warning("node %s left the cluster (%s); its members are removed", node, why)
        for waiting, _answers, done in self._requests.values():
            waiting.discard(node)
            if not waiting:
                done.set()
        self._synced_from.pop(node, None)
        self.quota.node_gone(node)  # its connections stop counting against quotas
        for ref in list(self.app_actors.values()):
            tell_if_alive(ref, NodeGone(node))

"""The Redis bus: the nodes of a cluster joined over Redis pub/sub.

How data flows (the node's hub thread is not monkey-patched, so no Redis
I/O may ever run on it)::

    hub: publish(data) --put--> outbox --> publisher thread --PUBLISH--> Redis
    hub: result.set(True) <--call_in_hub-- publisher thread <--reply--
                                             Redis --message--> listener thread
    hub: deliver(data)   <--call_in_hub-- listener thread

* The **listener** thread owns the subscription and the link's state: it
  connects, SUBSCRIBEs to the bus channel, hands arrivals to the hub in
  batches, PINGs when the line is quiet (a dead TCP connection answers
  nothing, so it is noticed), and on any loss reconnects with exponential
  back-off (0.1 s doubling to 5 s). It logs a loss once (WARNING) and the
  recovery once (INFO).
* The **publisher** thread owns a second connection (a subscribed
  connection can only subscribe): it takes what the hub queued, pipelines
  the PUBLISHes in order, and sets each result on the hub. Its connection
  follows the listener's: after every reconnect it connects anew.

Everything the node relies on is in ``actors/bus.py``; delivery is at most
once: what is published while Redis is unreachable is refused with
:class:`~actors.bus.BusDown`, and what was in flight when the link broke
may or may not have been delivered.

Redis pub/sub ignores database numbers (a PUBLISH in db 1 reaches a
subscriber in db 2), so a URL's db, when not 0, becomes part of the channel
name: ``actorcast:bus`` in db 0, ``actorcast:3:bus`` in db 3.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import gevent.event
from gevent import monkey
from redis.connection import Connection, parse_url
from redis.exceptions import RedisError

from actors.bus import BusDown, CallInHub, Deliver
from actors.runtime import describe_failure
from transport.errors import ConfigError

__all__ = ["RedisBus"]

log = logging.getLogger(__name__)

# Real OS primitives, even in a monkey-patched process (as actors/runtime.py does).
_OsThread = monkey.get_original("threading", "Thread")
_OsEvent = monkey.get_original("threading", "Event")
_OsQueue = monkey.get_original("queue", "SimpleQueue")
_OsEmpty = monkey.get_original("queue", "Empty")

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
#: How long the listener waits for data before it looks at its flags again:
#: the bound on how late it notices stop() or reconnect().
_POLL = 0.1
#: At most this many messages per hand-over to the hub (and per pipeline).
_BATCH = 256
_STOP = object()
#: Keys redis-py's URL parser may return that belong to a pool, not a connection.
_POOL_ONLY = ("max_connections", "timeout", "connection_class")


class RedisBus:
    """A :class:`~actors.bus.Bus` over Redis pub/sub (one channel per cluster).

    ``url`` is ``redis://[[user]:password@]host:port/db`` (``rediss://`` and
    ``unix://path?db=N`` work too); ``prefix`` names the cluster's channel,
    so clusters sharing a Redis stay apart. ``socket_timeout`` bounds every
    read and write (and so a PUBLISH to a Redis that stopped answering);
    the listener PINGs after ``health_check_interval`` seconds of silence
    and gives the connection up when nothing came back within
    ``socket_timeout`` more. ``stop()`` waits at most ``stop_timeout`` for
    the threads.

    >>> bus = RedisBus("redis://:secret@10.0.0.5:6379/0", prefix="chat")
    >>> bus.description, bus.channel
    ('redis://10.0.0.5:6379/0', b'chat:bus')
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "actorcast",
        *,
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        health_check_interval: float = 1.0,
        stop_timeout: float = 1.0,
    ) -> None:
        try:  # the messages name the problem, never the URL (it may hold a password)
            options = parse_url(url)
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL ({exc}): use redis://[:password@]host:port/db") from None
        self._connection_class = options.get("connection_class", Connection)
        for key in _POOL_ONLY:
            options.pop(key, None)
        db = int(options.get("db", 0))
        options.update(
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            health_check_interval=0,  # our own PINGs, which also notice silence
            protocol=2,  # pub/sub messages as plain lists of bytes, whatever the URL says
            decode_responses=False,  # the bus carries bytes
        )
        if "path" not in options:  # TCP: let the kernel probe an idle link too
            options["socket_keepalive"] = True
        try:  # an unknown ?option fails here, at configuration time, not in a thread
            self._connection_class(**options)
        except TypeError as exc:
            raise ConfigError(f"unsupported option in the Redis URL: {exc}") from None
        self._options = options
        self.prefix = prefix
        self._client_names = (_client_name(prefix, "listener"), _client_name(prefix, "publisher"))
        self.channel = (f"{prefix}:bus" if db == 0 else f"{prefix}:{db}:bus").encode()
        self.description = _describe(url, options, db)
        self.connected = False
        self._socket_timeout = socket_timeout
        self._health_interval = health_check_interval
        self._stop_timeout = stop_timeout
        self._deliver: Deliver | None = None
        self._call_in_hub: CallInHub | None = None
        self._outbox: Any = _OsQueue()
        self._stopping = _OsEvent()
        self._wake = _OsEvent()  # cuts a back-off wait short (stop, reconnect)
        self._reconnect_asked = False
        # Bumped by the listener at every (re)connect; the publisher's
        # connection is renewed when it sees a new one.
        self._generation = 0
        self._threads: list[Any] = []

    def __repr__(self) -> str:
        return f"<RedisBus {self.description} {self.channel.decode()}>"  # never the password

    # --- the Bus contract (called on the node's hub) -------------------------------

    def start(self, deliver: Deliver, call_in_hub: CallInHub) -> None:
        """Start the listener and publisher threads; connecting happens there."""
        self._deliver, self._call_in_hub = deliver, call_in_hub
        for name, target in (("listener", self._listen), ("publisher", self._publish_loop)):
            thread = _OsThread(target=target, name=f"actorcast-redis-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def publish(self, data: bytes) -> gevent.event.AsyncResult:
        """Queue ``data`` for the publisher thread; refused at once while disconnected."""
        done = gevent.event.AsyncResult()
        if self._stopping.is_set():
            done.set_exception(BusDown(f"Redis bus {self.description} is stopped"))
        elif not self.connected:
            done.set_exception(BusDown(f"Redis bus {self.description} is disconnected"))
        else:
            self._outbox.put((data, done))
        return done

    def reconnect(self) -> None:
        """Drop both connections and connect again (thread-safe; returns at once).

        For a node that has heard nothing on the bus, not even its own
        heartbeat, for too long: the connection may be half-open.
        """
        self._reconnect_asked = True
        self._wake.set()

    def stop(self) -> None:
        """Disconnect; returns within ``stop_timeout``. Later publishes get BusDown."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake.set()
        self.connected = False
        self._outbox.put(_STOP)
        deadline = time.monotonic() + self._stop_timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        # What the publisher never took is refused here, on the hub.
        refused = BusDown(f"Redis bus {self.description} is stopped")
        for item in _drain(self._outbox, None):
            if item is not _STOP:
                item[1].set_exception(refused)

    # --- on the hub, from the threads ------------------------------------------------

    def _arrive(self, batch: list[bytes]) -> None:
        if self._stopping.is_set() or self._deliver is None:
            return
        for data in batch:
            try:
                self._deliver(data)
            except Exception:  # the node's bug: said on one line, the rest still delivered
                log.debug("deliver raised", exc_info=True)
                log.error("Redis bus %s: deliver raised: %s", self.description, describe_failure(*sys.exc_info()))

    @staticmethod
    def _settle(outcomes: list[tuple[gevent.event.AsyncResult, BaseException | None]]) -> None:
        for done, error in outcomes:
            if error is None:
                done.set(True)
            else:
                done.set_exception(error)

    # --- the listener thread ------------------------------------------------------------

    def _listen(self) -> None:
        delay = _BACKOFF_FIRST
        ever_connected = False
        down_since = time.monotonic()
        warned = False  # this outage was logged: the rest of it goes to DEBUG
        while not self._stopping.is_set():
            self._reconnect_asked = False
            conn, failure, unexpected = None, None, False
            try:
                conn = self._subscribe()
                delay = _BACKOFF_FIRST
                self._generation += 1
                self.connected = True
                self._log_up(ever_connected, warned, down_since)
                ever_connected, warned = True, False
                self._pump(conn)
            except (RedisError, OSError) as exc:  # Redis gone, restarted, silent, refusing us
                failure = _reason(exc)
            except Exception:  # our bug or an answer we misread: logged, never the thread's end
                log.debug("Redis bus %s: listener failed", self.description, exc_info=True)
                failure, unexpected = describe_failure(*sys.exc_info()), True
            finally:
                if self.connected:
                    down_since = time.monotonic()
                self.connected = False
                if conn is not None:
                    conn.disconnect()
            if failure is None or self._stopping.is_set():
                continue  # stopped, or reconnect() asked: at once
            what = "connection lost" if ever_connected else "cannot connect"
            if warned:
                log.debug("Redis bus %s: still down (%s)", self.description, failure)
            else:
                log.log(
                    logging.ERROR if unexpected else logging.WARNING,
                    "Redis bus %s: %s (%s); reconnecting with back-off", self.description, what, failure,
                )
                warned = True
            self._pause(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    def _log_up(self, ever_connected: bool, warned: bool, down_since: float) -> None:
        if not ever_connected:
            log.info("Redis bus %s: connected (channel %s)", self.description, self.channel.decode())
        elif warned:
            log.info(
                "Redis bus %s: reconnected after %.1f s; delivery resumed",
                self.description, time.monotonic() - down_since,
            )
        else:  # after reconnect(), or a loss mended at the first try
            log.debug("Redis bus %s: reconnected", self.description)

    def _subscribe(self) -> Any:
        conn = self._connection_class(**self._options, client_name=self._client_names[0])
        subscribed = False
        try:
            conn.connect()
            conn.send_command("SUBSCRIBE", self.channel)
            reply = conn.read_response()
            if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                raise RedisError(f"unexpected answer to SUBSCRIBE: {reply!r:.80}")
            subscribed = True
        finally:
            if not subscribed:  # whatever went wrong goes on up; the half-open connection does not stay
                conn.disconnect()
        return conn

    def _pump(self, conn: Any) -> None:
        """Read the subscription until stop or reconnect(); raise when the link breaks."""
        heard = time.monotonic()
        pinged = False
        while not (self._stopping.is_set() or self._reconnect_asked):
            if conn.can_read(timeout=_POLL):
                batch: list[bytes] = []
                while len(batch) < _BATCH and conn.can_read(timeout=0):
                    reply = conn.read_response()
                    if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                        batch.append(reply[2])
                    # else: the answer to our PING ([b"pong", b""]); hearing it is the point
                heard, pinged = time.monotonic(), False
                if batch:
                    self._to_hub(self._arrive, batch)
                continue
            quiet = time.monotonic() - heard
            if quiet > self._health_interval + self._socket_timeout:
                raise TimeoutError(f"no answer from Redis for {quiet:.1f} s")
            if quiet > self._health_interval and not pinged:
                conn.send_command("PING")
                pinged = True
        if self._reconnect_asked:
            log.debug("Redis bus %s: reconnecting as asked", self.description)

    def _pause(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    # --- the publisher thread -----------------------------------------------------------

    def _publish_loop(self) -> None:
        conn: Any = None
        generation = -1
        stopping = False
        while not stopping:
            batch = []
            for item in [self._outbox.get(), *_drain(self._outbox, _BATCH - 1)]:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
            if not batch:
                continue
            sent, error = 0, None
            if stopping or not self.connected:
                error = BusDown(f"Redis bus {self.description} is disconnected")
            else:
                try:
                    if conn is None or generation != self._generation:  # new link: new connection
                        if conn is not None:
                            conn.disconnect()
                        generation = self._generation
                        conn = self._connection_class(**self._options, client_name=self._client_names[1])
                        conn.connect()
                    conn.send_packed_command(conn.pack_commands([("PUBLISH", self.channel, d) for d, _ in batch]))
                    for _ in batch:
                        conn.read_response()
                        sent += 1
                except (RedisError, OSError) as exc:  # the listener notices and logs the loss
                    log.debug("Redis bus %s: publish failed (%s)", self.description, _reason(exc))
                    error = BusDown(f"Redis bus {self.description}: {_reason(exc)}")
                except Exception:  # our bug: said once per failure, the thread goes on
                    log.debug("Redis bus %s: publisher failed", self.description, exc_info=True)
                    log.error("Redis bus %s: publish failed: %s", self.description, describe_failure(*sys.exc_info()))
                    error = BusDown(f"Redis bus {self.description}: publish failed")
                if error is not None and conn is not None:
                    conn.disconnect()  # replies may be left unread: start clean
                    conn = None
            self._hand_back(batch, sent, error)
        if conn is not None:
            conn.disconnect()

    def _hand_back(self, batch: list[tuple[bytes, Any]], sent: int, error: BaseException | None) -> None:
        """Settle the first ``sent`` results as done and the rest with ``error``, on the hub."""
        outcomes = [(done, None if i < sent else error) for i, (_, done) in enumerate(batch)]
        self._to_hub(self._settle, outcomes)

    def _to_hub(self, func: Any, arg: Any) -> None:
        try:
            self._call_in_hub(func, arg)  # type: ignore[misc]
        except Exception:  # the hub is gone: a thread that outlived stop_timeout, the node ended
            log.debug("Redis bus %s: the hub no longer takes callbacks", self.description, exc_info=True)


def _drain(queue: Any, limit: int | None) -> list[Any]:
    """What ``queue`` holds now (at most ``limit`` items), without waiting."""
    items: list[Any] = []
    while limit is None or len(items) < limit:
        try:
            items.append(queue.get_nowait())
        except _OsEmpty:
            break
    return items


def _describe(url: str, options: dict[str, Any], db: int) -> str:
    """The URL as logs may show it: scheme, host, port, db; never the credentials."""
    if "path" in options:
        return f"unix://{options['path']}?db={db}"
    scheme = url.split("://", 1)[0]
    return f"{scheme}://{options.get('host', 'localhost')}:{options.get('port', 6379)}/{db}"


def _client_name(prefix: str, role: str) -> str:
    """``chat-listener``: how CLIENT LIST shows our connections (no spaces allowed there)."""
    return re.sub(r"[^\w.:-]", "_", f"{prefix}-{role}", flags=re.ASCII)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

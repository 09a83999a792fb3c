"""The Redis bus: the nodes of a cluster joined over Redis pub/sub.

How data flows (the node's hub thread is not monkey-patched, so nothing on
it may block on Redis; see ``actors/redis_link.py`` for the hub's end)::

    I/O thread (redis-py): connect, AUTH, SELECT, SUBSCRIBE --Link--> hub
    hub: publish(data) --non-blocking send--> publisher connection --> Redis
    hub: deliver(data), result.set(True) <--io watchers, hiredis-- subscription, PUBLISH answers

* One **I/O thread** makes both connections with redis-py (a subscribed
  connection can only subscribe, so PUBLISHes need a second one), writes
  SUBSCRIBE, and hands the hub a :class:`~actors.redis_link.Link`: the hub's
  own descriptors of both sockets. It then only waits (over TLS it forwards
  bytes, see ``redis_link.Forward``) until the link ends, stop() or
  reconnect(); on any loss it reconnects both with exponential back-off
  (0.1 s doubling to 5 s). It logs a loss once (WARNING) and the recovery
  once (INFO).
* The **hub** writes the PUBLISHes (one ``send`` per burst), reads the
  subscription and the PUBLISH answers itself, PINGs when the line is quiet
  (a dead TCP connection answers nothing, so it is noticed), and gives the
  link up when Redis closes it, when the line stays silent, or when
  PUBLISHes go unanswered for ``socket_timeout``: no thread wake-up and no
  GIL hand-over per message.

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
from actors.redis_link import Forward, Link, make_link, publish_head
from actors.runtime import describe_failure
from transport.errors import ConfigError

__all__ = ["RedisBus"]

log = logging.getLogger(__name__)

# Real OS primitives, even in a monkey-patched process (as actors/runtime.py does).
_OsThread = monkey.get_original("threading", "Thread")
_OsEvent = monkey.get_original("threading", "Event")

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
#: Over TLS, how long the I/O thread waits for bytes before it looks at its flags again:
#: the bound on how late it notices stop() or reconnect() there.
_POLL = 0.1
#: Otherwise it waits for a wake-up (stop, reconnect, the link's end or start) at most this long.
_HOLD = 1.0
#: Keys redis-py's URL parser may return that belong to a pool, not a connection.
_POOL_ONLY = ("max_connections", "timeout", "connection_class")


class RedisBus:
    """A :class:`~actors.bus.Bus` over Redis pub/sub (one channel per cluster).

    ``url`` is ``redis://[[user]:password@]host:port/db`` (``rediss://`` and
    ``unix://path?db=N`` work too); ``prefix`` names the cluster's channel,
    so clusters sharing a Redis stay apart. ``socket_timeout`` bounds every
    read and write (and so a PUBLISH to a Redis that stopped answering);
    the I/O thread PINGs after ``health_check_interval`` seconds of silence
    and gives the connection up when nothing came back within
    ``socket_timeout`` more (or a PUBLISH went unanswered that long). ``stop()`` waits at most ``stop_timeout`` for
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
        self._head = publish_head(self.channel)
        self._link: Link | None = None  # the current connection's write side (on the hub)
        self._stopping = _OsEvent()
        self._wake = _OsEvent()  # cuts a back-off wait short (stop, reconnect)
        self._reconnect_asked = False
        self._generation = 0  # bumped by the I/O thread at every (re)connect
        self._thread: Any = None

    def __repr__(self) -> str:
        return f"<RedisBus {self.description} {self.channel.decode()}>"  # never the password

    # --- the Bus contract (called on the node's hub) -------------------------------

    def start(self, deliver: Deliver, call_in_hub: CallInHub) -> None:
        """Start the I/O thread; connecting happens there."""
        self._deliver, self._call_in_hub = deliver, call_in_hub
        self._thread = _OsThread(target=self._listen, name="actorcast-redis-io", daemon=True)
        self._thread.start()

    def publish(self, data: bytes) -> gevent.event.AsyncResult:
        """Queue ``PUBLISH data`` on the hub's end of the link; refused at once while disconnected."""
        link = self._link
        if link is not None and not link.broken and self.connected and not self._stopping.is_set():
            return link.publish(data)
        done = gevent.event.AsyncResult()
        state = "stopped" if self._stopping.is_set() else "disconnected"
        done.set_exception(BusDown(f"Redis bus {self.description} is {state}"))
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
        link, self._link = self._link, None
        if link is not None:
            link.flush()  # what was queued just now (a goodbye) goes out before the thread hangs up
        self._stopping.set()
        self._wake.set()
        self.connected = False
        if self._thread is not None:
            self._thread.join(self._stop_timeout)
        if link is not None:  # what Redis has not answered yet is refused here, on the hub
            link.close(BusDown(f"Redis bus {self.description} is stopped"))

    # --- on the hub ------------------------------------------------------------------------

    def _attach(self, link: Link) -> None:
        if self._stopping.is_set():
            link.close(BusDown(f"Redis bus {self.description} is stopped"))
            return
        if self._link is not None:  # never expected: the thread detaches first
            self._link.close(BusDown(f"Redis bus {self.description} reconnected"))
        self._link = link
        link.start(gevent.get_hub().loop, self._deliver, self._subscribed, self._ended)  # type: ignore[arg-type]

    def _subscribed(self, link: Link) -> None:
        if link is self._link and not self._stopping.is_set():
            self.connected = True  # here, so a publish on the hub never sees connected without a link
            self._wake.set()  # the thread says so in the log

    def _ended(self, link: Link) -> None:
        if self._link is link:
            self._link = None  # publishes are refused from now on; ``connected`` turns False once the
        self._wake.set()  # thread has logged the loss (it reconnects), so the log says it first

    def _detach(self, link: Link, reason: str) -> None:
        link.close(BusDown(f"Redis bus {self.description}: {reason}"), reason)

    # --- the I/O thread -----------------------------------------------------------------

    def _listen(self) -> None:
        delay = _BACKOFF_FIRST
        ever_connected = False
        down_since = time.monotonic()
        warned = False  # this outage was logged: the rest of it goes to DEBUG
        while not self._stopping.is_set():
            self._reconnect_asked = False
            sub = pub = link = forward = None
            failure, unexpected = None, False
            try:
                sub = self._connect(self._client_names[0])
                pub = self._connect(self._client_names[1])
                sub.send_command("SUBSCRIBE", self.channel)  # the hub reads the answer
                self._generation += 1
                link, forward = make_link(pub, sub, self._generation, self._head, self.description,
                                          self._health_interval, self._socket_timeout)
                self._to_hub(self._attach, link)
                self._hold(link, forward, ever_connected, warned, down_since)
            except (RedisError, OSError) as exc:  # Redis gone, restarted, silent, refusing us
                failure = _reason(exc)
            except Exception:  # our bug or an answer we misread: logged, never the thread's end
                log.debug("Redis bus %s: I/O thread failed", self.description, exc_info=True)
                failure, unexpected = describe_failure(*sys.exc_info()), True
            finally:
                up = link is not None and link.subscribed
                if up:
                    delay, ever_connected, warned = _BACKOFF_FIRST, True, False
                if link is not None and link.broken:  # the hub ended it: its reason is the first cause
                    failure, unexpected = link.reason, False
                if failure is not None and not self._stopping.is_set():  # said before anyone sees it down
                    warned = self._log_down(failure, unexpected, ever_connected, warned)
                if up:
                    down_since = time.monotonic()
                self.connected = False  # at once, for /ready
                if link is not None:  # the hub refuses what is unanswered and closes its descriptors
                    self._to_hub(self._detach, link, failure or "reconnecting")
                for conn in (sub, pub):
                    if conn is not None:
                        conn.disconnect()
                if forward is not None:
                    forward.close()
            if failure is None or self._stopping.is_set():
                continue  # stopped, or reconnect() asked: at once
            self._pause(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    def _hold(self, link: Link, forward: Forward | None, ever_connected: bool, warned: bool,
              down_since: float) -> None:
        """Wait (over TLS: forward bytes) until the link ends, stop() or reconnect(); log when it is up."""
        said = False
        while True:
            self._wake.clear()  # before the checks: a set() after them cuts the wait short
            if self._stopping.is_set() or link.broken:
                return
            if self._reconnect_asked:
                log.debug("Redis bus %s: reconnecting as asked", self.description)
                return
            if link.subscribed and not said:
                self._log_up(ever_connected, warned, down_since)
                said = True
            if forward is None:
                self._wake.wait(_HOLD)
            else:
                forward.pump(_POLL)

    def _log_down(self, failure: str, unexpected: bool, ever_connected: bool, warned: bool) -> bool:
        """Say the loss once per outage (the rest at DEBUG); returns True: this outage was said."""
        if warned:
            log.debug("Redis bus %s: still down (%s)", self.description, failure)
        else:
            what = "connection lost" if ever_connected else "cannot connect"
            log.log(
                logging.ERROR if unexpected else logging.WARNING,
                "Redis bus %s: %s (%s); reconnecting with back-off", self.description, what, failure,
            )
        return True

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

    def _connect(self, client_name: str) -> Any:
        conn = self._connection_class(**self._options, client_name=client_name)
        connected = False
        try:
            conn.connect()
            connected = True
        finally:
            if not connected:  # as in _subscribe: the error goes on up, the half-made socket does not stay
                conn.disconnect()
        return conn

    def _pause(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _to_hub(self, func: Any, *args: Any) -> None:
        try:
            self._call_in_hub(func, *args)  # type: ignore[misc]
        except Exception:  # the hub is gone: a thread that outlived stop_timeout, the node ended
            log.debug("Redis bus %s: the hub no longer takes callbacks", self.description, exc_info=True)


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

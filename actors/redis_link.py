"""The hub's end of the Redis bus: both connections, written and read by the hub itself.

Handing work between a thread and the hub costs a thread wake-up (a futex
call, a context switch) and a GIL hand-over on shared cores for every
hand-over: ~16% of a busy hub when each publish went to a thread, and a
quarter of a node's CPU when each arrival came from one. So once the I/O
thread has connected both connections with redis-py (connect, AUTH, CLIENT
SETNAME, SELECT, then SUBSCRIBE written on the listener) it hands the hub a
:class:`Link`: the hub's own descriptors of both sockets (duplicates, set
non-blocking), watched by gevent io watchers on the hub's loop (no
greenlet, no monkey-patching). The hub writes the PUBLISHes (one ``send``
per burst; what the kernel does not take waits for writability), reads the
subscription and the PUBLISH answers, and parses them with hiredis's
``Reader``, which is fed bytes (redis-py's own parsers only read sockets).
A timer on the hub PINGs a quiet line and ends a link that answers nothing.

Over TLS the hub cannot use the sockets directly: its ends are socket pairs
and the thread moves bytes between them and the TLS sockets
(:class:`Forward`, the old cost, for TLS only).

A link is one (re)connection's life. Every PUBLISH written on it waits in
``inflight`` (oldest first) until Redis answers (in order) or the link ends:
then everything still waiting is refused with :class:`~actors.bus.BusDown`,
``reason`` says why, and the bus wakes the thread to reconnect. Everything
is touched on the hub only; the thread reads ``broken`` and ``reason``.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import gevent.event
import hiredis

from actors.bus import BusDown
from actors.runtime import describe_failure

__all__ = ["Forward", "Link", "make_link", "publish_head"]

log = logging.getLogger("actors.redis_bus")

_READ, _WRITE = 1, 2  # libev/libuv's EV_READ and EV_WRITE, for loop.io
#: Bytes read per wake-up of a read watcher (the next wake-up reads on).
_CHUNK = 1 << 18
#: How often the hub's timer looks at the line (PING when quiet, give up when silent).
_TICK = 0.1
_PING = b"*1\r\n$4\r\nPING\r\n"


def publish_head(channel: bytes) -> bytes:
    """The fixed start of ``PUBLISH channel <data>`` in RESP (the data's length and bytes follow)."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(channel), channel)


def make_link(pub: Any, sub: Any, generation: int, head: bytes, description: str, health_interval: float,
              socket_timeout: float) -> tuple[Link, Forward | None]:
    """For the I/O thread: the hub's ends of redis-py's connected ``pub`` and subscribed ``sub``,
    and a :class:`Forward` for the thread when the hub cannot use the sockets themselves (TLS)."""
    socks = (pub._sock, sub._sock)  # noqa: SLF001 - redis-py's sockets: the hub uses duplicates
    if any(isinstance(sock, ssl.SSLSocket) or sock.gettimeout() is None for sock in socks):
        # TLS has its own framing, and a blocking socket's mode would change
        # with its duplicate's: the hub uses socket pairs, the thread forwards.
        pairs = (socket.socketpair(), socket.socketpair())
        hub_ends = [pair[0] for pair in pairs]
        forward: Forward | None = Forward(socks, [pair[1] for pair in pairs], socket_timeout)
    else:
        hub_ends = [socket.socket(fileno=os.dup(sock.fileno())) for sock in socks]
        forward = None
    for end in hub_ends:
        end.setblocking(False)
    return Link(generation, hub_ends[0], hub_ends[1], head, description, health_interval, socket_timeout), forward


class Forward:
    """For the I/O thread (TLS): moves bytes between redis-py's sockets and the hub's socket pairs."""

    def __init__(self, socks: tuple[Any, Any], thread_ends: list[socket.socket], timeout: float) -> None:
        self.pairs = list(zip(socks, thread_ends, strict=True))
        for end in thread_ends:
            end.settimeout(timeout)  # a hub that takes nothing for that long: the link is given up
        self.watched = [*socks, *thread_ends]

    def pump(self, timeout: float) -> None:
        """Wait at most ``timeout`` for bytes on either side and pass them on; raise when a side ends."""
        readable = select.select(self.watched, [], [], timeout)[0]
        for redis_sock, hub_side in self.pairs:
            if hub_side in readable:  # the hub's commands, to Redis
                _pass(hub_side, redis_sock, "the hub closed its end of the link")
            if redis_sock in readable:  # Redis's answers and messages, to the hub
                _pass(redis_sock, hub_side, "Redis closed the connection")

    def close(self) -> None:
        for _, end in self.pairs:
            end.close()


def _pass(source: Any, target: Any, ended: str) -> None:
    data = source.recv(_CHUNK)
    if not data:
        raise ConnectionError(ended)
    pending = getattr(source, "pending", None)  # TLS: decrypted bytes select cannot see
    while pending is not None and pending() > 0:
        data += source.recv(_CHUNK)
    target.sendall(data)


class Link:
    """One (re)connection's two connections, owned by the hub (see the module docstring)."""

    __slots__ = ("answered", "broken", "buf", "description", "draining", "flushing", "generation", "head", "heard",
                 "inflight", "loop", "on_end", "on_message", "on_subscribed", "owed_since", "pinged", "pub",
                 "pub_reader", "reason", "sub", "sub_reader", "subscribed", "timeout", "health", "watchers", "writer",
                 "written")

    def __init__(self, generation: int, pub: socket.socket, sub: socket.socket, head: bytes, description: str,
                 health_interval: float, socket_timeout: float) -> None:
        self.generation = generation
        self.description = description  # for messages: the URL without credentials
        self.pub, self.sub = pub, sub  # non-blocking; the hub's own descriptors (closed by the hub)
        self.head = head
        self.health, self.timeout = health_interval, socket_timeout
        self.pub_reader, self.sub_reader = hiredis.Reader(), hiredis.Reader()
        self.written = self.answered = 0  # PUBLISHes queued so far, and answered so far
        self.loop: Any = None  # the hub's loop, from start()
        self.buf = bytearray()  # written, not yet taken by the kernel
        self.inflight: deque[gevent.event.AsyncResult] = deque()
        self.writer: Any = None  # an io watcher while the kernel's buffer is full
        self.watchers: list[Any] = []  # the two read watchers and the timer
        self.flushing = False  # a flush is queued on the loop
        self.broken = False
        self.draining = False  # the link is failing: the subscription is read to its end first
        self.subscribed = False  # Redis confirmed the SUBSCRIBE (the thread reads it, for its log)
        self.reason = ""  # why the link ended, once it has
        self.heard = self.owed_since = time.monotonic()
        self.pinged = False
        self.on_message: Callable[[bytes], None] = _ignore
        self.on_subscribed: Callable[[Link], None] = _ignore
        self.on_end: Callable[[Link], None] = _ignore

    def start(self, loop: Any, on_message: Callable[[bytes], None], on_subscribed: Callable[[Link], None],
              on_end: Callable[[Link], None]) -> None:
        """On the hub: watch both connections; ``on_subscribed`` once Redis confirms the SUBSCRIBE."""
        self.loop, self.on_message, self.on_subscribed, self.on_end = loop, on_message, on_subscribed, on_end
        self.heard = self.owed_since = time.monotonic()
        for sock, callback in ((self.sub, self._read_sub), (self.pub, self._read_pub)):
            watcher = loop.io(sock.fileno(), _READ)
            watcher.start(callback)
            self.watchers.append(watcher)
        timer = loop.timer(_TICK, _TICK)
        timer.start(self._tick)
        self.watchers.append(timer)

    # --- writing PUBLISH --------------------------------------------------------------------

    def publish(self, data: bytes) -> gevent.event.AsyncResult:
        """Queue ``PUBLISH data``; written once the current greenlet lets the loop run (one ``send`` per burst)."""
        done = gevent.event.AsyncResult()
        self.inflight.append(done)
        self.written += 1
        buf = self.buf
        buf += self.head
        buf += b"$%d\r\n" % len(data)
        buf += data
        buf += b"\r\n"
        if not self.flushing and self.writer is None:
            self.flushing = True
            self.loop.run_callback(self.flush)
        return done

    def flush(self) -> None:
        """Write what the kernel takes now; watch for writability when it does not take it all."""
        self.flushing = False
        if self.broken or not self.buf:
            return
        try:
            sent = self.pub.send(self.buf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        del self.buf[:sent]
        if self.buf:
            if self.writer is None:
                self.writer = self.loop.io(self.pub.fileno(), _WRITE)
                self.writer.start(self.flush)
        elif self.writer is not None:
            self.writer.stop()
            self.writer.close()
            self.writer = None

    # --- reading (io watcher callbacks on the hub) --------------------------------------------

    def _read_sub(self) -> None:
        data = self._recv(self.sub)
        if data is None:
            return
        self.heard, self.pinged = time.monotonic(), False
        self.sub_reader.feed(data)
        self._take_sub()

    def _replies(self, reader: Any, where: str) -> Iterator[Any]:
        """The complete replies ``reader`` holds, one by one, until it holds no more or the link fails."""
        while not self.broken:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(f"unreadable answer {where}: {exc}")
                return
            if reply is False:
                return
            yield reply

    def _take_sub(self) -> None:
        for reply in self._replies(self.sub_reader, "on the subscription"):
            if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                try:
                    self.on_message(reply[2])
                except Exception:  # the node's bug: said on one line, the rest still delivered
                    log.debug("deliver raised", exc_info=True)
                    log.error("Redis bus %s: deliver raised: %s", self.description, describe_failure(*sys.exc_info()))
            elif type(reply) is list and reply and reply[0] == b"subscribe":
                self.subscribed = True
                self.on_subscribed(self)
            elif isinstance(reply, hiredis.ReplyError):  # SUBSCRIBE refused (an ACL, say)
                self._fail(f"ResponseError: {reply}")
            # else: the answer to our PING ([b"pong", b""]); hearing it is the point

    def _read_pub(self) -> None:
        data = self._recv(self.pub)
        if data is None:
            return
        self.pub_reader.feed(data)
        inflight = self.inflight
        for reply in self._replies(self.pub_reader, "to PUBLISH"):
            self.answered += 1
            self.owed_since = time.monotonic()
            if not inflight:
                continue  # never expected: Redis answers only what we sent
            done = inflight.popleft()
            if isinstance(reply, hiredis.ReplyError):  # refused (an ACL, say): that publish fails, the link stays
                done.set_exception(BusDown(f"Redis bus {self.description}: ResponseError: {reply}"))
            else:
                done.set(True)

    def _recv(self, sock: socket.socket) -> bytes | None:
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            return None
        if not data:
            self._fail("ConnectionError: Redis closed the connection")
            return None
        return data

    def _tick(self) -> None:
        now = time.monotonic()
        if self.written == self.answered:
            self.owed_since = now
        elif now - self.owed_since > self.timeout:
            self._fail(f"TimeoutError: no answer to PUBLISH from Redis for {now - self.owed_since:.1f} s")
            return
        quiet = now - self.heard
        if quiet > self.health + self.timeout:
            self._fail(f"TimeoutError: no answer from Redis for {quiet:.1f} s")
        elif quiet > self.health and not self.pinged:
            self.pinged = True
            try:
                self.sub.send(_PING)  # 14 bytes on a line we never write otherwise: the kernel takes them
            except OSError:
                pass  # a broken line: the silence ends the link

    # --- the end ------------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        if not self.draining:
            self.draining = True
            self._drain_sub()
        self.close(BusDown(f"Redis bus {self.description}: {reason}"), reason)

    def _drain_sub(self) -> None:
        # Before the descriptors close: what the subscription already holds is delivered. The publisher
        # connection's end can be read first, and a message Redis acknowledged there may wait here.
        while not self.broken:
            try:
                data = self.sub.recv(_CHUNK)
            except OSError:  # BlockingIOError: all read; anything else: nothing more to read
                return
            if not data:
                return
            self.sub_reader.feed(data)
            self._take_sub()

    def close(self, error: BaseException, reason: str = "") -> None:
        """End the link: what waits for an answer is refused with ``error``; the descriptors are closed."""
        if self.broken:
            return
        self.reason = reason or str(error)
        self.broken = True
        for watcher in (*self.watchers, *([self.writer] if self.writer is not None else [])):
            watcher.stop()
            watcher.close()
        self.watchers, self.writer = [], None
        self.buf.clear()
        inflight, self.inflight = self.inflight, deque()
        for done in inflight:
            done.set_exception(error)
        self.pub.close()
        self.sub.close()
        self.on_end(self)


def _ignore(*_args: object) -> None:
    pass

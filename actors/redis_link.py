"""The hub's end of the Redis bus: PUBLISHes written by the hub, answers counted by the I/O thread.

Handing every publish to a thread (a queue ``put`` that wakes it) cost a
busy node ~16% of its hub: each wake is a futex call, a context switch and a
GIL hand-over on shared cores. So the hub writes the PUBLISH commands itself,
without blocking: on a duplicate of the publisher connection's socket (its
own descriptor, set non-blocking) while redis-py's thread owns that
connection and only *reads* it (connecting, authenticating and parsing the
answers stay redis-py's). What the kernel does not take at once waits here
and goes out when the socket is writable again (a gevent io watcher on the
hub, no greenlet, no monkey-patching). Over TLS the bytes cannot go to the
socket directly; they go to one end of a socket pair and the thread passes
them on (the old cost, for TLS only).

A :class:`Link` is one connection pair's life: the I/O thread makes it at
every (re)connect and hands it to the hub; every PUBLISH written on it waits
in ``inflight`` (oldest first) until the thread hands back its answer
(Redis answers in order) or the link ends (everything still waiting is
refused with :class:`~actors.bus.BusDown`). Everything but ``written`` is
touched on the hub only; the thread only reads ``written`` (its watchdog:
PUBLISHes owed an answer for too long mean a Redis that stopped answering).
"""

from __future__ import annotations

import os
import socket
import ssl
from collections import deque
from typing import Any

import gevent.event

from actors.bus import BusDown

__all__ = ["Link", "make_link", "pass_on", "publish_head"]

_WRITE = 2  # libev/libuv's EV_WRITE, for loop.io


def publish_head(channel: bytes) -> bytes:
    """The fixed start of ``PUBLISH channel <data>`` in RESP (the data's length and bytes follow)."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(channel), channel)


def make_link(pub: Any, generation: int, head: bytes) -> tuple[Link, socket.socket | None]:
    """For the I/O thread: the hub's end of redis-py's publisher connection ``pub``, and the
    thread's end of a socket pair when the hub cannot write to the connection itself (TLS)."""
    sock = pub._sock  # noqa: SLF001 - redis-py's socket: the hub writes on a duplicate of it
    if isinstance(sock, ssl.SSLSocket) or sock.gettimeout() is None:
        # TLS has its own framing, and a blocking socket's mode would change
        # with its duplicate's: the hub writes to a socket pair, the thread sends.
        hub_end, forward = socket.socketpair()
        forward.setblocking(False)
    else:
        hub_end, forward = socket.socket(fileno=os.dup(sock.fileno())), None
    hub_end.setblocking(False)
    return Link(generation, hub_end, head), forward


def pass_on(forward: socket.socket, pub: Any) -> None:
    """For the I/O thread (TLS): send on ``pub`` what the hub wrote to its end of the socket pair."""
    chunks = []
    try:
        while chunk := forward.recv(1 << 16):
            chunks.append(chunk)
        raise ConnectionError("the hub closed its end of the link")
    except BlockingIOError:
        pass
    if chunks:
        pub.send_packed_command([b"".join(chunks)], check_health=False)  # a list: redis-py sends each item


class Link:
    """One (re)connection's write side, owned by the hub (see the module docstring)."""

    __slots__ = ("broken", "buf", "flushing", "generation", "head", "inflight", "loop", "sock", "watcher", "written")

    def __init__(self, generation: int, sock: socket.socket, head: bytes) -> None:
        self.generation = generation
        self.sock = sock  # non-blocking; the hub's own descriptor (closed by the hub)
        self.head = head
        self.written = 0  # PUBLISHes queued here so far (the only field the thread reads)
        self.loop: Any = None  # the hub's loop, set when the hub takes the link
        self.buf = bytearray()  # written, not yet taken by the kernel
        self.inflight: deque[gevent.event.AsyncResult] = deque()
        self.watcher: Any = None  # an io watcher while the kernel's buffer is full
        self.flushing = False  # a flush is queued on the loop
        self.broken = False

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
        if not self.flushing and self.watcher is None:
            self.flushing = True
            self.loop.run_callback(self.flush)
        return done

    def flush(self) -> None:
        """Write what the kernel takes now; watch for writability when it does not take it all."""
        self.flushing = False
        if self.broken or not self.buf:
            return
        try:
            sent = self.sock.send(self.buf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:  # the connection broke: the thread notices it too and reconnects
            self.close(BusDown(f"Redis bus: {type(exc).__name__}: {exc}"))
            return
        del self.buf[:sent]
        if self.buf:
            if self.watcher is None:
                self.watcher = self.loop.io(self.sock.fileno(), _WRITE)
                self.watcher.start(self.flush)
        elif self.watcher is not None:
            self._stop_watching()

    def settle(self, replies: list[BaseException | None]) -> None:
        """Redis answered the oldest ``len(replies)`` PUBLISHes: None for done, else why not."""
        if self.broken:
            return  # refused already, when the link ended
        inflight = self.inflight
        for error in replies:
            if not inflight:
                break
            done = inflight.popleft()
            if error is None:
                done.set(True)
            else:
                done.set_exception(error)

    def close(self, error: BaseException) -> None:
        """End the link: what waits for an answer is refused with ``error``; the descriptor is closed."""
        if self.broken:
            return
        self.broken = True
        if self.watcher is not None:
            self._stop_watching()
        self.buf.clear()
        inflight, self.inflight = self.inflight, deque()
        for done in inflight:
            done.set_exception(error)
        self.sock.close()

    def _stop_watching(self) -> None:
        self.watcher.stop()
        self.watcher.close()
        self.watcher = None

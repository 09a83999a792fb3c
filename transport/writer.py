"""Non-blocking delivery of finished frames to one socket.

Data flow: a channel actor calls :meth:`SocketWriter.offer` with the frame it
encoded once for the whole broadcast. ``offer`` tries one non-blocking
``send`` straight into the kernel; only when the socket would block does the
rest go into a bounded queue that a greenlet drains as the socket becomes
writable. So a fast subscriber costs one syscall and a slow one costs the
others nothing. A queue past ``max_buffer_bytes`` means the client is not
keeping up: the writer drops what it holds and asks its owner to close the
connection (Pusher 4100).

A writer is owned by one connection actor; channel actors only ever call
``offer``. Everything runs on the node's hub, and ``offer`` never yields, so
frames from several channels interleave whole, in the order they were offered.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable

import gevent
from gevent.socket import wait_write

from .ops_log import peer_address

__all__ = ["Offer", "SocketWriter"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER_BYTES = 1 << 20
CLOSE_GRACE_SECONDS = 5.0
DRAIN_POLL_SECONDS = 1.0

#: A writer's bound :meth:`SocketWriter.offer`, as channel actors keep it: True when the frame went out now.
Offer = Callable[[bytes], bool]


class SocketWriter:
    """Writes frames to one socket without ever blocking the caller.

    ``raw_socket`` must be a non-blocking socket (gevent's sockets are, under
    the hood). ``on_sent(frames, nbytes)`` reports frames the drain greenlet
    finished later (``offer`` reports its own via its return value);
    ``on_overflow()`` is called once when the queue passes its cap.
    """

    __slots__ = (
        "_blocked",
        "_closing",
        "_drainer",
        "_queue",
        "_queued_bytes",
        "_send",
        "_sock",
        "closed",
        "max_buffer_bytes",
        "on_overflow",
        "on_sent",
    )

    def __init__(
        self,
        raw_socket: socket.socket,
        *,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        on_sent: Callable[[int, int], None] | None = None,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self._sock = raw_socket
        self._send = raw_socket.send
        # Made when the socket first would block: an idle connection holds no
        # queue (an empty deque is ~600 bytes, and most sockets never need one).
        self._queue: deque[bytes | memoryview] | None = None
        self._queued_bytes = 0
        self._drainer: gevent.Greenlet | None = None
        # True while frames wait in the queue or the writer is closed: the hot
        # path then takes the slow branch. One flag keeps ``offer`` to one test.
        self._blocked = False
        self._closing = False
        self.closed = False
        self.max_buffer_bytes = max_buffer_bytes
        self.on_sent = on_sent
        self.on_overflow = on_overflow

    def offer(self, frame: bytes) -> bool:
        """Write ``frame`` now if the socket takes it, else queue it.

        Returns True when the whole frame went to the kernel now; False when
        it was queued (``on_sent`` counts it later) or dropped (closed writer).
        """
        if self._blocked:
            self._enqueue(frame)
            return False
        try:
            n = self._send(frame)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._broken(exc)
            return False
        if n == len(frame):
            return True
        if n and self.on_sent is not None:
            self.on_sent(0, n)  # the bytes went out now; the frame counts when it completes
        self._enqueue(memoryview(frame)[n:] if n else frame)
        return False

    def peer(self) -> str:
        """The client's IP address (for log lines; ``"unknown"`` once the socket is gone)."""
        return peer_address(self._sock)

    @property
    def draining(self) -> bool:
        """True while a greenlet is flushing queued bytes."""
        return self._drainer is not None

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for the socket to become writable."""
        return self._queued_bytes

    def close(self, final: bytes = b"", *, drop_queued: bool = False) -> None:
        """Stop accepting frames; send ``final`` after what is queued, then shut down.

        ``drop_queued`` discards queued frames not yet started (a slow consumer
        is not owed them); a partly written frame is always finished first so
        the final bytes arrive on a clean frame boundary.
        """
        if self._closing or self.closed:
            return
        self._closing = True
        self._blocked = True
        if self._queue is None:
            self._queue = deque()
        if drop_queued and len(self._queue) > 1:
            head = self._queue.popleft()
            self._queue.clear()
            self._queue.append(head)
            self._queued_bytes = len(head)
        if final:
            self._queue.append(final)
            self._queued_bytes += len(final)
        if not self._queue:
            self._shutdown()
        elif self._drainer is None:
            self._drainer = gevent.spawn(self._drain)

    def join(self, timeout: float | None = None) -> None:
        """Wait (bounded) until queued bytes are flushed or given up on."""
        drainer = self._drainer
        if drainer is not None:
            drainer.join(timeout)

    def abort(self) -> None:
        """Give up now: stop any drain and shut the socket down (before closing its fd)."""
        drainer = self._drainer
        if drainer is not None:
            drainer.kill(block=True, timeout=1)
        if not self.closed:
            self._shutdown()

    def _enqueue(self, data: bytes | memoryview) -> None:
        if self._closing or self.closed:
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.append(data)
        self._queued_bytes += len(data)
        self._blocked = True
        if self._queued_bytes > self.max_buffer_bytes:
            # The owner decides what to say (Pusher 4100) by calling close();
            # whatever it does, this writer takes no more frames.
            callback, self.on_overflow = self.on_overflow, None
            if callback is not None:
                callback()
            if not self._closing:
                self.close(drop_queued=True)
            return
        if self._drainer is None:
            self._drainer = gevent.spawn(self._drain)

    def _drain(self) -> None:
        sent_frames = sent_bytes = 0
        queue = self._queue
        give_up_at: float | None = None
        try:
            while queue and not self.closed:
                # Wake at least once a second: a close() while we wait must
                # start its grace period even if the peer never reads again.
                if self._closing and give_up_at is None:
                    give_up_at = time.monotonic() + CLOSE_GRACE_SECONDS
                try:
                    wait_write(self._sock.fileno(), timeout=DRAIN_POLL_SECONDS)
                except TimeoutError:
                    if give_up_at is not None and time.monotonic() >= give_up_at:
                        log.debug("gave up flushing a closing socket")
                        break
                    continue
                while queue:
                    data = queue[0]
                    try:
                        n = self._send(data)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        self._broken(exc)
                        return
                    self._queued_bytes -= n
                    sent_bytes += n
                    if n == len(data):
                        queue.popleft()
                        sent_frames += 1
                    else:
                        queue[0] = memoryview(data)[n:]
                        break
            if self._closing:
                self._shutdown()
            else:
                self._blocked = False
                self._queue = None  # drained: hold no queue while idle
        finally:
            self._drainer = None
            if sent_bytes and self.on_sent is not None:
                self.on_sent(sent_frames, sent_bytes)

    def _broken(self, exc: OSError) -> None:
        log.debug("socket write failed: %r", exc)
        self._shutdown()

    def _shutdown(self) -> None:
        self.closed = True
        self._closing = True
        self._blocked = True
        self._queue = None
        self._queued_bytes = 0
        try:
            # SHUT_RDWR also wakes the reader greenlet with EOF, ending the connection.
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone: nothing left to shut down

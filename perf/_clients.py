"""A client process: many raw WebSocket connections speaking just enough Pusher.

Started by the driver (``python -m perf._clients``); commands arrive as JSON
lines on stdin and events leave on stdout (see ``_proc``). One selector
(epoll) loop serves the command pipe and every socket, so a process holds a
few thousand connections with one thread.

Per connection: non-blocking connect, a hand-written HTTP upgrade, wait for
``pusher:connection_established``, send a masked ``pusher:subscribe``, wait
for ``pusher_internal:subscription_succeeded``; then parse unmasked server
frames forever. Every benchmark event carries ``seq`` and the broadcast time;
the receipt time is ``time.monotonic()`` right after ``recv`` returns.

Events: ``connect`` (phase done: ready/failed counts), ``got`` (every ready
socket of this process has message ``seq``: the pacing signal, with this
process's first and last receipt latency of ``seq``; receipts are handled in
time order), ``floor_got`` (the same for the same-socket floor frame),
``report`` (counts, duplicates, out-of-order, latency histogram), ``close``.
Unpaced (``paced: false``, the cluster rate run): one seq per channel, no
``got``; ``expect`` {finals} is answered by ``caught_up`` once every ready
socket has its channel's last seq. ``ports``/``labels``: per connection (a
histogram per label: subscriber on the publishing node or another one).
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
import sys
import time

import ujson

from perf._proc import die_with_parent, emit
from perf._stats import quantize_us
from perf._wire import EVENT, FLOOR_EVENT, handshake_request, subscribe_frame

CONNECTING, UPGRADING, WAIT_ESTABLISHED, WAIT_SUBSCRIBED, READY, DEAD = range(6)
GAVE_UP = 99  # tries value of a connection counted as failed
RETRIES = 3  # a full accept backlog refuses a few connects under a burst: try again
LINGER_RST = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT pile-up between runs
REPORTED = ("ready", "failed", "received", "dups", "out_of_order", "server_closed", "other", "per_seq", "hist",
            "hists", "max_us", "floor_received", "floor_hist", "floor_max_us", "errors")  # the ``report`` event


class Conn:
    __slots__ = ("buf", "channel", "label", "last", "port", "sock", "state", "tries")

    def __init__(self, channel: str, port: int = 0, label: int | None = None) -> None:
        self.channel = channel
        self.port = port
        self.label = label
        self.sock: socket.socket | None = None
        self.state, self.buf, self.tries = CONNECTING, b"", 0
        self.last = 0  # highest seq seen on this socket


class Clients:
    """All connections of this process and the stats of the current phase."""

    def __init__(self) -> None:
        self.sel = selectors.EpollSelector() if hasattr(selectors, "EpollSelector") else selectors.DefaultSelector()
        self.sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
        self.conns: list[Conn] = []
        self.pending: list[Conn] = []  # not yet started (in-flight cap)
        self.inflight = 0
        self.deadline = 0.0
        self.connecting = False
        self.cmd_buf = b""
        # frame payload -> (seq, t, is same-socket floor frame): parse once per message, so a
        # floor frame costs the clients what a benchmark event costs them.
        self.cache: dict[bytes, tuple[int, float, bool]] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        self.ready = self.failed = 0
        self.received = self.dups = self.out_of_order = self.server_closed = self.other = 0
        self.per_seq: dict[int, int] = {}
        self.first_us: dict[int, float] = {}  # seq -> this process's first receipt latency
        self.hist: dict[int, int] = {}
        self.hists: dict[int, dict[int, int]] = {}  # label -> histogram (when labels were given)
        self.finals: dict[str, int] = {}  # unpaced: channel -> the last seq expected (``expect``)
        self.max_us = 0.0
        self.floor_received = self.floor_max_us = 0
        self.floor_per_seq: dict[int, int] = {}
        self.floor_hist: dict[int, int] = {}
        self.errors: list[str] = []

    # --- connect phase --------------------------------------------------------

    def start_connect(self, cmd: dict) -> None:
        self.reset_stats()
        self.host, self.port = cmd["host"], cmd["port"]
        self.request = handshake_request(self.host, self.port, cmd["path"])
        self.paced = cmd.get("paced", True)
        ports = cmd.get("ports") or [self.port] * len(cmd["channels"])
        self.conns = list(map(Conn, cmd["channels"], ports, cmd.get("labels") or [None] * len(ports)))
        self.pending = list(reversed(self.conns))
        self.max_inflight = cmd.get("inflight", 64)
        self.deadline = time.monotonic() + cmd["timeout"]
        self.connecting = True
        self._fill()

    def _fill(self) -> None:
        while self.pending and self.inflight < self.max_inflight:
            self._open(self.pending.pop())

    def _open(self, c: Conn) -> None:
        c.tries += 1
        c.state, c.buf = CONNECTING, b""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((self.host, c.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self._failed(c, f"connect: {errno.errorcode.get(err, err)}")
            return
        c.sock = s
        self.inflight += 1
        self.sel.register(s, selectors.EVENT_WRITE, c)

    def _drop(self, c: Conn) -> None:
        """Forget a not-yet-ready connection's socket (frees an in-flight slot)."""
        if c.sock is not None:
            self.sel.unregister(c.sock)
            c.sock.close()
            c.sock = None
            self.inflight -= 1

    def _failed(self, c: Conn, why: str) -> None:
        """A connection attempt broke before READY: retry a few times, then count it."""
        self._drop(c)
        c.state = DEAD
        if self.connecting and c.tries < RETRIES:
            self.pending.append(c)
        else:
            c.tries = GAVE_UP
            self.failed += 1
            if len(self.errors) < 10:
                self.errors.append(why)
        self._fill()
        self._check_connected()

    def _check_connected(self) -> None:
        if self.connecting and self.ready + self.failed == len(self.conns):
            self.connecting = False
            emit({"ev": "connect", "ready": self.ready, "failed": self.failed, "errors": self.errors})

    def _connect_timeout(self) -> None:
        """The connect deadline passed: whatever is not READY now counts as failed."""
        for c in self.conns:
            if c.state != READY and c.tries != GAVE_UP:
                self._drop(c)
                c.state, c.tries = DEAD, GAVE_UP
                self.failed += 1
        self.pending.clear()
        self.errors.append("connect/subscribe timeout")
        self._check_connected()

    # --- socket events --------------------------------------------------------

    def on_writable(self, c: Conn) -> None:
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._failed(c, f"connect: {errno.errorcode.get(err, err)}")
            return
        c.sock.send(self.request)  # ~200 bytes into an empty buffer: always whole
        c.state = UPGRADING
        self.sel.modify(c.sock, selectors.EVENT_READ, c)

    def on_readable(self, c: Conn) -> None:
        try:
            data = c.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError as exc:
            data, why = b"", repr(exc)
        else:
            why = "eof"
        now = time.monotonic()
        if not data:
            if c.state == READY:
                self._lost(c, why)
            else:
                self._failed(c, why)
            return
        if c.state == UPGRADING:
            data = c.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                c.buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self._failed(c, "upgrade refused: " + data[:40].decode("latin-1"))
                return
            c.state, c.buf, data = WAIT_ESTABLISHED, b"", data[end + 4 :]
            if not data:
                return
        self.on_frames(c, data, now)

    def _lost(self, c: Conn, why: str) -> None:
        self.server_closed += 1
        if len(self.errors) < 10:
            self.errors.append("lost: " + why)
        self.sel.unregister(c.sock)
        c.sock.close()
        c.sock, c.state = None, DEAD

    def on_frames(self, c: Conn, data: bytes, now: float) -> None:
        """Split ``data`` into server frames; keep a partial frame for the next read."""
        buf = c.buf + data if c.buf else data
        size = len(buf)
        i = 0
        while size - i >= 2:
            n = buf[i + 1] & 0x7F
            if n < 126:
                head = 2
            elif n == 126:
                if size - i < 4:
                    break
                n, head = (buf[i + 2] << 8) | buf[i + 3], 4
            else:
                if size - i < 10:
                    break
                n, head = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
            end = i + head + n
            if end > size:
                break
            opcode = buf[i] & 0x0F
            payload = buf[i + head : end]
            i = end
            if opcode == 1 and c.state == READY:
                self.on_event(c, payload, now)
            elif opcode == 1:
                self.on_handshake_event(c, payload)
            elif opcode == 8:
                self._lost(c, "close frame " + payload[:40].hex())
                return
            # ping (9) / pong (10): nothing to do in a run of seconds
        c.buf = buf[i:] if i < size else b""

    def on_handshake_event(self, c: Conn, payload: bytes) -> None:
        event = ujson.loads(payload).get("event")
        if c.state == WAIT_ESTABLISHED and event == "pusher:connection_established":
            c.sock.send(subscribe_frame(c.channel))
            c.state = WAIT_SUBSCRIBED
        elif c.state == WAIT_SUBSCRIBED and event == "pusher_internal:subscription_succeeded":
            c.state = READY
            self.ready += 1
            self.inflight -= 1
            self._fill()
            self._check_connected()
        elif event in ("pusher:error", "pusher:subscription_error"):
            self._failed(c, payload[:120].decode("utf-8", "replace"))

    def on_event(self, c: Conn, payload: bytes, now: float) -> None:
        info = self.cache.get(payload)
        if info is None:
            msg = ujson.loads(payload)
            event = msg.get("event")
            if event != EVENT and event != FLOOR_EVENT:
                self.other += 1
                return
            data = ujson.loads(msg["data"])
            info = (data["seq"], data["t"], event == FLOOR_EVENT)
            if len(self.cache) > 4096:
                self.cache.clear()
            self.cache[payload] = info
        seq, t, floor = info
        if floor:
            self.on_floor(seq, (now - t) * 1e6)
            return
        if seq <= c.last:
            if seq == c.last:
                self.dups += 1
            else:
                self.out_of_order += 1
            return
        if seq != c.last + 1 and c.last:
            self.out_of_order += 1  # a gap: an earlier message is missing or late
        c.last = seq
        self.received += 1
        us = (now - t) * 1e6
        if us > self.max_us:
            self.max_us = us
        q = quantize_us(us)
        self.hist[q] = self.hist.get(q, 0) + 1
        if c.label is not None:
            hist = self.hists.setdefault(c.label, {})
            hist[q] = hist.get(q, 0) + 1
        if not self.paced:
            if seq == self.finals.get(c.channel):
                self.behind -= 1
                if self.behind == 0:
                    emit({"ev": "caught_up"})
            return
        count = self.per_seq[seq] = self.per_seq.get(seq, 0) + 1
        if count == 1:
            self.first_us[seq] = us
        if count == self.ready:
            emit({"ev": "got", "seq": seq, "first_us": self.first_us.pop(seq, us), "last_us": us})

    def expect(self, finals: dict[str, int]) -> None:
        """Unpaced: say ``caught_up`` once every ready socket has its channel's last seq."""
        self.finals = finals
        self.behind = sum(1 for c in self.conns if c.state == READY and c.last < finals.get(c.channel, 0))
        if not self.behind:
            emit({"ev": "caught_up"})

    def on_floor(self, seq: int, us: float) -> None:
        """A same-socket floor frame: outside the node's delivery checks, own latency and pacing."""
        self.other += 1  # not a benchmark event; the driver checks floor_received instead
        self.floor_received += 1
        self.floor_max_us = max(self.floor_max_us, us)
        q = quantize_us(us)
        self.floor_hist[q] = self.floor_hist.get(q, 0) + 1
        count = self.floor_per_seq[seq] = self.floor_per_seq.get(seq, 0) + 1
        if count == self.ready:
            emit({"ev": "floor_got", "seq": seq})

    # --- commands -------------------------------------------------------------

    def report(self) -> None:
        emit({"ev": "report", **{name: getattr(self, name) for name in REPORTED}})

    def close_all(self) -> None:
        for c in self.conns:
            if c.sock is not None:
                self.sel.unregister(c.sock)
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                c.sock.close()
                c.sock = None
        self.conns, self.pending, self.inflight, self.connecting = [], [], 0, False
        self.cache.clear()
        emit({"ev": "close"})

    def on_command(self, cmd: dict) -> None:
        op = cmd["op"]
        if op == "connect":
            self.start_connect(cmd)
        elif op == "report":
            self.report()
        elif op == "reset":
            self.reset_stats()
            self.ready = sum(c.state == READY for c in self.conns)
            if not cmd.get("keep_last"):  # unpaced runs go on counting each channel's seq
                for c in self.conns:
                    c.last = 0
            emit({"ev": "reset"})
        elif op == "expect":
            self.expect(cmd["finals"])
        elif op == "close":
            self.close_all()
        else:
            emit({"ev": "error", "message": f"unknown command {op!r}"})

    def run(self) -> None:
        select = self.sel.select
        stdin = sys.stdin.fileno()
        while True:
            timeout = 0.5
            if self.connecting:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self._connect_timeout()
                timeout = max(0.0, min(timeout, left))
            for key, mask in select(timeout):
                c = key.data
                if c is None:
                    chunk = os.read(stdin, 65536)
                    if not chunk:
                        return  # the driver closed our stdin: exit
                    self.cmd_buf += chunk
                    *lines, self.cmd_buf = self.cmd_buf.split(b"\n")
                    for line in lines:
                        if line.strip():
                            self.on_command(ujson.loads(line))
                elif c.sock is None:
                    continue  # closed earlier in this batch
                elif mask & selectors.EVENT_WRITE and c.state == CONNECTING:
                    self.on_writable(c)
                else:
                    self.on_readable(c)


def main() -> None:
    die_with_parent()
    try:
        Clients().run()
    except Exception as exc:  # tell the driver why, then fail loudly
        emit({"ev": "error", "message": f"client process crashed: {exc!r}"})
        raise


if __name__ == "__main__":
    main()

"""The floor server: what fanning out costs with nothing but ``socket.send``.

It accepts the same client processes' connections, answers the upgrade and
the subscribe with canned frames (so clients run the very same code), then,
per ``send`` command, builds the broadcast frame exactly as the node would
(``transport.protocol.event_frame``, once per channel) and writes it with a
plain loop of non-blocking ``send`` calls over every connection. That loop's
time is the floor for one broadcast: no actors, no greenlets, no queues.

Commands: ``count``, ``send`` {seq, payload_bytes}; events of the same name.
"""

from __future__ import annotations

import os
import random
import selectors
import socket
import sys
import time

import ujson

from perf._proc import die_with_parent, emit
from perf._stats import read_schedstat
from perf._wire import EVENT, make_data, unmask
from transport import protocol

UPGRADE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: perf-floor\r\n\r\n"
)


def answer_client(sock: socket.socket, held: bytes, established: bytes) -> tuple[bytes | None, str | None]:
    """Read from a client and answer its upgrade and its subscribe with canned frames.

    ``held``: what it sent before, not complete yet. Returns ``(held, None)`` while
    the subscribe is incomplete, ``(None, channel)`` once subscribed, ``(None, None)``
    when the client went away first.
    """
    try:
        data = held + sock.recv(65536)
    except OSError:
        data = b""
    if len(data) == len(held):  # EOF or error before subscribing
        return None, None
    if not data.startswith(b"\x81") and b"\r\n\r\n" in data:
        data = data[data.index(b"\r\n\r\n") + 4 :]
        sock.send(UPGRADE + established)
    # A masked text frame with a short payload (< 126 bytes): the subscribe.
    if len(data) >= 6 and data[0] == 0x81 and len(data) >= 6 + (data[1] & 0x7F):
        n = data[1] & 0x7F
        channel = ujson.loads(unmask(data[6 : 6 + n], data[2:6]))["data"]["channel"]
        sock.send(protocol.event_frame(channel, "pusher_internal:subscription_succeeded", {}))
        return None, channel
    return data, None


class Floor:
    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
        self.bufs: dict[socket.socket, bytes] = {}
        self.groups: dict[str, list] = {}  # channel -> bound send methods of its subscribers
        self.established = protocol.connection_established_frame("1.1", 120)
        self.cmd_buf = b""

    def on_client(self, sock: socket.socket) -> None:
        held, channel = answer_client(sock, self.bufs[sock], self.established)
        if held is not None:
            self.bufs[sock] = held
            return
        self.sel.unregister(sock)  # gone, or done reading: this socket is now send-only
        del self.bufs[sock]
        if channel is None:
            sock.close()
            return
        self.groups.setdefault(channel, []).append(sock.send)
        self.socks.append(sock)

    def send_pass(self, seq: int, payload_bytes: int) -> None:
        if seq == 1 and os.environ.get("PERF_FLOOR_ORDER") == "shuffle":
            # Diagnostic (README, "the 19k gap"): subscribe order decides how many client
            # processes a stretch of the loop wakes, so it decides CPU contention.
            for sends in self.groups.values():
                random.Random(1).shuffle(sends)
        groups = list(self.groups.items())
        t = time.monotonic()
        data = make_data(seq, t, payload_bytes)
        blocked = 0
        run0, wait0 = read_schedstat()  # CPU vs run-queue wait: was the loop slow or just not running?
        start = time.perf_counter()
        for channel, sends in groups:
            frame = protocol.event_frame(channel, EVENT, data)
            size = len(frame)
            for send in sends:
                try:
                    if send(frame) != size:
                        blocked += 1
                except BlockingIOError:
                    blocked += 1
        elapsed = time.perf_counter() - start
        run1, wait1 = read_schedstat()
        subs = sum(len(s) for _, s in groups)
        emit({"ev": "send", "seq": seq, "t": t, "seconds": elapsed, "subscribers": subs, "blocked": blocked,
              "cpu_s": (run1 - run0) / 1e9, "wait_s": (wait1 - wait0) / 1e9, "frame_bytes": size if groups else 0})

    def run(self) -> None:
        self.socks: list[socket.socket] = []
        emit({"ev": "started", "port": self.listener.getsockname()[1], "pid": os.getpid()})
        while True:
            for key, _ in self.sel.select(1.0):
                if key.data == "accept":
                    while True:
                        try:
                            sock, _ = self.listener.accept()
                        except BlockingIOError:
                            break
                        sock.setblocking(False)
                        self.bufs[sock] = b""
                        self.sel.register(sock, selectors.EVENT_READ, "client")
                elif key.data == "stdin":
                    chunk = os.read(sys.stdin.fileno(), 65536)
                    if not chunk:
                        return
                    self.cmd_buf += chunk
                    *lines, self.cmd_buf = self.cmd_buf.split(b"\n")
                    for line in lines:
                        cmd = ujson.loads(line)
                        if cmd["op"] == "count":
                            emit({"ev": "count", "subscribers": len(self.socks)})
                        elif cmd["op"] == "send":
                            self.send_pass(cmd["seq"], cmd["payload_bytes"])
                else:
                    self.on_client(key.fileobj)


def main() -> None:
    die_with_parent()
    Floor().run()


if __name__ == "__main__":
    main()

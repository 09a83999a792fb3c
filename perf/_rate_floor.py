"""The cluster rate run's floor: K processes that do nothing but what a node must (``--rate-floor``).

Each floor node is one single-threaded process with a ``selectors`` loop and
plain non-blocking sockets: it accepts the same client processes with canned
upgrade and subscribe answers (as ``perf._floor`` does), subscribes to one
Redis channel, and publishes at the step's rate exactly as a node host's
``rate`` command does (each publish due at a fixed time, lateness measured),
with the WebSocket frame built once at the origin. Every publish comes back
from Redis to every floor node, the origin included, and is written to that
node's subscribers of the channel with one ``send`` each. No actors, no
greenlets, no threads, no checks: what is left is the machine (Redis, the
sockets, the scheduler, the clients on the same cores). Run in the same
invocation as the nodes, it says how far from the machine's own floor the
cluster's latency is, and whether a target is reachable here at all.

Its RESP reading is the minimum for this one use (arrays of bulk strings and
integers: subscription messages and PUBLISH answers); it is a measuring tool,
not a client. Commands: the node host's ``peers``, ``counts``, ``rate`` and
``stop``; events of the same names.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys
import time
import uuid
from collections import deque

import ujson

from perf._floor import answer_client
from perf._proc import die_with_parent, emit
from perf._publisher import summarize
from perf._stats import quantize_us, read_proc_cpu
from perf._wire import EVENT, make_data
from transport import protocol

HELLO = b"\x00"  # a payload starting so is a floor node saying it is there (for ``peers``)


def _command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _parse(buf: bytearray, at: int) -> tuple[object, int] | None:
    """One RESP value from ``buf[at:]`` (arrays, bulk strings, integers, simple strings); None if incomplete."""
    end = buf.find(b"\r\n", at)
    if end < 0:
        return None
    kind, head = buf[at], bytes(buf[at + 1 : end])
    if kind == 0x24:  # $ bulk string
        n = int(head)
        if len(buf) < end + 2 + n + 2:
            return None
        return bytes(buf[end + 2 : end + 2 + n]), end + 4 + n
    if kind == 0x2A:  # * array
        items, pos = [], end + 2
        for _ in range(int(head)):
            got = _parse(buf, pos)
            if got is None:
                return None
            item, pos = got
            items.append(item)
        return items, pos
    if kind == 0x2D:  # - error
        raise RuntimeError(f"Redis refused: {head.decode(errors='replace')}")
    return head, end + 2  # : integer, + simple string


def _replies(sock: socket.socket, buf: bytearray, what: str) -> list[object]:
    """Every whole RESP value that ``buf`` holds once what ``sock`` has now is added (taken off ``buf``)."""
    chunk = sock.recv(262144)
    if not chunk:
        raise ConnectionError(f"Redis closed the {what}")
    buf += chunk
    replies, at = [], 0
    while (got := _parse(buf, at)) is not None:
        reply, at = got
        replies.append(reply)
    del buf[:at]
    return replies


class RateFloor:
    def __init__(self, redis_host: str, redis_port: int, channel: str) -> None:
        self.node_id = uuid.uuid4().hex[:8]
        self.channel = channel.encode()
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, self._accept)
        self.sel.register(sys.stdin.fileno(), selectors.EVENT_READ, self._stdin)
        self.sub = self._redis(redis_host, redis_port, self._on_sub)
        self.pub = self._redis(redis_host, redis_port, self._on_pub)
        self.sub.sendall(_command(b"SUBSCRIBE", self.channel))
        self.bufs: dict[socket.socket, bytes] = {}
        self.groups: dict[str, list] = {}  # channel -> bound send methods of its subscribers
        self.clients = 0
        self.sub_buf, self.pub_buf = bytearray(), bytearray()
        self.acks: deque[float] = deque()  # send time of each unanswered PUBLISH
        self.peers: set[str] = set()
        self.established = protocol.connection_established_frame("1.1", 120)
        self.cmd_buf = b""
        self.rate: dict | None = None  # the running step
        self.seqs: dict[str, int] = {}  # channel -> last seq published (kept across steps)

    def _redis(self, host: str, port: int, on_read) -> socket.socket:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, on_read)
        return sock

    def _publish(self, payload: bytes) -> None:
        self.pub.sendall(_command(b"PUBLISH", self.channel, payload))  # small: the kernel takes it whole
        self.acks.append(time.monotonic())

    # --- readers -----------------------------------------------------------------------

    def _accept(self, _sock: socket.socket) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            self.bufs[sock] = b""
            self.sel.register(sock, selectors.EVENT_READ, self._client)

    def _client(self, sock: socket.socket) -> None:
        held, channel = answer_client(sock, self.bufs[sock], self.established)
        if held is not None:
            self.bufs[sock] = held
            return
        self.sel.unregister(sock)  # gone, or send-only from now on (the clients send nothing more)
        del self.bufs[sock]
        if channel is None:
            sock.close()
            return
        self.groups.setdefault(channel, []).append(sock.send)
        self.clients += 1

    def _on_sub(self, sock: socket.socket) -> None:
        for reply in _replies(sock, self.sub_buf, "subscription"):
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                self._deliver(reply[2])

    def _deliver(self, payload: bytes) -> None:
        if payload.startswith(HELLO):
            peer = payload[1:].decode()
            if peer not in self.peers and peer != self.node_id:
                self.peers.add(peer)
                self._publish(HELLO + self.node_id.encode())  # so a newcomer learns of us too
            return
        cut = payload.index(b"\n")
        frame = payload[cut + 1 :]
        for send in self.groups.get(payload[:cut].decode(), ()):
            try:
                send(frame)
            except OSError:
                pass  # a full or gone client: the clients' report counts what is missing

    def _on_pub(self, sock: socket.socket) -> None:
        now = time.monotonic()
        for _ in _replies(sock, self.pub_buf, "publisher"):
            sent = self.acks.popleft()
            if self.rate is not None:
                q = quantize_us((now - sent) * 1e6)
                self.rate["acks"][q] = self.rate["acks"].get(q, 0) + 1

    def _stdin(self, _fd: int) -> None:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            raise SystemExit(0)
        self.cmd_buf += chunk
        *lines, self.cmd_buf = self.cmd_buf.split(b"\n")
        for line in lines:
            if line.strip():
                self._command(ujson.loads(line))

    def _command(self, cmd: dict) -> None:
        op = cmd["op"]
        if op == "peers":
            self._publish(HELLO + self.node_id.encode())  # the others learn of us as we poll
            emit({"ev": "peers", "peers": sorted(self.peers), "connected": True})
        elif op == "counts":
            emit({"ev": "counts", "connections": self.clients,
                  "subscriptions": {ch: len(self.groups.get(ch, ())) for ch in cmd.get("channels", [])}})
        elif op == "rate":
            rate = float(cmd["rate"])
            self.rate = {"channels": cmd["channels"], "rate": rate, "total": max(1, int(rate * cmd["seconds"])),
                         "payload": cmd["payload_bytes"], "sent": 0, "start": time.monotonic(), "late": {},
                         "acks": {}, "cpu0": read_proc_cpu(os.getpid())}
        elif op == "stop":
            emit({"ev": "stop", "seconds": 0.0})
            raise SystemExit(0)
        else:
            emit({"ev": "error", "message": f"unknown command {op!r}"})

    # --- the step's publisher --------------------------------------------------------------

    def _due(self) -> float | None:
        """Publish what is due; seconds until the next publish (None: no step running)."""
        r = self.rate
        if r is None:
            return None
        now = time.monotonic()
        while r["sent"] < r["total"] and r["start"] + r["sent"] / r["rate"] <= now + 0.0002:
            channel = r["channels"][r["sent"] % len(r["channels"])]
            seq = self.seqs[channel] = self.seqs.get(channel, 0) + 1
            t = time.monotonic()
            q = quantize_us(max(0.0, t - (r["start"] + r["sent"] / r["rate"])) * 1e6)
            r["late"][q] = r["late"].get(q, 0) + 1
            self._publish(channel.encode() + b"\n" + protocol.event_frame(channel, EVENT, make_data(seq, t, r["payload"])))
            r["sent"] += 1
        if r["sent"] < r["total"]:
            return max(0.0, r["start"] + r["sent"] / r["rate"] - time.monotonic())
        if "elapsed" not in r:
            r["elapsed"] = now - r["start"]
        if not self.acks or now - r["start"] - r["elapsed"] > 5:  # the last answers, bounded
            elapsed = r["elapsed"]
            out = summarize(r["sent"], elapsed + 1 / r["rate"], {ch: self.seqs[ch] for ch in r["channels"]
                                                                  if ch in self.seqs},
                            0, r["cpu0"], read_proc_cpu(os.getpid()), r["late"], r["acks"])
            emit({"ev": "rate", **out})
            self.rate = None
            return None
        return 0.001

    def run(self) -> None:
        emit({"ev": "started", "port": self.listener.getsockname()[1], "metrics_port": None, "pid": os.getpid(),
              "node_id": self.node_id})
        self._publish(HELLO + self.node_id.encode())
        while True:
            wait = self._due()
            for key, _ in self.sel.select(1.0 if wait is None else wait):
                key.data(key.fileobj)


def main() -> None:
    die_with_parent()
    p = argparse.ArgumentParser()
    p.add_argument("--redis", required=True, help="host:port")
    p.add_argument("--channel", required=True)
    args = p.parse_args()
    host, port = args.redis.rsplit(":", 1)
    RateFloor(host, int(port), args.channel).run()


if __name__ == "__main__":
    main()

"""The probe process: is the node still answering? Fresh connects and API calls, timed.

Started by ``perf/connections.py`` (``python -m perf._conn_probe``); one epoll
loop, commands and events as JSON lines (``perf._proc``). Two jobs:

* ``first`` {host, port, path, count, prefix, timeout}: ``count`` fresh
  clients one after another, client *k* on channel ``{prefix}{k}``. Once its
  ``subscription_succeeded`` arrives it reports ``subscribed`` {k, channel};
  the driver then has the node broadcast one event there (data carries the
  call's ``time.monotonic()``), and the client reports ``first_got`` {k, us:
  arrival - call}, closes (RST) and the next one starts. ``first_done`` at
  the end.
* ``probe_start`` {host, port, path, channel, ws_interval, api_interval,
  api_target, timeout} ... ``probe_stop``: every ``ws_interval`` a new
  WebSocket connects and subscribes to ``channel`` (timed from ``connect``
  to ``subscription_succeeded``) and closes at once (RST); every
  ``api_interval`` a signed GET ``api_target`` goes out on one kept-alive
  HTTP/1.1 connection, timed from send to the whole answer (one call at a
  time: a tick that finds the previous call unanswered is skipped, so a slow
  answer shows as one long call). ``probe_stop`` answers every sample:
  [kind, monotonic start, ms, status] with status "ok", an HTTP code, or why
  it failed; probes still running are reported "unfinished" with the time
  they had waited so far (a lower bound).
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

from perf._http import signed_query
from perf._proc import die_with_parent, emit
from perf._wire import EVENT, handshake_request, parse_data, subscribe_frame

__all__ = ["Prober"]

CONNECTING, UPGRADING, WAIT_ESTABLISHED, WAIT_SUBSCRIBED, WAIT_EVENT = range(5)
LINGER_RST = struct.pack("ii", 1, 0)


def split_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete unmasked server frames in ``buf`` as (opcode, payload), and the rest."""
    out, i, size = [], 0, len(buf)
    while size - i >= 2:
        n, head = buf[i + 1] & 0x7F, 2
        if n == 126:
            if size - i < 4:
                break
            n, head = (buf[i + 2] << 8) | buf[i + 3], 4
        elif n == 127:
            if size - i < 10:
                break
            n, head = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
        if i + head + n > size:
            break
        out.append((buf[i] & 0x0F, buf[i + head : i + head + n]))
        i += head + n
    return out, buf[i:]


class WsProbe:
    """One probing WebSocket client."""

    __slots__ = ("buf", "channel", "k", "sock", "state", "t0")

    def __init__(self, channel: str, k: int) -> None:
        self.channel, self.k = channel, k
        self.sock: socket.socket | None = None
        self.state, self.buf, self.t0 = CONNECTING, b"", time.monotonic()


class ApiProbe:
    """One kept-alive HTTP connection making one signed GET at a time."""

    def __init__(self, host: str, port: int, target: dict) -> None:
        self.host, self.port, self.target = host, port, target
        self.sock: socket.socket | None = None
        self.busy = False  # a call is out (or its connection is being made)
        self.connected = False
        self.registered = False  # sock is in the selector
        self.t0 = 0.0
        self.buf = b""

    def request(self) -> bytes:
        t = self.target
        path = f"/apps/{t['app_id']}/{t['what']}"
        query = signed_query("GET", path, t["key"], t["secret"])
        return f"GET {path}?{query} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()

    def answer(self) -> tuple[int, bool] | None:
        """(status, keep-alive) once the whole answer is in ``buf``, else None."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buf[:end].decode("latin-1").lower()
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip() == "content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return None
        self.buf = self.buf[end + 4 + length :]
        return int(head.split()[1]), "connection: close" not in head


class Prober:
    def __init__(self) -> None:
        self.sel = selectors.EpollSelector()
        self.sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
        self.cmd_buf = b""
        self.ws: set[WsProbe] = set()
        self.api: ApiProbe | None = None
        self.samples: list[list] = []
        self.first: dict | None = None  # the ``first`` command while it runs
        self.probing: dict | None = None
        self.next_ws = self.next_api = 0.0
        self.count = 0

    # --- WebSocket clients -------------------------------------------------------

    def open_ws(self, channel: str, k: int) -> None:
        p = WsProbe(channel, k)
        s = socket.socket()
        s.setblocking(False)
        err = s.connect_ex((self.host, self.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self.ws_done(p, f"connect: {errno.errorcode.get(err, err)}")
            return
        p.sock = s
        self.ws.add(p)
        self.sel.register(s, selectors.EVENT_WRITE, p)

    def close_ws(self, p: WsProbe) -> None:
        if p.sock is not None:
            self.sel.unregister(p.sock)
            p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            p.sock.close()
            p.sock = None
        self.ws.discard(p)

    def ws_done(self, p: WsProbe, status: str, us: float | None = None) -> None:
        """A probe ended (status "ok" or why not): record it, close, go on."""
        now = time.monotonic()
        self.close_ws(p)
        if self.first is not None:
            emit({"ev": "first_got", "k": p.k, "us": us, "status": status,
                  "connect_ms": round((now - p.t0) * 1e3, 3)})
            self.next_first(p.k + 1)
        else:
            self.samples.append(["ws", p.t0, round((now - p.t0) * 1e3, 3), status])

    def ws_writable(self, p: WsProbe) -> None:
        err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.ws_done(p, f"connect: {errno.errorcode.get(err, err)}")
            return
        p.sock.send(self.handshake)
        p.state = UPGRADING
        self.sel.modify(p.sock, selectors.EVENT_READ, p)

    def ws_readable(self, p: WsProbe) -> None:
        try:
            data = p.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            data, why = b"", repr(exc)
        else:
            why = "eof"
        now = time.monotonic()
        if not data:
            self.ws_done(p, why)
            return
        data = p.buf + data
        if p.state == UPGRADING:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                p.buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.ws_done(p, "upgrade refused: " + data[:40].decode("latin-1"))
                return
            p.state, data = WAIT_ESTABLISHED, data[end + 4 :]
        frames, p.buf = split_frames(data)
        for opcode, payload in frames:
            if opcode == 8:
                self.ws_done(p, "close frame " + payload[:40].hex())
                return
            if opcode == 1 and self.ws_event(p, ujson.loads(payload), now):
                return

    def ws_event(self, p: WsProbe, msg: dict, now: float) -> bool:
        """Advance one probe on a server event; True once it is done."""
        event = msg.get("event")
        if p.state == WAIT_ESTABLISHED and event == "pusher:connection_established":
            p.sock.send(subscribe_frame(p.channel))
            p.state = WAIT_SUBSCRIBED
        elif p.state == WAIT_SUBSCRIBED and event == "pusher_internal:subscription_succeeded":
            if self.first is None:
                self.ws_done(p, "ok")
                return True
            p.state = WAIT_EVENT
            emit({"ev": "subscribed", "k": p.k, "channel": p.channel})
        elif p.state == WAIT_EVENT and event == EVENT:
            _, t = parse_data(msg["data"])
            self.ws_done(p, "ok", (now - t) * 1e6)
            return True
        elif event in ("pusher:error", "pusher:subscription_error"):
            self.ws_done(p, ujson.dumps(msg)[:120])
            return True
        return False

    def next_first(self, k: int) -> None:
        if k > self.first["count"]:
            self.first = None
            emit({"ev": "first_done"})
        else:
            self.open_ws(f"{self.first['prefix']}{k}", k)

    # --- the API probe -------------------------------------------------------------

    def api_tick(self, now: float) -> None:
        api = self.api
        if api.busy:
            return  # the previous call is still out: its time grows, this tick is skipped
        api.busy, api.t0 = True, now
        if api.connected:
            self.api_send()
            return
        api.sock = socket.socket()
        api.sock.setblocking(False)
        api.buf = b""
        err = api.sock.connect_ex((api.host, api.port))
        if err not in (0, errno.EINPROGRESS):
            self.api_done(f"connect: {errno.errorcode.get(err, err)}", keep=False)
            return
        self.sel.register(api.sock, selectors.EVENT_WRITE, api)
        api.registered = True

    def api_send(self) -> None:
        self.api.sock.send(self.api.request())  # a few hundred bytes into an idle socket: whole

    def api_event(self, mask: int) -> None:
        api = self.api
        if not api.connected:
            err = api.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.api_done(f"connect: {errno.errorcode.get(err, err)}", keep=False)
                return
            api.connected = True
            self.sel.modify(api.sock, selectors.EVENT_READ, api)
            self.api_send()
            return
        try:
            data = api.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            why = repr(exc)
        else:
            why = "eof"
        if not data:
            self.api_done(why if api.busy else "idle close", keep=False)
            return
        api.buf += data
        answer = api.answer()
        if answer is not None:
            status, keep = answer
            self.api_done("ok" if status == 200 else str(status), keep)

    def api_done(self, status: str, keep: bool) -> None:
        api = self.api
        if api.busy:
            self.samples.append(["api", api.t0, round((time.monotonic() - api.t0) * 1e3, 3), status])
        api.busy = False
        if not keep:
            self.close_api()

    def close_api(self) -> None:
        api = self.api
        if api is not None and api.sock is not None:
            if api.registered:
                self.sel.unregister(api.sock)
            api.sock.close()
            api.sock, api.connected, api.registered = None, False, False

    # --- timers and commands ---------------------------------------------------------

    def timers(self) -> float:
        """Start what is due, expire what waited too long; seconds until the next due time."""
        now = time.monotonic()
        wait = 0.5
        timeout = (self.first or self.probing or {}).get("timeout", 10.0)
        for p in [p for p in self.ws if now - p.t0 > timeout]:
            self.ws_done(p, "timeout")
        if self.probing is not None:
            cfg = self.probing
            if now >= self.next_ws:
                self.count += 1
                self.open_ws(cfg["channel"], self.count)
                self.next_ws += cfg["ws_interval"]
            if now >= self.next_api:
                self.api_tick(now)
                self.next_api += cfg["api_interval"]
            if self.api.busy and now - self.api.t0 > timeout:
                self.api_done("timeout", keep=False)
            wait = min(self.next_ws, self.next_api) - now
        return max(0.0, min(wait, 0.05))

    def on_command(self, cmd: dict) -> None:
        op = cmd["op"]
        if op in ("first", "probe_start"):
            self.host, self.port = cmd["host"], cmd["port"]
            self.handshake = handshake_request(self.host, self.port, cmd["path"])
        if op == "first":
            self.first = cmd
            self.next_first(1)
        elif op == "probe_start":
            self.samples, self.probing = [], cmd
            self.api = ApiProbe(self.host, self.port, cmd["api_target"])
            self.next_ws = self.next_api = time.monotonic()
            emit({"ev": "probe_start"})
        elif op == "probe_stop":
            now = time.monotonic()
            self.probing = None
            for p in list(self.ws):
                self.samples.append(["ws", p.t0, round((now - p.t0) * 1e3, 3), "unfinished"])
                self.close_ws(p)
            if self.api is not None and self.api.busy:
                self.samples.append(["api", self.api.t0, round((now - self.api.t0) * 1e3, 3), "unfinished"])
            self.close_api()
            emit({"ev": "probe_stop", "samples": self.samples})
        else:
            emit({"ev": "error", "message": f"unknown command {op!r}"})

    def run(self) -> None:
        stdin = sys.stdin.fileno()
        while True:
            for key, mask in self.sel.select(self.timers()):
                target = key.data
                if target is None:
                    chunk = os.read(stdin, 65536)
                    if not chunk:
                        return
                    self.cmd_buf += chunk
                    *lines, self.cmd_buf = self.cmd_buf.split(b"\n")
                    for line in lines:
                        if line.strip():
                            self.on_command(ujson.loads(line))
                elif isinstance(target, ApiProbe):
                    if target.sock is not None and target is self.api:
                        self.api_event(mask)
                elif target.sock is not None:
                    if target.state == CONNECTING:
                        self.ws_writable(target)
                    else:
                        self.ws_readable(target)


def main() -> None:
    die_with_parent()
    try:
        Prober().run()
    except Exception as exc:
        emit({"ev": "error", "message": f"probe process crashed: {exc!r}"})
        raise


if __name__ == "__main__":
    main()

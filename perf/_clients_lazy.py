"""Clients that stay off the CPU while a fan-out runs (``--lazy-clients MS``).

On this machine the client processes share the node's cores, and reading
frames as they arrive costs them about as much CPU as sending them costs the
node: the node's fan-out then waits for the cores while clients read. These
clients behave as clients on other machines would, as far as the node can
tell: when frames start to arrive they sleep ``MS`` milliseconds (choose more
than one fan-out takes), then read everything at once. A frame's receipt time
is the kernel's (``SO_TIMESTAMPNS``: when the frame reached the client's
socket), not the time the process got round to reading it, so latencies and
the fan-out wall time still measure the node, and frames are handled in the
order the kernel received them (first and last receipt stay right).

Usage: ``python -m perf._clients_lazy MS`` instead of ``python -m perf._clients``;
same commands and events. A frame without a kernel stamp (should not happen
on Linux) is timed when read and counted in the report's ``unstamped``.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import sys
import time

import ujson

from perf._clients import CONNECTING, READY, REPORTED, Clients, Conn
from perf._proc import die_with_parent, emit

__all__ = ["LazyClients"]

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("qq")


class LazyClients(Clients):
    """:class:`Clients` that hold off reading while frames arrive, timed by the kernel."""

    def __init__(self, hold_ms: float) -> None:
        super().__init__()
        self.hold = hold_ms / 1000
        self.unstamped = 0

    def on_handshake_event(self, c: Conn, payload: bytes) -> None:
        super().on_handshake_event(c, payload)
        if c.state == READY:  # from now on every frame carries its arrival time
            c.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

    def report(self) -> None:
        emit({"ev": "report", **{name: getattr(self, name) for name in REPORTED}, "unstamped": self.unstamped})

    def _read_ready(self, c: Conn, offset: float) -> tuple[float, Conn, bytes] | None:
        """One READY socket's bytes and their kernel arrival time (monotonic); None when nothing came."""
        try:
            data, ancdata, _, _ = c.sock.recvmsg(262144, 64)
        except BlockingIOError:
            return None
        except OSError:
            data, ancdata = b"", []
        stamp = None
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(value)
                stamp = sec + nsec / 1e9 - offset
        if stamp is None:
            self.unstamped += 1 if data else 0
            stamp = time.monotonic()
        return stamp, c, data

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
            events = select(timeout)
            if any(key.data is not None and key.data.state == READY for key, _ in events):
                time.sleep(self.hold)  # frames are coming: let the fan-out finish without us
                events = select(0)
            offset = time.time() - time.monotonic()  # the kernel stamps in CLOCK_REALTIME
            arrived = []
            for key, mask in events:
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
                    continue
                elif mask & selectors.EVENT_WRITE and c.state == CONNECTING:
                    self.on_writable(c)
                elif c.state != READY:
                    self.on_readable(c)
                elif (got := self._read_ready(c, offset)) is not None:
                    arrived.append(got)
            arrived.sort(key=lambda a: a[0])  # in the order the kernel received them
            for stamp, c, data in arrived:
                if c.sock is None:
                    continue
                if data:
                    self.on_frames(c, data, stamp)
                else:
                    self._lost(c, "eof")


def main() -> None:
    die_with_parent()
    try:
        LazyClients(float(sys.argv[1])).run()
    except Exception as exc:  # tell the driver why, then fail loudly
        emit({"ev": "error", "message": f"client process crashed: {exc!r}"})
        raise


if __name__ == "__main__":
    main()

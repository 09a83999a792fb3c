"""The connect floor: the least a Python server can do per Pusher connect + subscribe.

One process, one thread, one ``epoll``: accept every pending connection
(non-blocking), read the HTTP upgrade head, compute ``Sec-WebSocket-Accept``
(SHA-1 + base64, as RFC 6455 requires), answer ``101`` and a
``pusher:connection_established`` frame in one ``send``; read the masked
``pusher:subscribe`` frame, unmask it, parse its JSON for the channel name and
answer ``pusher_internal:subscription_succeeded``. Then the socket is left
alone (idle, like a subscribed client nobody broadcasts to). No HTTP parser,
no actors, no greenlets, no validation: the CPU this process burns over a
connect storm, per connection, is the floor the node is compared with.

Commands (JSON lines): ``count`` -> ``count`` {subscribers, refused}.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import socket
import sys

import ujson

from perf._proc import die_with_parent, emit

__all__ = ["ConnectFloor"]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
UPGRADE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
KEY_HEADER = b"sec-websocket-key:"
ESTABLISHED = '{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"%d.%d\\",\\"activity_timeout\\":120}"}'
SUCCEEDED = '{"event":"pusher_internal:subscription_succeeded","channel":"%s","data":"{}"}'
HEAD, SUBSCRIBE = 0, 1


def text_frame(payload: bytes) -> bytes:
    """An unmasked server text frame (payloads here are < 64 KiB)."""
    n = len(payload)
    return (bytes((0x81, n)) if n < 126 else bytes((0x81, 126, n >> 8, n & 0xFF))) + payload


def unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


class ConnectFloor:
    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.epoll = select.epoll()
        self.epoll.register(self.listener.fileno(), select.EPOLLIN)
        self.epoll.register(sys.stdin.fileno(), select.EPOLLIN)
        self.conns: dict[int, list] = {}  # fd -> [socket, buffer, stage]
        self.idle: list[socket.socket] = []  # subscribed: held open, never read again
        self.refused = 0  # malformed handshakes (must stay 0: the clients are ours)
        self.next_id = 0
        self.cmd_buf = b""

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            self.conns[sock.fileno()] = [sock, b"", HEAD]
            self.epoll.register(sock.fileno(), select.EPOLLIN)

    def readable(self, fd: int) -> None:
        entry = self.conns[fd]
        sock = entry[0]
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.drop(fd)
            return
        data = entry[1] + chunk if entry[1] else chunk
        if entry[2] == HEAD:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                entry[1] = data
                return
            head = data[:end].lower()
            start = head.find(KEY_HEADER)
            if start < 0:
                self.refused += 1
                self.drop(fd)
                return
            start += len(KEY_HEADER)
            stop = head.find(b"\r\n", start)
            key = data[start : stop if stop >= 0 else end].strip()
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.next_id += 1
            established = text_frame((ESTABLISHED % (os.getpid(), self.next_id)).encode())
            sock.send(UPGRADE + accept + b"\r\n\r\n" + established)
            entry[2] = SUBSCRIBE
            data = data[end + 4 :]
        # the subscribe: a masked text frame with a 7-bit or 16-bit length
        if len(data) < 2:
            entry[1] = data
            return
        n, head_len = data[1] & 0x7F, 6
        if n == 126:
            if len(data) < 4:
                entry[1] = data
                return
            n, head_len = (data[2] << 8) | data[3], 8
        if len(data) < head_len + n:
            entry[1] = data
            return
        payload = unmask(data[head_len : head_len + n], data[head_len - 4 : head_len])
        channel = ujson.loads(payload)["data"]["channel"]
        sock.send(text_frame((SUCCEEDED % channel).encode()))
        self.epoll.unregister(fd)
        del self.conns[fd]
        self.idle.append(sock)

    def drop(self, fd: int) -> None:
        self.epoll.unregister(fd)
        self.conns.pop(fd)[0].close()

    def command(self) -> bool:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            return False
        self.cmd_buf += chunk
        *lines, self.cmd_buf = self.cmd_buf.split(b"\n")
        for line in lines:
            if line.strip() and ujson.loads(line)["op"] == "count":
                emit({"ev": "count", "subscribers": len(self.idle), "refused": self.refused})
        return True

    def run(self) -> None:
        listen_fd, stdin_fd = self.listener.fileno(), sys.stdin.fileno()
        emit({"ev": "started", "port": self.listener.getsockname()[1], "pid": os.getpid()})
        while True:
            for fd, _ in self.epoll.poll(1.0):
                if fd == listen_fd:
                    self.accept()
                elif fd == stdin_fd:
                    if not self.command():
                        return
                elif fd in self.conns:
                    self.readable(fd)


def main() -> None:
    die_with_parent()
    ConnectFloor().run()


if __name__ == "__main__":
    main()

"""``transport.tls.TlsSocket`` under the node's lazy writer: partial sends, retries, whole records.

A real TLS session over a socketpair with small kernel buffers: the server
side is a non-blocking :class:`TlsSocket` on the test's gevent hub (as on a
node's hub), the client a plain blocking ``ssl`` socket in a thread. The
client reads only once the server's writer had to queue, so every send past
the buffers would block; the bytes must still arrive whole and in order.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading

import pytest
from gevent.socket import wait_read, wait_write

from tests.conftest import wait_until
from tests.tls_certs import make_certs
from transport.tls import RECORD_BYTES, TlsSocket, tls_context
from transport.writer import SocketWriter

SMALL_BUFFER = 16384
HANDSHAKE_TIMEOUT = 5.0


@pytest.fixture
def certs(tmp_path):
    return make_certs(tmp_path)


def tls_pair(certs) -> tuple[TlsSocket, ssl.SSLSocket]:
    """A handshaken (server TlsSocket, client SSLSocket) over a socketpair with small buffers."""
    raw_server, raw_client = socket.socketpair()
    for sock in (raw_server, raw_client):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    raw_server.setblocking(False)
    raw_client.settimeout(HANDSHAKE_TIMEOUT)
    server = tls_context(certs.cert, certs.key).wrap_socket(raw_server, server_side=True,
                                                            do_handshake_on_connect=False)
    assert isinstance(server, TlsSocket)
    client_box: list = []

    def client_side() -> None:
        try:
            client_box.append(certs.client_context().wrap_socket(raw_client, server_hostname="127.0.0.1"))
        except BaseException as exc:  # reported by the test
            client_box.append(exc)

    thread = threading.Thread(target=client_side)
    thread.start()
    while True:  # the server's handshake as the node does it: never blocking, waits bounded
        try:
            server.do_handshake()
            break
        except ssl.SSLWantReadError:
            wait_read(server.fileno(), timeout=HANDSHAKE_TIMEOUT)
        except ssl.SSLWantWriteError:
            wait_write(server.fileno(), timeout=HANDSHAKE_TIMEOUT)
    thread.join(HANDSHAKE_TIMEOUT)
    client = client_box[0]
    if isinstance(client, BaseException):
        raise client
    return server, client


def read_exactly(sock: ssl.SSLSocket, size: int, into: bytearray, error: list) -> None:
    try:
        sock.settimeout(10)
        while len(into) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"EOF after {len(into)} of {size} bytes")
            into += chunk
    except BaseException as exc:  # reported by the test
        error.append(exc)


def test_a_send_that_would_block_raises_blockingioerror_and_a_big_one_reports_a_partial_count(certs):
    server, client = tls_pair(certs)
    try:
        big = bytes(range(256)) * (4 * RECORD_BYTES)  # 4 MiB: far past both buffers
        sent = server.send(big)
        assert 0 < sent < len(big)
        assert sent % RECORD_BYTES == 0  # whole slices only: the next call starts where OpenSSL stopped
        with pytest.raises(BlockingIOError):
            while True:  # fill the buffers until one more slice cannot start
                sent += server.send(memoryview(big)[sent:])
        got, error = bytearray(), []
        reader = threading.Thread(target=read_exactly, args=(client, len(big), got, error))
        reader.start()
        view = memoryview(big)
        while sent < len(big):  # the retry passes the very bytes the blocked write started with
            try:
                sent += server.send(view[sent:])
            except BlockingIOError:
                wait_write(server.fileno(), timeout=5)
        reader.join(10)
        assert not error, error
        assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
    finally:
        server.close()
        client.close()


def test_the_lazy_writer_delivers_big_and_small_frames_whole_and_in_order_over_tls(certs):
    server, client = tls_pair(certs)
    writer = SocketWriter(server, max_buffer_bytes=64 << 20)
    try:
        frames = [b"small-1", bytes(range(256)) * 4096, b"small-2", b"z" * (3 * RECORD_BYTES + 7), b"small-3"]
        frames += [bytes([i]) * (250_000 + i) for i in range(8)]
        results = [writer.offer(frame) for frame in frames]
        assert not all(results), "nothing was queued: the test did not exercise the slow path"
        assert writer.queued_bytes > 0
        expected = b"".join(frames)
        got, error = bytearray(), []
        reader = threading.Thread(target=read_exactly, args=(client, len(expected), got, error))
        reader.start()
        wait_until(lambda: writer.queued_bytes == 0 and not writer.draining, timeout=10)
        reader.join(10)
        assert not error, error
        assert len(got) == len(expected)
        assert hashlib.sha256(got).digest() == hashlib.sha256(expected).digest()
        assert not writer.closed
    finally:
        writer.abort()
        server.close()
        client.close()


def test_recv_returns_a_whole_record_even_when_asked_for_less(certs):
    # FirstRequest asks for 4 KiB; a record left half-read inside OpenSSL would
    # never make the descriptor readable again.
    server, client = tls_pair(certs)
    try:
        message = b"q" * 12000  # one TLS record
        client.sendall(message)
        wait_read(server.fileno(), timeout=5)
        got = bytearray()
        while len(got) < len(message):
            try:
                got += server.recv(100)
            except BlockingIOError:
                wait_read(server.fileno(), timeout=5)
        assert bytes(got) == message
        with pytest.raises(BlockingIOError):
            server.recv(100)
        client.close()
        wait_read(server.fileno(), timeout=5)
        assert server.recv(100) == b""  # the peer's close is EOF, not an SSLError
    finally:
        server.close()

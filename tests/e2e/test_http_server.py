"""The node's own HTTP/1.1 + WebSocket server against clients that misbehave, over real sockets.

Each test runs a node with short :class:`ServerLimits`, abuses it (stalls,
malformed heads, resets, bad close frames, descriptor exhaustion) and then
proves that a healthy WebSocket client subscribed before the abuse still
receives a broadcast, and that nothing was logged at ERROR or with a
traceback (a handler on the root logger at DEBUG; the node logs from its own
thread). Every wait is bounded.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import time
import urllib.parse

import pytest

from actors import App
from tests.conftest import wait_until
from tests.wsclient import OP_CLOSE, OP_TEXT, PusherClient, RawClient, frame_bytes
from transport.config import ServerLimits
from transport.http_signing import sign_request

HEADER_TIMEOUT = BODY_TIMEOUT = IDLE_TIMEOUT = 0.5
SLACK = 1.0  # scheduling on a busy CI machine; the lower bounds are exact
LIMITS = ServerLimits(header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT, idle_timeout=IDLE_TIMEOUT,
                      send_timeout=2.0, shutdown_grace=1.0)
pytestmark = pytest.mark.single_node(
    reason="per-socket HTTP server rules under short ServerLimits, which actorcast serve takes no flag for; "
    "logs are collected in this process", also=("redis2",))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UPGRADE = ("GET /app/app-key?protocol=7&client=py&version=1.0 {version}\r\nHost: 127.0.0.1\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n")
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class Captured(logging.Handler):
    """Every log record (all threads, DEBUG and up) and the test's stderr.

    The stderr part catches what bypasses logging: gevent prints the
    traceback of a greenlet that dies of an exception straight to stderr.
    """

    def __init__(self, capfd: pytest.CaptureFixture) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.capfd = capfd

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs(capfd):
    handler, root = Captured(capfd), logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def node(logs, make_node):
    return make_node(App(), limits=LIMITS)


@pytest.fixture
def healthy(node, open_client):
    """A client subscribed to "news" before the abuse starts."""
    client = open_client(node)
    client.subscribe("news")
    return client


def assert_still_serving(node, healthy, logs: Captured, *, quiet_from: int | None = None) -> None:
    """The healthy client gets a broadcast, a new client connects, no error was logged or printed.

    ``quiet_from``: index in ``logs.records`` from which not even INFO/WARNING is allowed.
    """
    node.broadcast("1", "news", "after-abuse", {"ok": True})
    assert json.loads(healthy.expect("after-abuse", "news")["data"]) == {"ok": True}
    with PusherClient.connect(node.port) as fresh:
        assert fresh.socket_id
    records = list(logs.records)
    bad = [r for r in records if r.levelno >= logging.ERROR or r.exc_info or r.stack_info]
    assert not bad, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in bad]
    if quiet_from is not None:
        loud = [r for r in records[quiet_from:] if r.levelno > logging.DEBUG]
        assert not loud, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in loud]
    err = logs.capfd.readouterr().err
    assert "Traceback" not in err and " failed with " not in err, err


# --- raw HTTP over a socket --------------------------------------------------------------


def tcp(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


class Conn:
    """One client TCP connection reading HTTP responses, every read bounded."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = tcp(port, timeout)
        self.buf = b""

    def _more(self, deadline: float) -> bytes:
        self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        return self.sock.recv(65536)

    def response(self, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        """The next response: (status, lower-cased headers, body)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            chunk = self._more(deadline)
            assert chunk, f"connection closed before a whole response head: {self.buf!r}"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            chunk = self._more(deadline)
            assert chunk, "connection closed inside a response body"
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split(" ")[1]), headers, body

    def eof(self, timeout: float = 5.0) -> bytes:
        """Read until the server closes; return what came (a reset fails the test)."""
        deadline, data = time.monotonic() + timeout, b""
        while chunk := self._more(deadline):
            data += chunk
        return self.buf + data

    def close(self) -> None:
        self.sock.close()


def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data``, read one response, then read to the end: the server must close cleanly."""
    conn = Conn(port)
    try:
        conn.sock.sendall(data)
        answer = conn.response()
        assert conn.eof() == b"", "bytes after an answer that ends the connection"
        return answer
    finally:
        conn.close()


def assert_json_error(answer: tuple[int, dict[str, str], bytes], status: int) -> None:
    got, headers, body = answer
    assert got == status, (got, body)
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)
    assert list(error) == ["error"] and isinstance(error["error"], str) and error["error"]


def signed_trigger(name: str, *, close: bool = False) -> bytes:
    body = json.dumps({"name": name, "channels": ["news"], "data": name}).encode()
    query = urllib.parse.urlencode(sign_request("POST", "/apps/1/events", {}, "app-key", "app-secret", body))
    return (f"POST /apps/1/events?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def server_idle(node) -> bool:
    """No HTTP connection is being served and only the healthy WebSocket is open."""
    return node.call(lambda: not node._server._conns and node._routes.open_sockets == 1)


# --- deadlines ---------------------------------------------------------------------------


def stall(port: int, count: int, trickle: bytes = b"") -> list[tuple[float, bytes]]:
    """``count`` connections that send ``trickle`` a byte every 0.2 s (all at once) or stay silent.

    Returns, per connection, the seconds from its connect to the server's
    close and the bytes the server sent; fails if any is still open after
    ``header_timeout`` + slack.
    """
    started = {tcp(port): time.monotonic() for _ in range(count)}
    got: dict[socket.socket, bytes] = dict.fromkeys(started, b"")
    closed_after: dict[socket.socket, float] = {}
    give_up, next_byte, sent = time.monotonic() + HEADER_TIMEOUT + SLACK, time.monotonic(), 0
    try:
        while len(closed_after) < count and time.monotonic() < give_up:
            pending = [sock for sock in started if sock not in closed_after]
            if trickle and time.monotonic() >= next_byte:
                assert sent < len(trickle), "a slow head was completed: the test is too slow"
                for sock in pending:
                    sock.send(trickle[sent:sent + 1])
                sent, next_byte = sent + 1, time.monotonic() + 0.2
            wake = min(next_byte, give_up) if trickle else give_up
            for sock in select.select(pending, [], [], max(wake - time.monotonic(), 0))[0]:
                data = sock.recv(65536)
                got[sock] += data
                if not data:
                    closed_after[sock] = time.monotonic() - started[sock]
    finally:
        for sock in started:
            sock.close()
    assert len(closed_after) == count, f"{count - len(closed_after)} stalled connections still open"
    return [(closed_after[sock], got[sock]) for sock in started]


def test_slowloris_heads_sent_a_byte_every_200_ms_get_408_within_header_timeout(node, healthy, logs):
    for after, data in stall(node.port, 30, UPGRADE.format(version="HTTP/1.1", extra="").encode()):
        assert HEADER_TIMEOUT - 0.05 <= after <= HEADER_TIMEOUT + SLACK, after
        assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
        assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]
    assert_still_serving(node, healthy, logs)


def test_silent_tcp_connections_are_closed_within_header_timeout_without_an_answer(node, healthy, logs):
    for after, data in stall(node.port, 30):
        assert HEADER_TIMEOUT - 0.05 <= after <= HEADER_TIMEOUT + SLACK, after
        assert data == b"", "a silent connection got bytes"
    assert_still_serving(node, healthy, logs)


def test_an_api_request_whose_body_never_completes_gets_408_within_body_timeout(node, healthy, logs):
    conn = Conn(node.port)
    conn.sock.sendall(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"name\"")
    sent = time.monotonic()
    answer = conn.response(timeout=BODY_TIMEOUT + SLACK)
    waited = time.monotonic() - sent
    assert conn.eof() == b""
    conn.close()
    assert_json_error(answer, 408)
    assert BODY_TIMEOUT - 0.05 <= waited <= BODY_TIMEOUT + SLACK
    assert_still_serving(node, healthy, logs)


def test_an_idle_kept_alive_connection_is_closed_after_idle_timeout(node, healthy, logs):
    conn = Conn(node.port)
    conn.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = conn.response()
    answered = time.monotonic()
    assert (status, body) == (200, b'{"ok":true}') and "connection" not in headers
    assert conn.eof(timeout=IDLE_TIMEOUT + SLACK) == b""
    assert IDLE_TIMEOUT - 0.05 <= time.monotonic() - answered <= IDLE_TIMEOUT + SLACK
    conn.close()
    assert_still_serving(node, healthy, logs)


# --- refusals: the right status, a JSON body the client can read, no traceback ------------


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        pytest.param(UPGRADE.format(version="HTTP/1.0", extra=f"Sec-WebSocket-Key: {RFC_KEY}\r\n"
                                    "Sec-WebSocket-Version: 13\r\n"), 400, id="http-1.0-upgrade"),
        pytest.param(UPGRADE.format(version="HTTP/1.1", extra="Sec-WebSocket-Version: 13\r\n"), 400, id="no-key"),
        pytest.param(UPGRADE.format(version="HTTP/1.1", extra=f"Sec-WebSocket-Key: {RFC_KEY}\r\n"
                                    "Sec-WebSocket-Version: 99\r\n"), 426, id="version-99"),
    ],
)
def test_failed_websocket_handshakes_get_400_or_426_never_402(node, healthy, logs, request_, status):
    answer = exchange(node.port, request_.encode())
    assert answer[0] != 402
    assert_json_error(answer, status)
    if status == 426:
        assert answer[1]["sec-websocket-version"] == "13"
    assert_still_serving(node, healthy, logs)


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        pytest.param(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, id="length-abc"),
        pytest.param(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, id="length-minus-5"),
        pytest.param(b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="nul-in-request-line"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431, id="100-kb-header"),
        pytest.param(b"GET /health HTTP/1.1\r\n" + b"a:b\r\n" * 2000 + b"\r\n", 431, id="2000-headers"),
    ],
)
def test_malformed_requests_get_a_json_error_the_client_can_read(node, healthy, logs, request_, status):
    assert_json_error(exchange(node.port, request_), status)
    assert_still_serving(node, healthy, logs)


def test_a_refused_client_that_keeps_sending_is_cut_off_after_a_bounded_number_of_bytes(node, healthy, logs):
    conn = Conn(node.port, timeout=1.5)
    conn.sock.sendall(b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.response()[0] == 400
    chunk, sent, cut_off = b"x" * 65536, 0, False
    deadline = time.monotonic() + 1.5  # under the 2 s linger: only the byte cap can end it this soon
    while sent < 64 << 20 and time.monotonic() < deadline:
        try:
            sent += conn.sock.send(chunk)
        except TimeoutError:
            break  # the server stopped reading but kept the socket: not cut off either
        except OSError:  # reset or broken pipe: the server closed on us
            cut_off = True
            break
    conn.close()
    assert cut_off, f"the server drained {sent >> 20} MiB after its 400"
    assert_still_serving(node, healthy, logs)


# --- resets --------------------------------------------------------------------------------


@pytest.mark.single_node(reason="reaches into one node's internals (node._server, node._routes)")
def test_clients_that_reset_mid_request_after_the_upgrade_or_mid_frame_log_nothing_above_debug(node, healthy, logs):
    quiet_from = len(logs.records)
    for i in range(40):
        sock = tcp(node.port)
        sock.sendall([b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpg",
                      b"POST /apps/1/events HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"na",
                      b"GET /health HTTP/1.1\r\n\r\n",  # a whole request: the reset hits the answer
                      b"G"][i % 4])
        reset(sock)
    for i in range(20):
        client = RawClient.connect(node.port)
        if i % 2:
            client.expect("pusher:connection_established")
            client.send_raw(frame_bytes(OP_TEXT, b'{"event":"pusher:subscribe","data":{"channel":"news"}}')[:9])
        reset(client.sock)
    wait_until(lambda: server_idle(node), message="every reset connection is cleaned up")
    assert_still_serving(node, healthy, logs, quiet_from=quiet_from)


# --- close frames -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "answer"),
    [
        pytest.param(struct.pack("!H", 1005), 1002, id="1005"),
        pytest.param(struct.pack("!H", 999), 1002, id="999"),
        pytest.param(b"\x03", 1002, id="one-byte"),
        pytest.param(struct.pack("!H", 1000) + b"bye", 1000, id="1000"),
        pytest.param(struct.pack("!H", 4000), 4000, id="4000"),
        pytest.param(b"", 1000, id="empty"),
        pytest.param(struct.pack("!H", 1000) + b"\xff\xfe", 1007, id="non-utf8-reason"),
    ],
)
def test_client_close_frames_are_echoed_or_answered_with_a_protocol_error(node, healthy, logs, payload, answer):
    with RawClient.connect(node.port) as client:
        client.expect("pusher:connection_established")
        client.send_frame(OP_CLOSE, payload)
        opcode, reply = client.recv_frame()
        assert opcode == OP_CLOSE
        assert struct.unpack("!H", reply[:2])[0] == answer
        assert client.sock.recv(1) == b""  # and then the server closes the TCP connection
    assert_still_serving(node, healthy, logs)


# --- the socket options and HTTP/1.1 connection handling -----------------------------------------


@pytest.mark.single_node(reason="inspects the sockets of one node's process by its one port")
def test_accepted_sockets_have_tcp_nodelay_set(node, healthy, logs):
    http = Conn(node.port)
    http.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert http.response()[0] == 200  # accepted, and now waiting for a next request
    ws = RawClient.connect(node.port)
    ws.expect("pusher:connection_established")
    peers = {http.sock.getsockname(), ws.sock.getsockname()}

    def nodelay_of_accepted_sockets() -> dict:
        found = {}
        for obj in gc.get_objects():
            if isinstance(obj, socket.socket) and obj.fileno() >= 0:
                try:
                    if obj.getsockname()[1] == node.port and obj.getpeername() in peers:
                        found[obj.getpeername()] = obj.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                except OSError:
                    continue  # a listening or closing socket
        return found

    assert node.call(nodelay_of_accepted_sockets) == {peer: 1 for peer in peers}
    http.close()
    ws.close()
    assert_still_serving(node, healthy, logs)


def test_requests_on_one_kept_alive_connection_each_get_their_answer(node, healthy, logs):
    conn = Conn(node.port)
    for name in ("first", "second"):
        conn.sock.sendall(signed_trigger(name))
        status, headers, body = conn.response()
        assert (status, json.loads(body)) == (200, {}), body
        assert "connection" not in headers
        assert healthy.expect(name, "news")["data"] == name
    conn.sock.sendall(b"GET /no-such-page HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.response()[0] == 404
    conn.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = conn.response()
    assert (status, headers["connection"]) == (200, "close")
    assert conn.eof() == b""
    conn.close()
    assert_still_serving(node, healthy, logs)


def test_pipelined_requests_in_one_send_are_answered_in_order(node, healthy, logs):
    conn = Conn(node.port)
    conn.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + signed_trigger("piped")
                      + b"GET /no-such-page HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [conn.response()[0] for _ in range(3)] == [200, 200, 404]
    assert healthy.expect("piped", "news")["data"] == "piped"
    conn.close()
    assert_still_serving(node, healthy, logs)


# --- out of file descriptors -------------------------------------------------------------------

EMFILE_NODE = r"""
import logging, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
from actors import App, Node
from transport.config import ServerLimits
node = Node([App()], host="127.0.0.1", port=0, metrics_port=None,
            limits=ServerLimits(header_timeout=30, idle_timeout=30, shutdown_grace=1))
node.start()
print(node.port, flush=True)
sys.stdin.read()  # until the test closes our stdin
node.stop()
"""


def test_running_out_of_descriptors_warns_at_most_once_a_second_and_accepting_resumes(tmp_path):
    stderr_path = tmp_path / "node.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", EMFILE_NODE, "150"], cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr)
    stalled: list[socket.socket] = []
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, f"the node did not start: {stderr_path.read_text()}"
        port = int(proc.stdout.readline())
        began = time.monotonic()
        stalled = [tcp(port) for _ in range(300)]  # the backlog takes them all; the node cannot
        warnings = lambda: [line for line in stderr_path.read_text().splitlines()  # noqa: E731
                            if line.startswith("WARNING") and "cannot accept" in line]
        wait_until(warnings, timeout=5, message="the node warns that it is out of descriptors")
        time.sleep(1.5)  # a window to count warnings in, not a synchronisation
        assert proc.poll() is None, "the node died"
        for sock in stalled:
            sock.close()
        freed = time.monotonic()
        with PusherClient.connect(port, timeout=5) as client:
            assert client.socket_id
        assert time.monotonic() - freed < 1.0, "accepting did not resume promptly"
        window = time.monotonic() - began
        text = stderr_path.read_text()
        assert 1 <= len(warnings()) <= int(window) + 1, warnings()
        assert "Traceback" not in text
        assert not [line for line in text.splitlines() if line.startswith(("ERROR", "CRITICAL"))]
        assert len(text) < 1_000_000
    finally:
        for sock in stalled:
            sock.close()
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        proc.stdout.close()

"""TLS: ``wss://`` and ``https://`` on the node's port (and the metrics port), with real clients.

The certificates are made in the test by ``trustme`` (a throwaway CA). The
clients are the official ones: websocket-client and pusher-js (under Node,
``forceTLS: true``, trusting the CA through ``NODE_EXTRA_CA_CERTS``) as
subscribers, the ``pusher`` Python SDK over ``https://`` as the publisher.
Misbehaving clients (plain HTTP on the TLS port, stalled, broken or reset
handshakes) must be closed within ``header_timeout`` with no traceback and
at most one DEBUG line each; logs are captured as in test_http_server.py.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import time
import urllib.parse

import pusher
import pusher.requests
import pytest

from actors import App, ConfigError, Node
from tests.conftest import wait_until
from tests.e2e import test_http_server as plain_http
from tests.e2e.test_cli import Serve, run_cli
from tests.e2e.test_http_server import HEADER_TIMEOUT, LIMITS, SLACK, Conn, reset, stall
from tests.jsdriver import PusherJsClient
from tests.tls_certs import Certs, make_certs
from tests.wsclient import PusherClient, RawClient
from transport.http_signing import sign_request
from transport.writer import SocketWriter

pytestmark = pytest.mark.single_node(
    reason="a TLS node built in-process with short ServerLimits; logs are collected in this process")

BIG_EVENT_CHARS = 1_000_000
BIG_EVENTS = 5  # 5 MB to one reader: past any socket buffer, so the writer must queue
# Handshakes take CPU, and the machine may be busy: only the tests of the deadline itself run
# with LIMITS' 0.5 s (parametrize "node" with it); the others have seconds to spare.
PATIENT = dataclasses.replace(LIMITS, header_timeout=5.0, body_timeout=5.0, idle_timeout=5.0, max_body_bytes=2 << 20)
TLS_PORT_SAYS = b"This port speaks TLS"
logs = plain_http.logs  # every log record of the test (all threads) and its stderr


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def node(request, logs, make_node, certs):
    limits = getattr(request, "param", PATIENT)
    app = App(max_event_bytes=2 * BIG_EVENT_CHARS, max_buffer_bytes=(BIG_EVENTS + 2) * BIG_EVENT_CHARS)
    return make_node(app, limits=limits, tls_cert=certs.cert, tls_key=certs.key, metrics_tls=True)


@pytest.fixture
def healthy(node, open_client, certs):
    """A wss:// client subscribed to "news" before anything else happens."""
    client = open_client(node, tls=certs.client_context())
    client.subscribe("news")
    return client


class TrustingBackend(pusher.requests.RequestsBackend):
    """The SDK's own backend, trusting our CA: with ``ssl=True`` it pins its bundled CA file."""

    def __init__(self, client, ca: str, **options):
        super().__init__(client, **options)
        self.options["verify"] = ca


def sdk(node, certs: Certs) -> pusher.Pusher:
    return pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port,
                         ssl=True, backend=TrustingBackend, ca=certs.ca, timeout=10)


def https(port: int, certs: Certs) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", port, context=certs.client_context(), timeout=5)


def https_trigger(node, certs: Certs, event: str, data: str) -> tuple[int, object]:
    """A signed trigger over https (the SDK refuses data past 30 KB on its side)."""
    body = json.dumps({"name": event, "channels": ["news"], "data": data}).encode()
    query = urllib.parse.urlencode(sign_request("POST", "/apps/1/events", {}, "app-key", "app-secret", body))
    conn = https(node.port, certs)
    try:
        conn.request("POST", f"/apps/1/events?{query}", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def assert_quiet(node, healthy, logs, since: int, *, per_connection: int, connections: int = 1,
                 refused: int = 0) -> None:
    """No traceback, at most ``per_connection`` lines each, all DEBUG but ``refused``; still serving.

    ``refused``: how many connections got an HTTP 4xx, which the server logs as
    it logs every refused request (one INFO line, rate-limited per client).
    """
    wait_until(lambda: node.call(lambda: not node._server._waiting and not node._server._conns),
               message="the server still holds a misbehaving connection")
    node.broadcast("1", "news", "after", {"ok": True})
    assert json.loads(healthy.expect("after", "news")["data"]) == {"ok": True}
    records = logs.records[since:]
    loud = [r for r in records if r.levelno > 10 or r.exc_info or r.stack_info]
    refusals = [r for r in loud if r.levelno == 20 and getattr(r, "kind", None) == "http_refused" and not r.exc_info]
    assert len(refusals) == refused and len(loud) == refused, [f"{r.levelname} {r.name}: {r.getMessage()}"
                                                              for r in loud]
    ours = [r.getMessage() for r in records if r.name.startswith("transport")]
    assert len(ours) <= per_connection * connections, ours
    err = logs.capfd.readouterr().err
    assert "Traceback" not in err, err


def client_hello() -> bytes:
    """A real ClientHello, as the first bytes a TLS client sends."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    hello = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        hello.do_handshake()
    return outgoing.read()


def read_to_eof(sock: socket.socket, timeout: float) -> tuple[float, bytes]:
    """Seconds until the server closes (EOF or reset) and what it sent."""
    started, data = time.monotonic(), b""
    sock.settimeout(timeout)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - started, data


# --- the official clients over TLS ---------------------------------------------------------------


def test_a_wss_subscriber_gets_a_trigger_the_python_sdk_sends_over_https(node, healthy, certs):
    client = sdk(node, certs)
    assert client.trigger("news", "hello", {"over": "https"}) == {}
    assert json.loads(healthy.expect("hello", "news")["data"]) == {"over": "https"}
    # The SDK keeps its connection alive: a second call, a query, on the same TLS session.
    assert client.channels_info(attributes=["subscription_count"]) == {
        "channels": {"news": {"subscription_count": 1}}}


def test_pusher_js_with_force_tls_connects_over_wss_and_receives(node, certs):
    options = {"forceTLS": True, "enabledTransports": ["ws", "wss"]}  # as the README shows
    with PusherJsClient("127.0.0.1", node.port, options=options, env={"NODE_EXTRA_CA_CERTS": certs.ca}) as js:
        js.wait_connected()
        assert js.expect("socket_open")["url"].startswith(f"wss://127.0.0.1:{node.port}/app/app-key")
        js.subscribe("news")
        js.expect_event("news", "pusher:subscription_succeeded")
        sdk(node, certs).trigger("news", "greet", {"from": "python"})
        assert js.expect_event("news", "greet")["data"] == {"from": "python"}


def test_the_probes_answer_over_https_on_one_kept_alive_connection(node, healthy, certs):
    conn = https(node.port, certs)
    try:
        answers = {}
        for path in ("/health", "/ready", "/usage"):
            conn.request("GET", path)
            answer = conn.getresponse()
            answers[path] = (answer.status, json.loads(answer.read()))
    finally:
        conn.close()
    assert answers["/health"] == (200, {"ok": True})
    assert answers["/ready"] == (200, {"ready": True})
    assert answers["/usage"][0] == 200 and answers["/usage"][1]["connections"]["total"] == 1, answers["/usage"]


def test_the_metrics_port_serves_over_tls(node, healthy, certs):
    conn = https(node.metrics_port, certs)
    try:
        conn.request("GET", "/metrics")
        answer = conn.getresponse()
        assert answer.status == 200
        assert re.search(rb'^actorcast_connections\{app_id="1"\} 1\.0$', answer.read(), re.MULTILINE)
    finally:
        conn.close()
    plain = Conn(node.metrics_port)
    plain.sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = plain.response()
    assert status == 400 and TLS_PORT_SAYS in body


def test_a_big_event_reaches_a_slow_tls_reader_whole(node, healthy, certs):
    # A 4 KB receive window and 5 MB to deliver: the writer's queue and the
    # partial TLS sends carry most of it, and every byte must arrive in order.
    slow = RawClient.connect(node.port, rcvbuf=4096, tls=certs.client_context())
    try:
        slow.expect("pusher:connection_established")
        slow.send_json({"event": "pusher:subscribe", "data": {"channel": "news"}})
        slow.expect("pusher_internal:subscription_succeeded", "news")
        events = [os.urandom(BIG_EVENT_CHARS // 2).hex() for _ in range(BIG_EVENTS)]
        assert https_trigger(node, certs, "big", events[0]) == (200, {})  # one of them as a 1 MB HTTPS body
        for data in events[1:]:
            node.broadcast("1", "news", "big", data)
        node.broadcast("1", "news", "last", "marker")

        def queued() -> int:
            return max((w.queued_bytes for w in gc.get_objects() if isinstance(w, SocketWriter)), default=0)

        assert wait_until(lambda: node.call(queued) > 0), "the slow reader's writer never had to queue"
        for data in events:
            got = slow.expect("big", "news", timeout=20)["data"]
            assert hashlib.sha256(got.encode()).digest() == hashlib.sha256(data.encode()).digest()
        assert slow.expect("last", "news")["data"] == "marker"
    finally:
        slow.sock.close()
    for _ in events:
        healthy.expect("big", "news", timeout=20)


def test_accepted_tls_sockets_have_tcp_nodelay_set(node, healthy, certs):
    conn = https(node.port, certs)
    conn.request("GET", "/health")
    assert conn.getresponse().read() == b'{"ok":true}'  # kept alive, waiting for a next request
    ws = PusherClient.connect(node.port, tls=certs.client_context())
    peers = {conn.sock.getsockname(), ws.ws.sock.getsockname()}

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
    conn.close()
    ws.ws.close()


# --- clients that misbehave ----------------------------------------------------------------------


def test_plain_http_to_the_tls_port_gets_a_plain_400_saying_so_and_is_closed(node, healthy, logs):
    mark = len(logs.records)
    conn = Conn(node.port)
    conn.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = conn.response()
    assert (status, headers["connection"]) == (400, "close")
    assert TLS_PORT_SAYS in json.loads(body)["error"].encode()
    assert conn.eof() == b""
    conn.close()
    assert_quiet(node, healthy, logs, mark, per_connection=1, refused=1)


def test_a_plain_ws_client_on_the_tls_port_is_refused_readably(node, healthy, logs):
    mark = len(logs.records)
    with pytest.raises(Exception, match="400"):  # websocket-client: "Handshake status 400 Bad Request"
        PusherClient.connect(node.port)
    assert_quiet(node, healthy, logs, mark, per_connection=1, refused=1)


@pytest.mark.parametrize("node", [LIMITS], indirect=True, ids=["header_timeout=0.5"])
@pytest.mark.parametrize("how", ["silent", "a ClientHello a byte every 200 ms", "a ClientHello, then silence"])
def test_a_stalled_handshake_is_closed_quietly_at_the_header_timeout(node, healthy, logs, how):
    mark = len(logs.records)
    if how == "silent":
        results = stall(node.port, 10)
    elif how.startswith("a ClientHello a byte"):
        results = stall(node.port, 10, client_hello())
    else:
        results, hello = [], client_hello()
        for _ in range(3):
            connected = time.monotonic()  # the deadline runs from accept
            sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
            sock.sendall(hello)  # the server answers, then waits for a Finished that never comes
            _, data = read_to_eof(sock, HEADER_TIMEOUT + SLACK)
            results.append((time.monotonic() - connected, data))
            sock.close()
    for after, data in results:
        assert HEADER_TIMEOUT - 0.05 <= after <= HEADER_TIMEOUT + SLACK, after
        assert how.endswith("then silence") or data == b""
    assert_quiet(node, healthy, logs, mark, per_connection=1, connections=len(results))


def _garbage_record(sock: socket.socket) -> None:
    sock.sendall(b"\x16\x03\x01\x00\x10" + b"not a handshake!")


def _binary(sock: socket.socket) -> None:
    sock.sendall(b"\x00\x01\x02\x03")


def _hello_then_reset(sock: socket.socket) -> None:
    sock.sendall(client_hello())
    sock.recv(1)  # the server is in the middle of its handshake
    reset(sock)


def _hello_then_close(sock: socket.socket) -> None:
    sock.sendall(client_hello())
    sock.close()


def _untrusting_client(sock: socket.socket) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(sock, server_hostname="127.0.0.1")  # no trust in our CA


def _reset_at_once(sock: socket.socket) -> None:
    reset(sock)


@pytest.mark.parametrize("abuse", [_garbage_record, _binary, _hello_then_reset, _hello_then_close,
                                   _untrusting_client, _reset_at_once], ids=lambda f: f.__name__.strip("_"))
def test_a_broken_or_aborted_handshake_is_closed_with_one_debug_line_at_most(node, healthy, logs, abuse):
    mark = len(logs.records)
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        abuse(sock)
        if sock.fileno() >= 0:
            after, _ = read_to_eof(sock, PATIENT.header_timeout + SLACK)
            assert after < PATIENT.header_timeout, "the server waited for the deadline instead of closing at once"
            sock.close()
    assert_quiet(node, healthy, logs, mark, per_connection=1, connections=3)


# --- files and processes -----------------------------------------------------------------------


def _bad_files(certs: Certs, tmp) -> dict[str, tuple[dict, str]]:
    """Case -> (Node TLS arguments, the file the error must name)."""
    other = certs.authority.issue_cert("other.example")
    other_key = tmp / "other-key.pem"
    other.private_key_pem.write_to_path(str(other_key))
    garbage = tmp / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = str(tmp / "missing.pem")
    return {
        "missing certificate": ({"tls_cert": missing, "tls_key": certs.key}, missing),
        "missing key": ({"tls_cert": certs.cert, "tls_key": missing}, missing),
        "certificate not PEM": ({"tls_cert": str(garbage), "tls_key": certs.key}, str(garbage)),
        "key not PEM": ({"tls_cert": certs.cert, "tls_key": str(garbage)}, str(garbage)),
        "key of another certificate": ({"tls_cert": certs.cert, "tls_key": str(other_key)}, str(other_key)),
        "no key given, none in the certificate file": ({"tls_cert": certs.cert}, certs.cert),
        "a key without a certificate": ({"tls_key": certs.key}, certs.key),
    }


CASES = ["missing certificate", "missing key", "certificate not PEM", "key not PEM", "key of another certificate",
         "no key given, none in the certificate file", "a key without a certificate"]


@pytest.mark.parametrize("case", CASES)
def test_a_wrong_or_missing_tls_file_is_a_one_line_error_at_start_naming_it(certs, tmp_path, case):
    arguments, named = _bad_files(certs, tmp_path)[case]
    node = Node(apps=[App()], host="127.0.0.1", port=0, metrics_port=None, **arguments)
    with pytest.raises(ConfigError) as raised:
        node.start()
    message = str(raised.value)
    assert named in message and "\n" not in message, message
    assert not node.running


@pytest.mark.parametrize("workers", ["1", "2"])
def test_actorcast_serve_with_a_missing_certificate_exits_2_with_one_line(tmp_path, workers):
    missing = str(tmp_path / "missing.pem")
    done = run_cli("--port", "0", "--metrics-port", "-1", "--workers", workers, "--tls-cert", missing)
    assert done.returncode == 2, done.stderr
    expected = f"actorcast: cannot read the TLS certificate file {missing}: No such file or directory"
    assert done.stderr.strip().splitlines() == [expected], done.stderr


PARENT_LISTENING = re.compile(r"actors\.workers: actorcast listening on wss://127\.0\.0\.1:(?P<port>\d+)/app/\S* "
                              r"\(metrics on (?P<metrics>https://\S+/metrics)\), 2 workers")
WORKERS_MET = re.compile(r"worker-\d+ actors\.cluster: node \d+ joined the cluster")


def test_every_worker_serves_tls_and_the_parent_serves_metrics_over_tls(certs):
    with socket.socket() as probe:  # a free port for all: the parent and its workers share it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve = Serve("--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0", "--workers", "2",
                  "--tls-cert", certs.cert, "--tls-key", certs.key, "--metrics-tls")
    clients: list[PusherClient] = []
    try:
        listening = serve.wait_for(PARENT_LISTENING, timeout=30)
        wait_until(lambda: sum(bool(WORKERS_MET.search(line)) for line in serve.output) == 2, timeout=15,
                   message="the two workers did not meet")
        clients = [PusherClient.connect(port, tls=certs.client_context(), timeout=10) for _ in range(12)]
        nodes = {client.socket_id.split(".")[0] for client in clients}
        assert len(nodes) == 2, f"all 12 clients on one worker: {nodes}"  # the kernel spreads them
        for client in clients:
            client.subscribe("news")
        node_like = type("Port", (), {"port": port})
        assert sdk(node_like, certs).trigger("news", "hello", "every worker") == {}
        for client in clients:
            assert client.expect("hello", "news", timeout=10)["data"] == "every worker"
        metrics_port = int(re.search(r":(\d+)/metrics$", listening["metrics"])[1])

        def connections() -> float | None:  # the workers write their counts every 0.5 s
            conn = https(metrics_port, certs)
            try:
                conn.request("GET", "/metrics")
                found = re.search(rb'^actorcast_connections\{app_id="1"\} (\S+)$', conn.getresponse().read(), re.MULTILINE)
            finally:
                conn.close()
            return float(found[1]) if found else None

        wait_until(lambda: connections() == 12.0, timeout=10, message="/metrics over https: 12 connections")
    finally:
        for client in clients:
            client.ws.shutdown()
        code = serve.stop(signal.SIGTERM, timeout=20) if serve.proc.poll() is None else serve.proc.returncode
        serve.kill()
    assert code == 0, serve.output
    assert not [line for line in serve.output if "Traceback" in line or " ERROR " in line], serve.output

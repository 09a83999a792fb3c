"""Fuzz one running node: thousands of hostile client messages and HTTP API requests.

A seeded generator (``random.Random(SEED)``: every run sends the same bytes) makes
client messages: valid ones (signed subscriptions, client events, sign-ins) and
mutations of them (wrong types, odd Unicode with ``"\\ud800"``/``"\\udfff"``
escapes, huge and empty strings, nested junk, NaN), non-object and broken JSON,
and rarely text frames that are not UTF-8. They go over a few connections, each
checked at a barrier (a subscribe to a fresh channel, answered in order) every few
messages. Between them go HTTP API requests, signed and not, with fuzzed bodies and
query strings (the HTTP itself stays well-formed).

What must hold: no HTTP 5xx; no log record at ERROR or above or with a traceback,
from any thread (a dying actor logs at ERROR); a connection is closed only where
the protocol says so (4009 after a failed sign-in, 1009 for an oversized message,
1007 for text that is not UTF-8) and always with a close frame; and a healthy
client on a public channel receives every marker broadcast during and after.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import time
from collections import Counter
from typing import Any
from urllib.parse import quote

import pytest
import websocket

from tests.wsclient import Closed, PusherClient
from transport.auth import make_channel_auth, make_user_auth
from transport.http_signing import sign_request

SEED = 20240607
WS_MESSAGES = 3000
CONNECTIONS = 4
HTTP_REQUESTS = 300
MARKERS = 40
TIMEOUT = 5.0
KEY, SECRET = "app-key", "app-secret"
HEALTHY = "fuzz-healthy"
MARKER = "fuzz-marker"
MAY_CLOSE = {4009, 1009, 1007}  # bad sign-in, message too big, text not UTF-8

ODD = ["\ud800", "\udfff", "\udc00\ud800", "\udbff\udfff", "\ud83d\ude00", "\x00", "\x1f", "\x7f", "\x85",
       "\u2028", "\ufeff", "\uffff", "\u202e", "e\u0301", "中文", "\\", '"', "\\u", "%00", "'", " ", ":"]
CHANNELS = ["fuzz-a", "fuzz-b", "cache-fuzz", "private-fuzz", "presence-fuzz", "private-encrypted-x",
            "#server-to-user-u1", "private-cache-fuzz"]
EVENTS = ["pusher:ping", "pusher:pong", "pusher:subscribe", "pusher:unsubscribe", "pusher:signin",
          "client-fuzz", "client-", "other", "pusher_internal:member_added", ""]


class _Records(logging.Handler):
    """Keeps the records at ERROR or above, or with a traceback, from every thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.bad.append(record)


@pytest.fixture
def log_records():
    handler = _Records()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # so that even a DEBUG record with a traceback is seen
    yield handler
    root.setLevel(old_level)
    root.removeHandler(handler)


# --- generating values ------------------------------------------------------------------


class Fuzzer:
    """Random JSON-ish values and strings, all drawn from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def string(self) -> str:
        rng = self.rng
        weights, makers = zip(
            (1, lambda: ""),
            (3, lambda: "".join(rng.choice(ODD) for _ in range(rng.randint(1, 6)))),
            (1, lambda: "x" * rng.choice([201, 1000, 10_000, 30_000])),
            (2, lambda: rng.choice(CHANNELS + EVENTS)),
            (3, lambda: "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 30)))),
        )
        return rng.choices(makers, weights)[0]()

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if r < 0.35 or depth > 3:
            return self.rng.choice([None, True, False, 0, -1, 2**63, 10**30, 1.5, 1e308, float("nan"),
                                    float("inf"), float("-inf")])
        if r < 0.7:
            return self.string()
        if r < 0.85:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        return {self.string(): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}

    def nested(self) -> Any:
        depth = self.rng.choice([50, 500, 1023, 1100, 3000])
        value: Any = self.string()
        for i in range(depth):
            value = [value] if i % 2 else {"k": value}
        return value


def to_text(rng: random.Random, value: Any) -> str | bytes:
    """JSON text for ``value``: mostly ASCII with escapes, sometimes raw UTF-8 (then bytes if it cannot be)."""
    try:
        if rng.random() < 0.8:
            return json.dumps(value)  # lone surrogates become \udXXX escapes
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        if rng.random() < 0.1:
            return text.encode("utf-8", "surrogatepass")  # encoded surrogates: not UTF-8
        return json.dumps(value)
    except (ValueError, RecursionError):
        return "[" * 2000  # too deep for the json module: broken JSON instead


class MessageFuzzer(Fuzzer):
    """Client messages for a connection with ``socket_id``: valid, mutated or plain junk."""

    def valid(self, socket_id: str) -> dict[str, Any]:
        rng = self.rng
        private = rng.choice(["private-fuzz", "private-cache-fuzz"])
        member = json.dumps({"user_id": f"u{rng.randrange(5)}", "user_info": {"name": "é\ud83d\ude00"}})
        user = json.dumps({"id": "u1", "user_info": {"x": 1}})
        return rng.choice([
            {"event": "pusher:ping", "data": {}},
            {"event": "pusher:subscribe", "data": {"channel": rng.choice(["fuzz-a", "fuzz-b", "cache-fuzz"])}},
            {"event": "pusher:subscribe",
             "data": {"channel": private, "auth": make_channel_auth(KEY, SECRET, socket_id, private)}},
            {"event": "pusher:subscribe", "data": {
                "channel": "presence-fuzz", "channel_data": member,
                "auth": make_channel_auth(KEY, SECRET, socket_id, "presence-fuzz", member)}},
            {"event": "pusher:unsubscribe", "data": {"channel": rng.choice(CHANNELS)}},
            {"event": "client-fuzz", "channel": rng.choice(["private-fuzz", "presence-fuzz"]), "data": {"n": 1}},
            {"event": "pusher:signin", "data": {"auth": make_user_auth(KEY, SECRET, socket_id, user), "user_data": user}},
            {"event": rng.choice(["my-event", "pusher:unknown", "client"]), "data": "x"},
        ])

    def mutated(self, message: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        message = json.loads(json.dumps(message))
        target = message["data"] if isinstance(message.get("data"), dict) and rng.random() < 0.6 else message
        keys = list(target) + ["extra"]
        key = rng.choice(keys)
        action = rng.random()
        if action < 0.15:
            target.pop(key, None)
        elif action < 0.6:
            target[key] = self.value()
        elif action < 0.9 and isinstance(target.get(key), str):
            value = target[key]
            cut = rng.randrange(len(value) + 1)
            target[key] = value[:cut] + self.string() + value[cut:]
        elif isinstance(message.get("data"), dict):
            message["data"] = json.dumps(message["data"])  # double-encoded, as some clients send
        return message

    def text_mutation(self, text: str) -> str:
        rng = self.rng
        pos = rng.randrange(len(text) + 1)
        return rng.choice([
            text[:pos],
            text[:pos] + rng.choice(["\\ud800", "\\udfff", "\\u0000", "NaN", "\\", '"', "}", "\x00"]) + text[pos:],
            text[:pos] + text[pos + 1:],
            text + text,
            text.replace(":", ":NaN,", 1),
        ])

    def next(self, socket_id: str) -> str | bytes:
        rng, valid = self.rng, lambda: self.valid(socket_id)
        client_event = {"event": "client-fuzz", "channel": "private-fuzz"}
        weights, makers = zip(
            (20, lambda: json.dumps(valid())),
            (40, lambda: to_text(rng, self.mutated(valid()))),
            (10, lambda: to_text(rng, {"event": self.string(), "channel": self.value(), "data": self.value()})),
            (5, lambda: to_text(rng, self.value())),  # not an object (or one without an event)
            (13, lambda: self.text_mutation(json.dumps(valid()))),
            (5, lambda: to_text(rng, {**client_event, "data": self.nested()})),
            (3, lambda: json.dumps({**client_event, "data": "y" * rng.choice([60_000, 70_000])})),
            (1, lambda: b'{"event":"client-fuzz","data":"\xff\xfe"}'),
            (3, lambda: rng.choice(["", " ", "null", "[]", "{}", '{"event":}', "\x00", '{"event":"pusher:ping"}' * 2])),
        )
        return rng.choices(makers, weights)[0]()


def may_close(text: str | bytes) -> bool:
    """Messages after which the protocol lets the server close the connection."""
    # Bytes are sent only for text frames that are not UTF-8.
    return isinstance(text, bytes) or "pusher:signin" in text or len(text.encode("utf-8")) > 60_000


class FuzzConnection:
    """One fuzzing client: sends, checks at barriers, reconnects after a permitted close."""

    def __init__(self, port: int, index: int) -> None:
        self.port = port
        self.index = index
        self.barriers = 0
        self.closes: list[int | None] = []
        self.sent: list[str | bytes] = []
        self.client = PusherClient.connect(port, timeout=TIMEOUT)

    def send(self, text: str | bytes) -> None:
        try:
            if isinstance(text, bytes):
                self.client.ws.send(text, opcode=websocket.ABNF.OPCODE_TEXT)
            else:
                self.client.send_text(text)
        except (OSError, websocket.WebSocketException) as exc:
            raise AssertionError(f"connection {self.index} was dropped; last sent: {self.sent[-3:]!r}") from exc
        self.sent.append(text[:300])

    def barrier(self, allow_close: bool) -> None:
        """Subscribe to a fresh channel and read up to its subscription_succeeded (answered in order)."""
        self.barriers += 1
        channel = f"barrier-{self.index}-{self.barriers}"
        try:
            with contextlib.suppress(OSError, websocket.WebSocketException):
                # Fails only when the server closed first: its close frame is read below.
                self.client.send_json({"event": "pusher:subscribe", "data": {"channel": channel}})
            while True:
                message = self.client.recv(TIMEOUT)
                if (message.get("event"), message.get("channel")) == ("pusher_internal:subscription_succeeded", channel):
                    break
                assert isinstance(message.get("event"), str), message  # whatever came back is a Pusher message
            self.client.unsubscribe(channel)
        except Closed as closed:
            assert allow_close and closed.code in MAY_CLOSE, (
                f"connection {self.index} closed with {closed}; last sent: {self.sent[-3:]!r}")
            self.closes.append(closed.code)
            self.client.ws.shutdown()
            self.client = PusherClient.connect(self.port, timeout=TIMEOUT)

    def close(self) -> None:
        self.client.ws.shutdown()


def _quote_query(params: list[tuple[str, str]]) -> str:
    # surrogatepass: a lone surrogate goes out as %ED%A0%80, which no UTF-8 decoder accepts.
    def q(text: str) -> str:
        return quote(text.encode("utf-8", "surrogatepass"), safe="")

    return "&".join(f"{q(k)}={q(v)}" for k, v in params)


class HttpFuzzer(Fuzzer):
    """Well-formed HTTP/1.1 API requests with fuzzed bodies and query strings."""

    ROUTES = [
        ("POST", "/apps/1/events"), ("POST", "/apps/1/batch_events"), ("GET", "/apps/1/channels"),
        ("GET", "/apps/1/channels/fuzz-a"), ("GET", "/apps/1/channels/presence-fuzz"),
        ("GET", "/apps/1/channels/presence-fuzz/users"), ("GET", "/apps/1/channels/fuzz-a/users"),
        ("POST", "/apps/1/users/nobody/terminate_connections"), ("POST", "/users/nobody/terminate_connections"),
        ("GET", "/apps/2/channels"), ("POST", "/apps/1/events/extra"),
    ]

    def event(self) -> dict[str, Any]:
        rng = self.rng
        body: dict[str, Any] = {"name": rng.choice(["fuzz-event", "client-x", "evt"]),
                                "channel": rng.choice(["fuzz-a", "fuzz-b", "private-fuzz", "presence-fuzz"]),
                                "data": rng.choice(["x", '{"a":1}', {"n": 1}])}
        for _ in range(rng.randint(0, 3)):
            key = rng.choice(["name", "channel", "channels", "data", "socket_id", "info", "extra"])
            body[key] = self.value() if rng.random() < 0.7 else self.string()
        return body

    def body(self, method: str, path: str) -> bytes:
        rng, r = self.rng, self.rng.random()
        if method == "GET" or r > 0.9:
            return rng.choice([b"", b"{", b"\xff\xfe{}", b'{"name":"e","channel":"fuzz-a","data":"\xed\xa0\x80"}',
                               b"null", b'{"name":"e","channel":"fuzz-a","data":NaN}', b"x" * 100_000])
        if r < 0.5:
            value: Any = {"batch": [self.event() for _ in range(rng.randint(0, 12))]} if "batch" in path else self.event()
        else:
            value = self.value() if r < 0.8 else self.nested()
        text = to_text(rng, value)
        return text if isinstance(text, bytes) else text.encode("utf-8")

    def query(self, method: str, path: str, body: bytes) -> str:
        rng = self.rng
        extra = [(rng.choice(["info", "filter_by_prefix", "auth_key", "x", "INFO"]),
                  rng.choice(["user_count", "subscription_count,user_count", "presence-", self.string()[:500]]))
                 for _ in range(rng.randint(0, 2))]
        r = rng.random()
        if r < 0.5:  # signed, as an SDK would
            # A lone surrogate cannot be signed as the server will decode it: leave those out.
            plain = {k: v for k, v in extra if not any("\ud800" <= c <= "\udfff" for c in v)}
            signed = sign_request(method, path, plain, KEY, SECRET, body)
            return _quote_query(list(signed.items()))
        if r < 0.75:  # signed, then tampered with
            signed = sign_request(method, path, {}, KEY, SECRET, body, timestamp=rng.choice([None, 0, 10**12]))
            params = list(signed.items()) + extra
            rng.shuffle(params)
            return _quote_query(params[: len(params) - rng.randint(0, 1)])
        raw = ["%ED%A0%80", "%00", "%FF%FE", "a=b=c", "&&", "=x", "%", "%G1", "+", "auth_key=app-key",
               "auth_version=1.0", "auth_timestamp=-5", "body_md5=zz", "info=user_count", "auth_signature="]
        return "&".join(rng.choice(raw) for _ in range(rng.randint(0, 6))) + ("&" + _quote_query(extra) if extra else "")

    def next(self) -> tuple[str, str, bytes]:
        method, path = self.rng.choice(self.ROUTES)
        body = self.body(method, path)
        return method, f"{path}?{self.query(method, path, body)}", body


def check_http(port: int, method: str, target: str, body: bytes) -> int:
    """Send one request on a fresh connection; assert no 5xx and a JSON (or plain refusal) answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, target, body=body or None, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        status, content_type, payload = response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()
    assert status < 500, (status, method, target[:200], body[:200], payload[:300])
    if content_type.startswith("application/json"):
        json.loads(payload)
    else:
        assert status in (400, 404, 413, 414, 431), (status, content_type, payload[:200])
    return status


def send_marker(port: int, n: int) -> None:
    body = json.dumps({"name": MARKER, "channel": HEALTHY, "data": f"m-{n}"}).encode()
    query = sign_request("POST", "/apps/1/events", {}, KEY, SECRET, body)
    assert check_http(port, "POST", f"/apps/1/events?{_quote_query(list(query.items()))}", body) == 200


def read_markers(client: PusherClient, want: int, deadline: float) -> list[str]:
    got: list[str] = []
    while len(got) < want:  # PusherClient.recv raises once the deadline is past
        message = client.recv(max(deadline - time.monotonic(), 0.001))
        got += [message["data"]] if message.get("event") == MARKER else []
    return got


def test_fuzzed_client_messages_and_http_requests_never_break_the_node(node, log_records):
    rng = random.Random(SEED)
    messages, requests = MessageFuzzer(rng), HttpFuzzer(rng)
    healthy = PusherClient.connect(node.port, timeout=TIMEOUT)
    fuzzers = [FuzzConnection(node.port, i) for i in range(CONNECTIONS)]
    statuses: Counter[int] = Counter()
    pending = [0] * CONNECTIONS
    started = time.monotonic()
    try:
        healthy.subscribe(HEALTHY)
        http_every = WS_MESSAGES // HTTP_REQUESTS
        marker_every = WS_MESSAGES // MARKERS
        markers_sent = 0
        for i in range(WS_MESSAGES):
            conn = fuzzers[i % CONNECTIONS]
            text = messages.next(conn.client.socket_id)
            conn.send(text)
            pending[conn.index] += 1
            closing = may_close(text)
            if closing or pending[conn.index] >= rng.randint(1, 8):
                conn.barrier(allow_close=closing)
                pending[conn.index] = 0
            if i % http_every == 0:
                statuses[check_http(node.port, *requests.next())] += 1
            if i % marker_every == marker_every // 2:
                send_marker(node.port, markers_sent)
                markers_sent += 1
        for conn in fuzzers:
            conn.barrier(allow_close=False)  # every connection still answers
        send_marker(node.port, markers_sent)  # and one after the fuzz
        markers_sent += 1
        got = read_markers(healthy, markers_sent, time.monotonic() + 10)
        assert got == [f"m-{n}" for n in range(markers_sent)]
        healthy.ping()
    finally:
        for conn in fuzzers:
            conn.close()
        healthy.ws.shutdown()
    elapsed = time.monotonic() - started
    assert [log_records.format(r) for r in log_records.bad] == []
    assert sum(statuses.values()) >= HTTP_REQUESTS
    # The fuzz reached deep: accepted requests and refusals of several kinds, and permitted closes.
    assert statuses.get(200) and statuses.get(400) and statuses.get(401), statuses
    assert sum(len(conn.closes) for conn in fuzzers) > 0
    assert elapsed < 30, f"the fuzz took {elapsed:.1f} s"

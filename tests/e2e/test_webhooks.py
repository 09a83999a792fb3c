"""Webhooks end to end: a real HTTP receiver in the test, checked with the pusher SDK."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pusher
import pytest

from actors import App
from actors.webhooks import WebhookTimings
from tests.conftest import wait_until
from transport.config import ServerLimits

pytestmark = pytest.mark.single_node(reason="reads one node's webhook settings and metrics")

FAST = WebhookTimings(timeout=10.0, first_retry=0.05, max_retry_gap=0.2, retry_for=5.0)
SDK = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", ssl=False)


class Receiver:
    """An HTTP server on 127.0.0.1:0 that records webhook POSTs and answers ``statuses`` in turn (then 200)."""

    def __init__(self, statuses=(), sleep: float = 0.0) -> None:
        self.posts: list[dict] = []  # validated bodies, in arrival order
        self.attempts = 0
        self.statuses = list(statuses)
        self.sleep = sleep
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.sleep:
                    time.sleep(receiver.sleep)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    checked = SDK.validate_webhook(self.headers["X-Pusher-Key"], self.headers["X-Pusher-Signature"],
                                                   body.decode())
                    assert checked is not None, "the pusher SDK refused the webhook"
                    assert self.headers["Content-Type"] == "application/json"
                    checked["headers"] = dict(self.headers)
                    receiver.posts.append(checked)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def events(self) -> list[dict]:
        return [event for post in self.posts for event in post["events"]]

    def names(self) -> list[tuple]:
        return [(e["name"], e.get("channel"), e.get("user_id")) for e in self.events()]

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple]:
        wait_until(lambda: len(self.events()) >= count, timeout, message=f"{count} webhook events")
        return self.names()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def hooked(make_node, *receivers, hooks=None, **settings):
    """A node whose app sends webhooks to ``receivers`` (or ``hooks``), with a short delay."""
    settings.setdefault("webhook_delay_seconds", 0.2)
    hooks = hooks if hooks is not None else [{"url": r.url} for r in receivers]
    return make_node(App(webhooks=hooks, **settings), webhook_timings=FAST,
                     limits=ServerLimits(shutdown_grace=2.0))


def private_auth(client, channel, **custom):
    return SDK.authenticate(channel=channel, socket_id=client.socket_id, **custom)


def test_occupied_then_vacated_after_the_delay(make_node, receiver, open_client):
    r = receiver()
    node = hooked(make_node, r)
    client = open_client(node)
    client.subscribe("news")
    assert r.wait(1) == [("channel_occupied", "news", None)]
    client.unsubscribe("news")
    assert r.wait(2) == [("channel_occupied", "news", None), ("channel_vacated", "news", None)]
    assert all(post["headers"]["X-Pusher-Key"] == "app-key" for post in r.posts)


def test_leave_and_rejoin_within_the_delay_sends_nothing(make_node, receiver, open_client):
    r = receiver()
    node = hooked(make_node, r, webhook_delay_seconds=0.5)
    client = open_client(node)
    client.subscribe("news")
    client.subscribe("presence-room", **private_auth(client, "presence-room", custom_data={"user_id": "u1"}))
    assert sorted(r.wait(3)) == [("channel_occupied", "news", None), ("channel_occupied", "presence-room", None),
                                 ("member_added", "presence-room", "u1")]
    client.close()  # a page reload: the same user comes back at once
    again = open_client(node)
    again.subscribe("news")
    again.subscribe("presence-room", **private_auth(again, "presence-room", custom_data={"user_id": "u1"}))
    time.sleep(1.0)  # past the delay: asserting that nothing comes (bounded, not a synchronisation)
    assert len(r.events()) == 3


def test_member_added_and_removed_once_per_user(make_node, receiver, open_client):
    r = receiver()
    node = hooked(make_node, r, hooks=[{"url": r.url, "event_types": ["member_added", "member_removed"]}])
    a, b = open_client(node), open_client(node)
    for c in (a, b):  # one user, two sockets
        c.subscribe("presence-room", **private_auth(c, "presence-room", custom_data={"user_id": "u1"}))
    assert r.wait(1) == [("member_added", "presence-room", "u1")]
    a.close()
    b.unsubscribe("presence-room")
    assert r.wait(2) == [("member_added", "presence-room", "u1"), ("member_removed", "presence-room", "u1")]


def test_client_event_with_socket_and_user(make_node, receiver, open_client):
    r = receiver()
    node = hooked(make_node, r, hooks=[{"url": r.url, "event_types": ["client_event"]}])
    a, b = open_client(node), open_client(node)
    a.subscribe("private-chat", **private_auth(a, "private-chat"))
    b.subscribe("private-chat", **private_auth(b, "private-chat"))
    a.send_event("client-typing", {"who": "a"}, channel="private-chat")
    b.expect("client-typing", "private-chat")
    r.wait(1)
    assert r.events()[0] == {"name": "client_event", "channel": "private-chat", "event": "client-typing",
                             "data": '{"who":"a"}', "socket_id": a.socket_id}  # data as the event carries it: a string
    a.subscribe("presence-chat", **private_auth(a, "presence-chat", custom_data={"user_id": "ua"}))
    a.send_event("client-hi", "x", channel="presence-chat")
    r.wait(2)
    assert r.events()[1]["user_id"] == "ua" and r.events()[1]["event"] == "client-hi"


def test_cache_miss_and_subscription_count(make_node, receiver, open_client):
    r = receiver()
    node = hooked(make_node, r, enable_subscription_count=True,
                  hooks=[{"url": r.url, "event_types": ["cache_miss", "subscription_count"]}])
    client = open_client(node)
    client.subscribe("cache-weather")
    client.expect("pusher:cache_miss", "cache-weather")
    assert r.wait(1) == [("cache_miss", "cache-weather", None)]
    client.subscribe("count-me")
    wait_until(lambda: any(e["name"] == "subscription_count" for e in r.events()), 5)
    counts = [e for e in r.events() if e["name"] == "subscription_count"]
    assert counts[0]["channel"] in ("cache-weather", "count-me") and counts[0]["subscription_count"] == 1


def test_filters_and_several_urls(make_node, receiver, open_client):
    private, occupied = receiver(), receiver()
    node = hooked(make_node, hooks=[
        {"url": private.url, "filter": {"channel_name_starts_with": "private-"}},
        {"url": occupied.url, "event_types": ["channel_occupied"], "filter": {"channel_name_ends_with": "-b"}},
    ])
    client = open_client(node)
    for name in ("a", "x-b", "private-a", "private-x-b"):
        auth = private_auth(client, name) if name.startswith("private-") else {}
        client.subscribe(name, **auth)
    assert sorted(private.wait(2)) == [("channel_occupied", "private-a", None), ("channel_occupied", "private-x-b", None)]
    assert sorted(occupied.wait(2)) == [("channel_occupied", "private-x-b", None), ("channel_occupied", "x-b", None)]
    client.unsubscribe("x-b")
    private.wait(2)
    time.sleep(0.5)  # past the delay: the vacated of x-b reaches neither (bounded, asserting silence)
    assert len(occupied.events()) == 2 and len(private.events()) == 2


@pytest.mark.parametrize("batching", [False, True])
def test_batching_on_and_off(make_node, receiver, open_client, batching):
    r = receiver()
    node = hooked(make_node, r, webhook_batching=batching, webhook_batch_ms=200,
                  hooks=[{"url": r.url, "event_types": ["channel_occupied"]}])
    client = open_client(node)
    for i in range(5):
        client.subscribe(f"ch-{i}")
    r.wait(5)
    assert sorted(n[1] for n in r.names()) == [f"ch-{i}" for i in range(5)]
    assert len(r.posts) == (1 if batching else 5)


def test_a_500_is_retried_until_delivered_once(make_node, receiver, open_client):
    r = receiver(statuses=[500, 500])
    node = hooked(make_node, r)
    client = open_client(node)
    client.subscribe("news")
    assert r.wait(1) == [("channel_occupied", "news", None)]
    assert r.attempts == 3
    totals = wait_until(lambda: (t := node.metrics_totals().get("1", {})).get("webhooks_sent") and t, 5)
    assert totals["webhooks_retried"] == 2 and totals["webhooks_sent"] == 1 and not totals.get("webhooks_failed")


def test_a_400_is_not_retried(make_node, receiver, open_client):
    r = receiver(statuses=[400])
    node = hooked(make_node, r)
    client = open_client(node)
    client.subscribe("news")
    totals = wait_until(lambda: (t := node.metrics_totals().get("1", {})).get("webhooks_failed") and t, 5)
    assert r.attempts == 1 and not totals.get("webhooks_retried") and not r.posts


def test_an_unreachable_receiver_is_retried_then_given_up(make_node, receiver, open_client):
    r = receiver()
    url = r.url
    r.close()  # nothing listens there any more: connection refused
    node = make_node(App(webhooks=[{"url": url}]), webhook_timings=WebhookTimings(first_retry=0.02, retry_for=0.1))
    open_client(node).subscribe("news")
    totals = wait_until(lambda: (t := node.metrics_totals().get("1", {})).get("webhooks_failed") and t, 5)
    assert totals["webhooks_retried"] >= 1 and not totals.get("webhooks_sent")


def test_a_slow_receiver_slows_no_broadcast_and_no_join(make_node, receiver, open_client):
    r = receiver(sleep=5.0)
    node = hooked(make_node, r)
    first = open_client(node)
    first.subscribe("news")
    wait_until(lambda: r.attempts >= 1, 5)  # the receiver now sits on its request for 5 s
    started = time.monotonic()
    for i in range(20):
        open_client(node).subscribe(f"other-{i}")  # each one queues a channel_occupied behind the slow one
        node.broadcast("1", "news", "tick", {"i": i})
        assert json.loads(first.expect("tick", "news")["data"]) == {"i": i}
    assert time.monotonic() - started < 2.0


def test_shutdown_delivers_held_webhooks(make_node, receiver, open_client):
    r = receiver()
    node = hooked(make_node, r, webhook_delay_seconds=30)
    client = open_client(node)
    client.subscribe("news")
    r.wait(1)
    client.unsubscribe("news")
    client.until_pong()
    node.stop()
    assert r.names() == [("channel_occupied", "news", None), ("channel_vacated", "news", None)]

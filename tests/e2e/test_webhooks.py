"""Webhooks end to end: a real HTTP receiver in the test, checked with the pusher SDK."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pusher
import pytest

from actors import App
from actors.app import AppActor
from actors.webhook_sender import LANES_PER_URL
from actors.webhooks import WebhookTimings
from tests.conftest import wait_until
from transport import webhooks as wh
from transport.config import ServerLimits

pytestmark = pytest.mark.single_node(reason="reads one node's webhook settings and metrics")

FAST = WebhookTimings(timeout=10.0, first_retry=0.05, max_retry_gap=0.2, retry_for=5.0)
SDK = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", ssl=False)


class Receiver:
    """An HTTP server on 127.0.0.1:0 that records webhook POSTs and answers ``statuses`` in turn (then 200).

    ``answer(events)``, if given, picks the status of a request from its
    events first (None: as without it); ``sleep`` seconds are slept before
    answering, or ``sleep_for(events)`` seconds.
    """

    def __init__(self, statuses=(), sleep: float = 0.0, answer=None, sleep_for=None) -> None:
        self.posts: list[dict] = []  # validated bodies, in arrival order
        self.attempts = 0
        self.attempted: list[list[dict]] = []  # the events of every request, answered or not
        self.statuses = list(statuses)
        self.sleep = sleep
        self.answer = answer
        self.sleep_for = sleep_for
        self.inflight = self.max_inflight = 0  # requests being answered at once
        self.lock = threading.Lock()  # the server answers on a thread per request
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                events = json.loads(body)["events"]
                with receiver.lock:
                    receiver.attempts += 1
                    receiver.attempted.append(events)
                    receiver.inflight += 1
                    receiver.max_inflight = max(receiver.max_inflight, receiver.inflight)
                try:
                    pause = receiver.sleep_for(events) if receiver.sleep_for else receiver.sleep
                    if pause:
                        time.sleep(pause)
                    status = receiver.answer(events) if receiver.answer else None
                    if status is None:
                        with receiver.lock:
                            status = receiver.statuses.pop(0) if receiver.statuses else 200
                finally:
                    with receiver.lock:
                        receiver.inflight -= 1
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


# --- delivery lanes: a few requests at once per URL, order kept per channel --------------------


def channels_on_lanes(lanes: int = LANES_PER_URL, count: int = 2) -> dict[int, list[str]]:
    """``count`` channel names for each of a URL's lanes (``transport.webhooks.lane_of``)."""
    found: dict[int, list[str]] = {lane: [] for lane in range(lanes)}
    i = 0
    while any(len(names) < count for names in found.values()):
        name = f"ch-{i}"
        lane = wh.lane_of(name, lanes)
        if len(found[lane]) < count:
            found[lane].append(name)
        i += 1
    return found


def test_a_failing_request_holds_up_only_the_channels_of_its_lane(make_node, receiver, open_client):
    lanes = channels_on_lanes()
    stuck, behind = lanes[0]  # same lane: "behind" waits for "stuck"; the other lanes do not
    others = [names[0] for lane, names in lanes.items() if lane != 0]
    healed = threading.Event()

    def answer(events):
        return 500 if events[0]["channel"] == stuck and not healed.is_set() else None

    r = receiver(answer=answer)
    node = hooked(make_node, r, hooks=[{"url": r.url, "event_types": ["channel_occupied"]}])
    client = open_client(node)
    client.subscribe(stuck)
    wait_until(lambda: r.attempts >= 2, message="the stuck channel is being retried")
    for name in (behind, *others):
        client.subscribe(name)
    wait_until(lambda: sorted(n[1] for n in r.names()) == sorted(others), message="the other lanes' channels")
    assert all(e[0]["channel"] != behind for e in r.attempted)  # not even tried: it waits behind stuck
    healed.set()  # the receiver takes stuck now: its lane goes on, in order
    wait_until(lambda: len(r.events()) == len(others) + 2, message="stuck, then behind")
    names = [n[1] for n in r.names()]
    assert names.index(stuck) < names.index(behind)


def test_a_channels_events_arrive_in_order_while_requests_run_in_parallel(make_node, receiver, open_client):
    rng = random.Random(7)
    r = receiver(sleep_for=lambda events: rng.uniform(0.0, 0.03))  # answers come back in any order
    node = hooked(make_node, r, webhook_delay_seconds=0)  # no delay: every vacated goes out
    names = [f"order-{i}" for i in range(8)]
    client = open_client(node)
    for _ in range(3):
        for name in names:
            client.subscribe(name)
        for name in names:
            client.unsubscribe(name)
        client.until_pong()  # the unsubscribes were handled before the next round
        wait_until(lambda: node.subscription_count("1", names[-1]) == 0, message="left")
    wait_until(lambda: all(r.names().count(("channel_vacated", n, None)) == 3 for n in names), timeout=10,
               message="three rounds")
    for name in names:
        mine = [event for event, channel, _ in r.names() if channel == name]
        assert mine == ["channel_occupied", "channel_vacated"] * 3, (name, mine)
    assert 1 < r.max_inflight <= LANES_PER_URL


# --- an app actor restart ---------------------------------------------------------------------------


class PlantedBug(RuntimeError):
    """Raised on purpose, to kill the app actor."""


@pytest.fixture
def fragile_app(monkeypatch):
    """A broadcast of the event ``kill-app`` kills the app actor (the node's supervisor restarts it)."""
    original = AppActor.publish_frames

    def publish_frames(self, frames, *args):
        if any(b'"kill-app"' in frame for _, frame in frames):
            raise PlantedBug("planted in publish")
        return original(self, frames, *args)

    monkeypatch.setattr(AppActor, "publish_frames", publish_frames)


def test_an_app_actor_restart_sends_no_second_occupied_and_vacates_what_does_not_come_back(
    make_node, receiver, open_client, fragile_app
):
    r = receiver()
    node = hooked(make_node, r, webhook_delay_seconds=0.5)
    back, gone = open_client(node), open_client(node)
    back.subscribe("news")
    back.subscribe("presence-room", **private_auth(back, "presence-room", custom_data={"user_id": "u1"}))
    gone.subscribe("lonely")
    before = [("channel_occupied", "lonely", None), ("channel_occupied", "news", None),
              ("channel_occupied", "presence-room", None), ("member_added", "presence-room", "u1")]
    wait_until(lambda: sorted(r.names()) == before, message="occupied and added")
    node.broadcast("1", "news", "kill-app", "x")  # the app actor dies; its clients are told to reconnect
    for client in (back, gone):
        assert client.expect_close()[0] == 4200
    again = open_client(node)  # back reconnects at once (pusher-js does on 4200); gone does not
    again.subscribe("news")
    again.subscribe("presence-room", **private_auth(again, "presence-room", custom_data={"user_id": "u1"}))
    wait_until(lambda: len(r.events()) >= 5, message="the vacated of the channel nobody came back to")
    time.sleep(0.5 + 0.2)  # past the delay: asserting that nothing else comes (bounded)
    assert sorted(r.names()) == sorted([*before, ("channel_vacated", "lonely", None)])

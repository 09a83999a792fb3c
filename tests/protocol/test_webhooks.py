"""Webhooks as pure code: events, config, filters, body and headers, batches, retries, the delay, lanes,
and which node sends the cluster's shared events (transport.webhook_ledger)."""

from __future__ import annotations

import json
import time

import pusher
import pytest

from transport import webhooks as wh
from transport.config import App, load_apps
from transport.errors import ConfigError
from transport.http_client import ResponseHead, head_end, parse_url, request
from transport.webhook_ledger import Announced, Ledger, choose_leader, log_entry, shared_event


def test_events_have_pushers_fields():
    assert wh.channel_occupied("a") == {"name": "channel_occupied", "channel": "a"}
    assert wh.channel_vacated("a") == {"name": "channel_vacated", "channel": "a"}
    assert wh.member_added("presence-a", "u") == {"name": "member_added", "channel": "presence-a", "user_id": "u"}
    assert wh.member_removed("presence-a", "u")["user_id"] == "u"
    assert wh.client_event("private-a", "client-x", '{"a":1}', "1.2") == {
        "name": "client_event", "channel": "private-a", "event": "client-x", "data": '{"a":1}', "socket_id": "1.2",
    }
    assert wh.client_event("presence-a", "client-x", "d", "1.2", "u")["user_id"] == "u"
    assert wh.cache_miss("cache-a") == {"name": "cache_miss", "channel": "cache-a"}
    assert wh.subscription_count("a", 3)["subscription_count"] == 3


def test_webhook_config_parses_every_field():
    app = App(webhooks=[{
        "url": "https://example.com/hook",
        "event_types": ["channel_occupied", "member_added"],
        "filter": {"channel_name_starts_with": "private-", "channel_name_ends_with": "-x"},
        "headers": {"X-Custom": "yes"},
    }])
    (hook,) = app.webhooks
    assert hook.event_types == {"channel_occupied", "member_added"}
    assert hook.headers == (("X-Custom", "yes"),)
    assert not app.webhook_batching and app.webhook_batch_ms == 50 and app.webhook_delay_seconds == 3


def test_webhook_config_from_a_file():
    (app,) = load_apps(json.dumps({"apps": [{"id": "1", "key": "k", "secret": "s", "webhooks": [
        {"url": "http://127.0.0.1:9/a"}, {"url": "http://127.0.0.1:9/b"}], "webhook_batching": True}]}))
    assert [h.url for h in app.webhooks] == ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
    assert app.webhook_batching


@pytest.mark.parametrize(
    "settings, says",
    [
        ({"webhooks": {"url": "http://x"}}, "must be a list"),
        ({"webhooks": ["http://x"]}, "must be an object"),
        ({"webhooks": [{}]}, "'url' must be a non-empty string"),
        ({"webhooks": [{"url": "ftp://x/"}]}, "http:// or https://"),
        ({"webhooks": [{"url": "http:///path"}]}, "has no host"),
        ({"webhooks": [{"url": "http://x", "evnt_types": []}]}, "unknown setting"),
        ({"webhooks": [{"url": "http://x", "event_types": ["channel_ocupied"]}]}, "unknown event type"),
        ({"webhooks": [{"url": "http://x", "event_types": []}]}, "non-empty list"),
        ({"webhooks": [{"url": "http://x", "filter": {"channel_name_prefix": "a"}}]}, "unknown filter"),
        ({"webhooks": [{"url": "http://x", "filter": {"channel_name_starts_with": 1}}]}, "must be a string"),
        ({"webhooks": [{"url": "http://x", "headers": {"Bad Name": "v"}}]}, "valid HTTP token"),
        ({"webhooks": [{"url": "http://x", "headers": {"X-A": "a\r\nB: c"}}]}, "control characters"),
        ({"webhooks": [{"url": "http://x", "headers": {"Content-Length": "1"}}]}, "set by the sender"),
        ({"webhook_batching": "yes"}, "true or false"),
        ({"webhook_batch_ms": -1}, "webhook_batch_ms"),
        ({"webhook_delay_seconds": "3"}, "webhook_delay_seconds"),
    ],
)
def test_invalid_webhook_config_is_a_clear_error(settings, says):
    with pytest.raises(ConfigError, match=says):
        App.from_dict(settings)


def test_filters_by_event_type_and_channel_name():
    hook = wh.Webhook.from_dict({"url": "http://x", "event_types": ["channel_occupied"],
                                 "filter": {"channel_name_starts_with": "private-", "channel_name_ends_with": "-b"}})
    assert hook.wants(wh.channel_occupied("private-a-b"))
    assert not hook.wants(wh.channel_occupied("public-a-b"))
    assert not hook.wants(wh.channel_occupied("private-a-c"))
    assert not hook.wants(wh.channel_vacated("private-a-b"))
    assert wh.Webhook.from_dict({"url": "http://x"}).wants(wh.cache_miss("cache-a"))


def test_body_and_headers_validate_with_the_pusher_sdk():
    events = [wh.channel_occupied("ch"), wh.member_added("presence-ü", "u1")]
    payload = wh.body(events, int(time.time() * 1000))
    headers = dict(wh.request_headers("app-key", "app-secret", payload, [("X-Custom", "1"), ("x-pusher-key", "no")]))
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Pusher-Key"] == "app-key"
    assert headers["X-Custom"] == "1" and "x-pusher-key" not in headers  # ours cannot be overridden
    client = pusher.Pusher(app_id="1", key="app-key", secret="app-secret")
    assert client.validate_webhook("app-key", headers["X-Pusher-Signature"], payload.decode())["events"] == events
    assert client.validate_webhook("app-key", headers["X-Pusher-Signature"], payload.decode() + " ") is None


def test_batches_hold_at_most_100_events_in_order():
    events = list(range(250))
    cut = wh.batches(events)
    assert [len(b) for b in cut] == [100, 100, 50]
    assert sum(cut, []) == events


@pytest.mark.parametrize("status", [None, 500, 502, 503, 408, 429])
def test_retried_on_connection_errors_5xx_408_429(status):
    assert wh.retryable(status)
    assert wh.next_retry(1, 0.0, status) == 1.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413])
def test_not_retried_on_other_4xx(status):
    assert not wh.retryable(status)
    assert wh.next_retry(1, 0.0, status) is None


def test_delivered_on_2xx_and_3xx():
    assert wh.next_retry(1, 0.0, 200) is None and wh.next_retry(1, 0.0, 302) is None


def test_backoff_doubles_up_to_60_s_for_5_minutes():
    delays, elapsed, attempt = [], 0.0, 1
    while (delay := wh.next_retry(attempt, elapsed, 503)) is not None:
        delays.append(delay)
        elapsed += delay
        attempt += 1
    assert delays[:7] == [1, 2, 4, 8, 16, 32, 60]
    assert max(delays) == 60 and sum(delays) <= 300
    assert sum(delays) + 60 > 300  # gave up only when the next wait would pass 5 minutes


def test_delayer_holds_vacated_and_removed():
    d = wh.Delayer(3.0)
    assert d.offer(wh.channel_occupied("a"), 0.0) == [wh.channel_occupied("a")]
    assert d.offer(wh.channel_vacated("a"), 1.0) == []
    assert d.offer(wh.member_removed("presence-a", "u"), 2.0) == []
    assert d.next_due() == 4.0
    assert d.due(3.9) == []
    assert d.due(4.0) == [wh.channel_vacated("a")]
    assert d.due(10.0) == [wh.member_removed("presence-a", "u")]
    assert len(d) == 0 and d.next_due() is None


def test_delayer_return_within_the_delay_sends_nothing():
    d = wh.Delayer(3.0)
    assert d.offer(wh.channel_vacated("a"), 0.0) == []
    assert d.offer(wh.channel_occupied("a"), 1.0) == []
    assert d.offer(wh.member_removed("presence-a", "u"), 0.0) == []
    assert d.offer(wh.member_added("presence-a", "v"), 1.0) == [wh.member_added("presence-a", "v")]  # another user
    assert d.offer(wh.member_added("presence-a", "u"), 1.0) == []
    assert d.due(100.0) == []


def test_delayer_without_delay_and_flush():
    assert wh.Delayer(0).offer(wh.channel_vacated("a"), 0.0) == [wh.channel_vacated("a")]
    d = wh.Delayer(3.0)
    d.offer(wh.channel_vacated("a"), 0.0)
    assert d.flush() == [wh.channel_vacated("a")] and len(d) == 0


def test_http_client_request_and_response_head():
    assert parse_url("http://h/") == ("http", "h", 80, "/")
    assert parse_url("https://h") == ("https", "h", 443, "/")
    with pytest.raises(ValueError):
        parse_url("http://h:99999/")
    data = request("POST", "h:81", "/p?q=1", [("X-A", "b")], b"xyz")
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n")[0] == b"POST /p?q=1 HTTP/1.1"
    assert b"Content-Length: 3" in head and b"Host: h:81" in head and body == b"xyz"
    answer = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
    assert head_end(answer[:-2]) == -1 and head_end(answer) == len(answer)
    assert ResponseHead.parse(answer) == (500, "Internal Server Error", {"content-length": "0"})
    with pytest.raises(ValueError):
        ResponseHead.parse(b"SSH-2.0-OpenSSH\r\n\r\n")


# --- lanes and the cluster's shared events (transport.webhook_ledger) ------------------------


def test_a_channel_always_takes_the_same_lane_of_a_url():
    lanes = {wh.lane_of(f"ch-{i}", 4) for i in range(200)}
    assert lanes == {0, 1, 2, 3}  # spread over every lane
    assert all(wh.lane_of("news", 4) == wh.lane_of("news", 4) for _ in range(3))
    assert wh.lane_of("presence-é\ud800", 4) in range(4)  # never raises, whatever the text
    assert wh.lane_of("news", 1) == 0


def test_the_leader_is_the_lowest_settled_node_or_the_lowest_started_one():
    assert choose_leader({"5": 10.0, "3": 1.0, "7": 12.0}, settle=5.0) == "5"  # "3" just joined: not yet
    assert choose_leader({"5": 10.0, "3": 6.0}, settle=5.0) == "3"
    assert choose_leader({"5": 1.0, "3": 1.0}, settle=5.0, fresh=1.0) == "3"  # a cluster that just started
    assert choose_leader({"5": 1.0, "3": 0.5}, settle=5.0, fresh=1.0) == "5"
    assert choose_leader({"9": 0.0}, settle=5.0, fresh=1.0) is None  # not up a heartbeat: nobody yet
    # Heard from, no heartbeat yet: it may be old, so a newcomer does not lead in its place.
    assert choose_leader({"5": None, "3": 0.0}, settle=5.0, fresh=1.0) == "5"
    assert choose_leader({"5": 10.0, "3": None}, settle=5.0) == "3"


def test_announced_drops_a_repeated_occupied_or_added_only():
    told = Announced()
    occupied, vacated = wh.channel_occupied("news"), wh.channel_vacated("news")
    assert told.admit(occupied) and not told.admit(occupied)
    assert told.admit(wh.member_added("presence-a", "u1")) and not told.admit(wh.member_added("presence-a", "u1"))
    assert told.admit(wh.member_added("presence-a", "u2"))
    assert told.admit(wh.member_removed("presence-a", "nobody"))  # never dropped: it might be lost
    assert told.admit(wh.cache_miss("cache-x")) and told.admit(wh.cache_miss("cache-x"))  # not a state: always
    assert sorted(map(str, told.ends())) == sorted(map(str, [
        vacated, wh.member_removed("presence-a", "u1"), wh.member_removed("presence-a", "u2")]))
    assert len(told) == 3  # ends() forgets nothing: the held vacated is admitted when due
    assert told.admit(vacated) and told.admit(occupied) and not told.admit(occupied)


def test_a_follower_forgets_what_the_leader_queued_whichever_came_first():
    ledger = Ledger(window=10.0)
    vacated, removed = wh.channel_vacated("news"), wh.member_removed("presence-a", "u1")
    ledger.decided(vacated, (0,), now=1.0)
    ledger.queued("L", 1, vacated, (0,), now=1.1)  # the leader's timer fired a little later
    ledger.queued("L", 2, removed, (0, 1), now=2.0)  # ...or a little earlier
    ledger.decided(removed, (0, 1), now=2.1)
    assert ledger.waiting() == 0 and ledger.unfinished() == 2
    ledger.finished("L", 1, 0)
    ledger.finished("L", 2, 0)
    assert ledger.unfinished() == 1  # webhook 1 still waits for the removed
    ledger.finished("L", 2, 1)
    assert ledger.unfinished() == 0 and ledger.take_over(now=3.0) == []


def test_a_follower_takes_over_what_a_dead_leader_left_unfinished_then_what_nobody_queued():
    ledger = Ledger(window=10.0)
    occupied, vacated = wh.channel_occupied("a"), wh.channel_vacated("b")
    ledger.queued("L", 1, occupied, (0, 1), now=0.0)
    ledger.finished("L", 1, 0)  # delivered to webhook 0, not yet to webhook 1
    ledger.decided(vacated, (0,), now=1.0)  # due here; the leader died before queuing it
    ledger.node_gone("L", now=2.0)
    assert ledger.take_over(now=3.0) == [(occupied, (1,)), (vacated, (0,))]
    assert ledger.take_over(now=3.0) == [] and ledger.waiting() == 0


def test_a_follower_forgets_its_own_decisions_past_the_window():
    ledger = Ledger(window=5.0)
    ledger.decided(wh.channel_vacated("a"), (0,), now=0.0)
    ledger.decided(wh.channel_vacated("b"), (0,), now=3.0)
    ledger.queued("L", 9, wh.channel_occupied("c"), (0,), now=3.0)  # a credit, used by nobody
    ledger.expire(now=6.0)  # the leader lived past the window: it decided otherwise about "a"
    assert ledger.take_over(now=6.0) == [(wh.channel_vacated("b"), (0,))]
    ledger.decided(wh.channel_occupied("c"), (0,), now=9.0)  # the old credit expired: kept
    assert ledger.waiting() == 1


def test_matching_is_per_event_and_oldest_first():
    ledger = Ledger(window=60.0)
    occupied, vacated = wh.channel_occupied("a"), wh.channel_vacated("a")
    for i, event in enumerate((occupied, vacated, occupied)):
        ledger.decided(event, (0,), now=float(i))
    ledger.queued("L", 1, occupied, (0,), now=3.0)
    assert ledger.take_over(now=4.0) == [(vacated, (0,)), (occupied, (0,))]


def test_when_a_new_leader_queues_the_dead_ones_leftovers_are_its_own():
    ledger = Ledger(window=10.0)
    occupied = wh.channel_occupied("a")
    ledger.queued("L", 1, occupied, (0,), now=0.0)
    ledger.node_gone("L", now=1.0)
    assert ledger.waiting() == 1
    ledger.queued("M", 1, occupied, (0,), now=1.5)  # M took over: it re-queued them under its own numbers
    assert ledger.waiting() == 0 and ledger.unfinished(["M"]) == 1
    ledger.node_gone("M", now=2.0)  # and if M dies too, its copy is what is left
    assert ledger.take_over(now=2.5) == [(occupied, (0,))]


def test_log_entries_round_trip_to_events():
    for event in (wh.channel_vacated("news"), wh.member_added("presence-a", "u1")):
        seq, name, channel, user_id = log_entry(4, event)
        assert seq == 4 and shared_event(name, channel, user_id) == event

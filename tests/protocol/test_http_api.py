"""The Pusher HTTP API as pure code: transport.http_api.handle_request with a fake backend.

No sockets: each test builds a signed request (``transport.http_signing.sign_request``
or the official ``pusher`` SDK's request builder), hands it to ``handle_request`` and
checks the status, the JSON body and what reached the backend.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode, urlsplit

import pusher
import pusher.http
import pytest

from transport.config import App, AppTable
from transport.http_api import Response, handle_request
from transport.http_signing import DEFAULT_MAX_SKEW, sign_request

NOW = 1_700_000_000
KEY, SECRET = "app-key", "app-secret"

APPS = AppTable(
    [
        App(id="1", key=KEY, secret=SECRET),
        App(id="2", key="off-key", secret="off-secret", enabled=False),
        App(id="3", key="small-key", secret="small-secret", max_event_bytes=100, max_batch_events=2,
            max_channels_per_event=3),
    ]
)
CREDENTIALS = {"1": (KEY, SECRET), "2": ("off-key", "off-secret"), "3": ("small-key", "small-secret")}


class FakeBackend:
    """Records triggers and terminations; answers channel queries from canned data."""

    def __init__(self, infos: dict[str, dict[str, int]] | None = None, users: dict[str, list[str]] | None = None):
        self.infos = infos or {}
        self.user_ids = users or {}
        self.triggers: list[tuple[str, tuple[str, ...], str, str, str | None]] = []
        self.terminated: list[tuple[str, str]] = []

    def trigger(self, app, channels, event, data, socket_id):
        self.triggers.append((app.id, tuple(channels), event, data, socket_id))

    def channel_info(self, app, channel):
        return self.infos.get(channel)

    def channels(self, app, users=False):
        return {name: dict(info) for name, info in self.infos.items() if info.get("subscription_count")}

    def users(self, app, channel):
        return list(self.user_ids.get(channel, []))

    def terminate_user(self, app, user_id):
        self.terminated.append((app.id, user_id))


def call(
    method: str,
    path: str,
    body: Any = b"",
    query: dict[str, str] | None = None,
    *,
    app_id: str = "1",
    key: str | None = None,
    secret: str | None = None,
    timestamp: int = NOW,
    now: float = NOW,
    backend: FakeBackend | None = None,
) -> Response:
    """Sign (as the app ``app_id``, unless key/secret are given) and handle one request."""
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    default_key, default_secret = CREDENTIALS.get(app_id, (KEY, SECRET))
    signed = sign_request(method, path, query or {}, key or default_key, secret or default_secret, body, timestamp)
    return handle_request(method, path, urlencode(signed), body, APPS, backend or FakeBackend(), now)


def event(**fields: Any) -> dict[str, Any]:
    """A valid trigger body, with ``fields`` replaced (a value of ``...`` removes the field)."""
    body = {"name": "my-event", "channel": "my-channel", "data": '{"x":1}'}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def assert_error(response: Response, status: int, *words: str) -> None:
    assert response.status == status, response.body
    assert isinstance(response.body, dict) and isinstance(response.body.get("error"), str)
    for word in words:
        assert word.lower() in response.body["error"].lower(), response.body["error"]
    json.loads(response.encoded())  # the error body is valid JSON


# --- POST /apps/{id}/events -----------------------------------------------------


def test_trigger_to_one_channel_reaches_the_backend_and_answers_an_empty_object():
    backend = FakeBackend()
    response = call("POST", "/apps/1/events", event(), backend=backend)
    assert (response.status, response.body) == (200, {})
    assert backend.triggers == [("1", ("my-channel",), "my-event", '{"x":1}', None)]
    assert response.encoded() == b"{}"


def test_trigger_to_several_channels_passes_them_all_with_the_socket_id_to_exclude():
    backend = FakeBackend()
    body = event(channel=..., channels=["a", "private-b", "presence-c"], socket_id="123.456")
    assert call("POST", "/apps/1/events", body, backend=backend).status == 200
    assert backend.triggers == [("1", ("a", "private-b", "presence-c"), "my-event", '{"x":1}', "123.456")]


def test_trigger_may_address_a_server_to_user_channel():
    backend = FakeBackend()
    assert call("POST", "/apps/1/events", event(channel="#server-to-user-u1"), backend=backend).status == 200
    assert backend.triggers[0][1] == ("#server-to-user-u1",)


def test_trigger_json_encodes_non_string_data_once_and_passes_strings_unchanged():
    backend = FakeBackend()
    call("POST", "/apps/1/events", event(data={"msg": "hi"}), backend=backend)
    call("POST", "/apps/1/events", event(data="plain text"), backend=backend)
    assert json.loads(backend.triggers[0][3]) == {"msg": "hi"}
    assert backend.triggers[1][3] == "plain text"


def test_trigger_with_info_answers_the_attributes_of_each_channel():
    backend = FakeBackend({"presence-room": {"subscription_count": 3, "user_count": 2}, "news": {"subscription_count": 5}})
    body = event(channel=..., channels=["presence-room", "news", "empty"], info="subscription_count,user_count")
    response = call("POST", "/apps/1/events", body, backend=backend)
    assert response.status == 200
    assert response.body == {
        "channels": {
            "presence-room": {"subscription_count": 3, "user_count": 2},
            "news": {"subscription_count": 5},  # user_count only for presence channels
            "empty": {"subscription_count": 0},
        }
    }
    assert len(backend.triggers) == 1


def test_trigger_with_only_user_count_info_reports_it_for_presence_channels_only():
    backend = FakeBackend({"presence-room": {"subscription_count": 3, "user_count": 2}})
    body = event(channel=..., channels=["presence-room", "news"], info="user_count")
    assert call("POST", "/apps/1/events", body, backend=backend).body == {
        "channels": {"presence-room": {"user_count": 2}, "news": {}}
    }


def test_trigger_with_an_unknown_info_attribute_is_a_400_and_triggers_nothing():
    backend = FakeBackend()
    assert_error(call("POST", "/apps/1/events", event(info="bogus"), backend=backend), 400, "bogus")
    assert backend.triggers == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (event(name=...), ["event name"]),
        (event(name=""), ["event name"]),
        (event(name=5), ["event name"]),
        (event(name="e" * 201), ["event name", "200"]),
        (event(data=...), ["data"]),
        (event(channel=...), ["channel"]),
        (event(channel=..., channels=[]), ["channels"]),
        (event(channel=..., channels="not-a-list"), ["channels"]),
        (event(channel="bad channel!"), ["channel"]),
        (event(channel=""), ["channel"]),
        (event(channel="c" * 201), ["channel", "200"]),
        (event(channel="caf\u00e9"), ["channel"]),
        (event(channel=7), ["channel"]),
        (event(channel="#server-to-user-"), ["user id"]),
        (event(channel="#server-to-user-a b"), ["user id"]),
        (event(channel=..., channels=["ok", "not ok"]), ["channel"]),
    ],
    ids=[
        "missing-name", "empty-name", "number-name", "long-name", "missing-data", "missing-channel",
        "empty-channels", "channels-not-list", "bad-channel-chars", "empty-channel", "long-channel",
        "non-ascii-channel", "number-channel", "server-to-user-without-id", "server-to-user-bad-id",
        "one-bad-channel-of-two",
    ],
)
def test_trigger_with_an_invalid_event_is_a_400_and_triggers_nothing(body, words):
    backend = FakeBackend()
    assert_error(call("POST", "/apps/1/events", body, backend=backend), 400, *words)
    assert backend.triggers == []


@pytest.mark.parametrize("socket_id", ["abc", "1.2.3", "1.", ".2", "1-2", "1.2\n", " 1.2", 12, ["1.2"]])
def test_trigger_with_an_invalid_socket_id_is_a_400(socket_id):
    backend = FakeBackend()
    assert_error(call("POST", "/apps/1/events", event(socket_id=socket_id), backend=backend), 400, "socket_id")
    assert backend.triggers == []


def test_trigger_to_more_channels_than_the_app_allows_is_a_400():
    backend = FakeBackend()
    channels = [f"c{i}" for i in range(101)]
    assert_error(call("POST", "/apps/1/events", event(channel=..., channels=channels), backend=backend), 400, "100")
    assert call("POST", "/apps/1/events", event(channel=..., channels=channels[:100]), backend=backend).status == 200
    small = call("POST", "/apps/3/events", event(channel=..., channels=["a", "b", "c", "d"]), app_id="3")
    assert_error(small, 400, "3")


def test_trigger_data_over_max_event_bytes_is_a_413_counted_in_utf8_bytes():
    backend = FakeBackend()
    limit = App().max_event_bytes
    assert call("POST", "/apps/1/events", event(data="x" * limit), backend=backend).status == 200
    assert_error(call("POST", "/apps/1/events", event(data="x" * (limit + 1)), backend=backend), 413, str(limit))
    # 5121 characters, but 10242 bytes of UTF-8.
    assert_error(call("POST", "/apps/1/events", event(data="\u00e9" * (limit // 2 + 1)), backend=backend), 413)
    assert_error(call("POST", "/apps/3/events", event(data="y" * 101), app_id="3"), 413, "100")
    assert len(backend.triggers) == 1


def test_trigger_data_with_a_lone_surrogate_is_a_400_not_an_exception():
    backend = FakeBackend()
    body = b'{"name":"e","channel":"c","data":"\\ud800"}'
    assert_error(call("POST", "/apps/1/events", body, backend=backend), 400)
    assert backend.triggers == []


@pytest.mark.parametrize("info", [["user_count"], 5, {"a": 1}])
def test_trigger_with_non_string_info_is_a_400_not_an_exception(info):
    backend = FakeBackend()
    assert_error(call("POST", "/apps/1/events", event(info=info), backend=backend), 400, "info")
    assert backend.triggers == []


@pytest.mark.parametrize(
    ("body", "words"),
    [(b"", ["json"]), (b"{not json", ["json"]), (b"\xff\xfe", ["json"]), (b"[1, 2]", ["object"]),
     (b'"text"', ["object"]), (b"null", ["object"])],
    ids=["empty", "broken", "not-utf8", "array", "string", "null"],
)
def test_trigger_with_a_body_that_is_not_a_json_object_is_a_400(body, words):
    backend = FakeBackend()
    assert_error(call("POST", "/apps/1/events", body, backend=backend), 400, *words)
    assert backend.triggers == []


# --- POST /apps/{id}/batch_events -------------------------------------------------


def test_batch_triggers_every_event_in_order_and_answers_an_empty_object():
    backend = FakeBackend()
    batch = [event(channel="a", name="e1", data="1"), event(channel="b", name="e2", data={"n": 2}, socket_id="1.2")]
    response = call("POST", "/apps/1/batch_events", {"batch": batch}, backend=backend)
    assert (response.status, response.body) == (200, {})
    assert backend.triggers == [("1", ("a",), "e1", "1", None), ("1", ("b",), "e2", '{"n":2}', "1.2")]


def test_batch_with_info_answers_one_attribute_object_per_event():
    backend = FakeBackend({"presence-room": {"subscription_count": 3, "user_count": 2}, "news": {"subscription_count": 4}})
    batch = [
        event(channel="presence-room", info="user_count,subscription_count"),
        event(channel="news", info="subscription_count"),
        event(channel="quiet"),
    ]
    response = call("POST", "/apps/1/batch_events", {"batch": batch}, backend=backend)
    assert response.status == 200
    assert response.body == {
        "batch": [{"user_count": 2, "subscription_count": 3}, {"subscription_count": 4}, {}]
    }
    assert len(backend.triggers) == 3


def test_batch_of_more_events_than_max_batch_events_is_a_400_and_triggers_nothing():
    backend = FakeBackend()
    assert_error(call("POST", "/apps/1/batch_events", {"batch": [event()] * 11}, backend=backend), 400, "10")
    assert_error(call("POST", "/apps/3/batch_events", {"batch": [event()] * 3}, app_id="3", backend=backend), 400, "2")
    assert backend.triggers == []
    assert call("POST", "/apps/1/batch_events", {"batch": [event()] * 10}, backend=backend).status == 200
    assert len(backend.triggers) == 10


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        (event(name=...), 400),
        (event(data=...), 400),
        (event(channel="bad channel"), 400),
        (event(channel=...), 400),
        (event(socket_id="nope"), 400),
        (event(data="x" * (10 * 1024 + 1)), 413),
        ("not an object", 400),
        (None, 400),
    ],
    ids=["no-name", "no-data", "bad-channel", "no-channel", "bad-socket-id", "too-big", "string", "null"],
)
def test_batch_with_one_invalid_event_triggers_none_of_them(bad, status):
    backend = FakeBackend()
    batch = [event(channel="first"), bad, event(channel="last")]
    assert_error(call("POST", "/apps/1/batch_events", {"batch": batch}, backend=backend), status)
    assert backend.triggers == []


def test_batch_with_an_invalid_info_attribute_triggers_none_of_them():
    backend = FakeBackend()
    batch = [event(channel="first"), event(channel="second", info="bogus")]
    assert_error(call("POST", "/apps/1/batch_events", {"batch": batch}, backend=backend), 400, "bogus")
    assert backend.triggers == []


@pytest.mark.parametrize("body", [{}, {"batch": "x"}, {"batch": {"name": "e"}}, {"events": []}])
def test_batch_body_without_a_batch_list_is_a_400(body):
    assert_error(call("POST", "/apps/1/batch_events", body), 400, "batch")


def test_empty_batch_is_accepted_and_triggers_nothing():
    backend = FakeBackend()
    assert call("POST", "/apps/1/batch_events", {"batch": []}, backend=backend).body == {}
    assert backend.triggers == []


# --- GET /apps/{id}/channels ---------------------------------------------------------

OCCUPIED = {
    "news": {"subscription_count": 2},
    "news-sport": {"subscription_count": 1},
    "private-x": {"subscription_count": 4},
    "presence-room": {"subscription_count": 3, "user_count": 2},
    "presence-lobby": {"subscription_count": 1, "user_count": 1},
    "#server-to-user-u1": {"subscription_count": 1},
}


def test_channels_lists_occupied_channels_without_server_to_user_channels():
    response = call("GET", "/apps/1/channels", backend=FakeBackend(OCCUPIED))
    assert response.status == 200
    assert response.body == {"channels": {name: {} for name in OCCUPIED if not name.startswith("#")}}


def test_channels_filter_by_prefix_keeps_only_matching_names():
    response = call("GET", "/apps/1/channels", query={"filter_by_prefix": "news"}, backend=FakeBackend(OCCUPIED))
    assert response.body == {"channels": {"news": {}, "news-sport": {}}}


def test_channels_info_subscription_count_reports_each_channel():
    response = call("GET", "/apps/1/channels", query={"info": "subscription_count", "filter_by_prefix": "private-"},
                    backend=FakeBackend(OCCUPIED))
    assert response.body == {"channels": {"private-x": {"subscription_count": 4}}}


def test_channels_info_user_count_with_a_presence_prefix_reports_users():
    response = call("GET", "/apps/1/channels", query={"info": "user_count", "filter_by_prefix": "presence-"},
                    backend=FakeBackend(OCCUPIED))
    assert response.body == {"channels": {"presence-lobby": {"user_count": 1}, "presence-room": {"user_count": 2}}}


@pytest.mark.parametrize("prefix", [None, "", "private-", "news"])
def test_channels_info_user_count_without_a_presence_prefix_is_a_400(prefix):
    query = {"info": "user_count"}
    if prefix is not None:
        query["filter_by_prefix"] = prefix
    assert_error(call("GET", "/apps/1/channels", query=query, backend=FakeBackend(OCCUPIED)), 400, "presence")


def test_channels_with_an_unknown_info_attribute_is_a_400():
    assert_error(call("GET", "/apps/1/channels", query={"info": "member_count"}), 400, "member_count")


# --- GET /apps/{id}/channels/{name} and /users ---------------------------------------


def test_channel_reports_occupied_with_requested_attributes():
    backend = FakeBackend(OCCUPIED)
    assert call("GET", "/apps/1/channels/news", backend=backend).body == {"occupied": True}
    response = call("GET", "/apps/1/channels/presence-room", query={"info": "user_count,subscription_count"},
                    backend=backend)
    assert response.body == {"occupied": True, "user_count": 2, "subscription_count": 3}


def test_unoccupied_channel_reports_occupied_false_and_zero_counts():
    backend = FakeBackend({"gone": {"subscription_count": 0}})
    assert call("GET", "/apps/1/channels/nobody", backend=backend).body == {"occupied": False}
    assert call("GET", "/apps/1/channels/gone", query={"info": "subscription_count"}, backend=backend).body == {
        "occupied": False, "subscription_count": 0,
    }
    assert call("GET", "/apps/1/channels/presence-empty", query={"info": "user_count"}, backend=backend).body == {
        "occupied": False, "user_count": 0,
    }


def test_channel_info_user_count_on_a_non_presence_channel_is_a_400():
    for channel in ("news", "private-x", "private-encrypted-x"):
        assert_error(call("GET", f"/apps/1/channels/{channel}", query={"info": "user_count"},
                          backend=FakeBackend(OCCUPIED)), 400, "presence")


def test_channel_with_an_invalid_name_is_a_400():
    assert_error(call("GET", "/apps/1/channels/" + "c" * 201), 400, "channel")
    assert_error(call("GET", "/apps/1/channels/bad!name"), 400, "channel")


def test_presence_users_lists_member_ids():
    backend = FakeBackend(users={"presence-room": ["u1", "u2"]})
    response = call("GET", "/apps/1/channels/presence-room/users", backend=backend)
    assert (response.status, response.body) == (200, {"users": [{"id": "u1"}, {"id": "u2"}]})
    assert call("GET", "/apps/1/channels/presence-empty/users", backend=backend).body == {"users": []}


@pytest.mark.parametrize("channel", ["news", "private-room", "private-encrypted-room", "cache-room"])
def test_users_of_a_non_presence_channel_is_a_400(channel):
    assert_error(call("GET", f"/apps/1/channels/{channel}/users"), 400, "presence")


# --- terminate_connections -------------------------------------------------------------


def test_terminate_connections_under_apps_closes_that_users_connections():
    backend = FakeBackend()
    response = call("POST", "/apps/1/users/u1/terminate_connections", b"{}", backend=backend)
    assert (response.status, response.body) == (200, {})
    assert backend.terminated == [("1", "u1")]


def test_terminate_connections_in_the_python_sdk_form_finds_the_app_by_auth_key():
    backend = FakeBackend()
    response = call("POST", "/users/u-7/terminate_connections", b"{}", app_id="3", backend=backend)
    assert (response.status, response.body) == (200, {})
    assert backend.terminated == [("3", "u-7")]


def test_terminate_connections_with_an_unknown_auth_key_is_a_401():
    backend = FakeBackend()
    response = call("POST", "/users/u1/terminate_connections", b"{}", key="nobody", secret="x", backend=backend)
    assert_error(response, 401, "auth_key")
    assert backend.terminated == []


def test_terminate_connections_with_a_wrong_secret_is_a_401():
    backend = FakeBackend()
    assert_error(call("POST", "/users/u1/terminate_connections", b"{}", secret="wrong", backend=backend), 401)
    assert_error(call("POST", "/apps/1/users/u1/terminate_connections", b"{}", secret="wrong", backend=backend), 401)
    assert backend.terminated == []


def test_terminate_connections_needs_post():
    backend = FakeBackend()
    assert_error(call("GET", "/users/u1/terminate_connections", backend=backend), 405, "POST")
    assert_error(call("GET", "/apps/1/users/u1/terminate_connections", backend=backend), 405, "POST")
    assert backend.terminated == []


def test_terminate_connections_of_a_disabled_app_is_a_403():
    backend = FakeBackend()
    assert_error(call("POST", "/users/u1/terminate_connections", b"{}", app_id="2", backend=backend), 403)
    assert backend.terminated == []


# --- authentication, apps, methods and paths ---------------------------------------------


def test_unknown_app_id_is_a_404():
    backend = FakeBackend()
    assert_error(call("POST", "/apps/99/events", event(), backend=backend), 404, "99")
    assert_error(call("GET", "/apps/99/channels"), 404, "99")
    assert backend.triggers == []


def test_request_signed_with_a_wrong_secret_is_a_401():
    backend = FakeBackend()
    assert_error(call("POST", "/apps/1/events", event(), secret="not-the-secret", backend=backend), 401, "signature")
    assert_error(call("GET", "/apps/1/channels", secret="not-the-secret"), 401, "signature")
    assert backend.triggers == []


def test_request_signed_with_another_apps_key_is_a_401():
    assert_error(call("POST", "/apps/1/events", event(), key="small-key", secret="small-secret"), 401, "auth_key")


def test_unsigned_request_is_a_401():
    backend = FakeBackend()
    body = json.dumps(event()).encode()
    response = handle_request("POST", "/apps/1/events", "", body, APPS, backend, NOW)
    assert_error(response, 401)
    assert backend.triggers == []


@pytest.mark.parametrize("skew", [DEFAULT_MAX_SKEW + 1, -(DEFAULT_MAX_SKEW + 1), 86_400])
def test_stale_or_future_timestamp_is_a_401(skew):
    backend = FakeBackend()
    assert_error(call("POST", "/apps/1/events", event(), timestamp=NOW - skew, backend=backend), 401, "auth_timestamp")
    assert backend.triggers == []


def test_timestamp_within_the_allowed_skew_is_accepted():
    for skew in (DEFAULT_MAX_SKEW, -DEFAULT_MAX_SKEW):
        assert call("POST", "/apps/1/events", event(), timestamp=NOW - skew).status == 200


def test_body_changed_after_signing_is_refused():
    backend = FakeBackend()
    body = json.dumps(event()).encode()
    signed = sign_request("POST", "/apps/1/events", {}, KEY, SECRET, body, NOW)
    tampered = body.replace(b"my-channel", b"other-chan")
    response = handle_request("POST", "/apps/1/events", urlencode(signed), tampered, APPS, backend, NOW)
    assert_error(response, 400, "body_md5")
    assert backend.triggers == []


def test_duplicate_query_parameter_is_a_400():
    signed = sign_request("GET", "/apps/1/channels", {}, KEY, SECRET, b"", NOW)
    query = urlencode(signed) + "&filter_by_prefix=a&filter_by_prefix=b"
    assert_error(handle_request("GET", "/apps/1/channels", query, b"", APPS, FakeBackend(), NOW), 400, "twice")


def test_disabled_app_is_a_403_on_every_route():
    backend = FakeBackend(OCCUPIED)
    assert_error(call("POST", "/apps/2/events", event(), app_id="2", backend=backend), 403, "disabled")
    assert_error(call("POST", "/apps/2/batch_events", {"batch": [event()]}, app_id="2", backend=backend), 403)
    assert_error(call("GET", "/apps/2/channels", app_id="2", backend=backend), 403)
    assert_error(call("GET", "/apps/2/channels/news", app_id="2", backend=backend), 403)
    assert_error(call("GET", "/apps/2/channels/presence-room/users", app_id="2", backend=backend), 403)
    assert backend.triggers == []


def test_disabled_app_still_checks_the_signature_first():
    assert_error(call("GET", "/apps/2/channels", app_id="2", secret="wrong"), 401)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/apps/1/events"),
        ("PUT", "/apps/1/events"),
        ("GET", "/apps/1/batch_events"),
        ("POST", "/apps/1/channels"),
        ("DELETE", "/apps/1/channels"),
        ("POST", "/apps/1/channels/news"),
        ("POST", "/apps/1/channels/presence-room/users"),
    ],
)
def test_wrong_method_is_a_405(method, path):
    backend = FakeBackend()
    body = json.dumps(event()).encode() if method in ("POST", "PUT") else b""
    assert_error(call(method, path, body, backend=backend), 405)
    assert backend.triggers == []


def test_lowercase_method_is_accepted():
    backend = FakeBackend()
    body = json.dumps(event()).encode()
    signed = sign_request("POST", "/apps/1/events", {}, KEY, SECRET, body, NOW)
    assert handle_request("post", "/apps/1/events", urlencode(signed), body, APPS, backend, NOW).status == 200
    assert len(backend.triggers) == 1


@pytest.mark.parametrize(
    "path",
    ["/apps/1/nope", "/apps/1/channels/news/members", "/apps/1/events/extra", "/apps/1/users/u1", "/apps/1",
     "/apps", "/", "/nope/1/events", "/users/u1", "/users/u1/terminate"],
)
def test_unknown_path_is_a_404(path):
    backend = FakeBackend()
    assert_error(call("GET", path, backend=backend), 404)
    assert backend.triggers == [] and backend.terminated == []


# --- requests built by the official python SDK -----------------------------------------


class _Capture:
    """A pusher SDK backend that hands the built request to handle_request instead of the network."""

    backend: FakeBackend
    responses: list[Response]

    def __init__(self, client, **options):
        pass

    def send_request(self, request):
        url = urlsplit(request.url)
        response = handle_request(request.method, url.path, url.query, request.body, APPS, self.backend, NOW)
        self.responses.append(response)
        return pusher.http.process_response(response.status, response.encoded().decode())


@pytest.fixture
def sdk(monkeypatch):
    monkeypatch.setattr(pusher.http.time, "time", lambda: NOW)
    backend = FakeBackend(OCCUPIED, users={"presence-room": ["u1", "u2"]})
    monkeypatch.setattr(_Capture, "backend", backend, raising=False)
    monkeypatch.setattr(_Capture, "responses", [], raising=False)
    client = pusher.Pusher(app_id="1", key=KEY, secret=SECRET, host="localhost", port=80, ssl=False, backend=_Capture)
    client.fake = backend
    return client


def test_sdk_trigger_is_accepted_with_dict_data_json_encoded(sdk):
    assert sdk.trigger(["news", "private-x"], "my-event", {"msg": "hi/there"}, socket_id="1.2") == {}
    (app_id, channels, name, data, socket_id), = sdk.fake.triggers
    assert (app_id, channels, name, socket_id) == ("1", ("news", "private-x"), "my-event", "1.2")
    assert json.loads(data) == {"msg": "hi/there"}


def test_sdk_trigger_batch_and_send_to_user_are_accepted(sdk):
    assert sdk.trigger_batch([{"channel": "a", "name": "e1", "data": {"n": 1}},
                              {"channel": "b", "name": "e2", "data": "two"}]) == {}
    assert sdk.send_to_user("u1", "hello", "hi") == {}
    assert [t[1:4] for t in sdk.fake.triggers] == [
        (("a",), "e1", '{"n": 1}'), (("b",), "e2", "two"), (("#server-to-user-u1",), "hello", "hi"),
    ]


def test_sdk_channel_queries_are_answered(sdk):
    assert sdk.channels_info(prefix_filter="presence-", attributes=["user_count"]) == {
        "channels": {"presence-lobby": {"user_count": 1}, "presence-room": {"user_count": 2}}
    }
    assert sdk.channel_info("presence-room", ["user_count", "subscription_count"]) == {
        "occupied": True, "user_count": 2, "subscription_count": 3,
    }
    assert sdk.channel_info("unknown") == {"occupied": False}
    assert sdk.users_info("presence-room") == {"users": [{"id": "u1"}, {"id": "u2"}]}


def test_sdk_terminate_user_connections_is_accepted(sdk):
    assert sdk.terminate_user_connections("u-1") == {}
    assert sdk.fake.terminated == [("1", "u-1")]


def test_sdk_sees_our_errors_as_its_error_types(sdk):
    with pytest.raises(pusher.errors.PusherBadRequest):
        sdk.channels_info(attributes=["user_count"])
    with pytest.raises(pusher.errors.PusherBadStatus, match="413"):
        sdk.trigger("news", "e", "x" * 20_000)
    wrong = pusher.Pusher(app_id="1", key=KEY, secret="wrong", host="localhost", port=80, ssl=False, backend=_Capture)
    with pytest.raises(pusher.errors.PusherBadAuth):
        wrong.trigger("news", "e", "x")
    assert sdk.fake.triggers == []


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_trigger_data_with_a_number_json_cannot_carry_is_a_400(literal):
    body = ('{"name": "e", "channel": "c", "data": {"x": %s}}' % literal).encode()
    backend = FakeBackend()
    response = call("POST", "/apps/1/events", body=body, backend=backend)
    assert response.status == 400
    assert "NaN or Infinity" in response.body["error"]
    assert backend.triggers == []

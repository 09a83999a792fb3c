"""Signed HTTP API requests, checked against requests built by the official pusher SDK."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qsl, urlsplit

import pusher
import pusher.http
import pusher.signature
import pytest

from transport.errors import HttpError
from transport.http_signing import (
    AUTH_VERSION,
    DEFAULT_MAX_SKEW,
    request_string_to_sign,
    sign_request,
    verify_request,
)

APP_ID = "1"
KEY = "app-key"
SECRET = "app-secret"
NOW = 1_700_000_000


class SdkRequest:
    """What our HTTP layer would see of a request the SDK sent."""

    def __init__(self, request: pusher.http.Request) -> None:
        url = urlsplit(request.url)
        self.method = request.method
        self.path = url.path
        self.query = dict(parse_qsl(url.query, keep_blank_values=True))
        self.body = request.body


@pytest.fixture
def sdk(monkeypatch):
    """An SDK client whose backend records requests instead of sending them."""
    monkeypatch.setattr(pusher.http.time, "time", lambda: NOW)
    sent: list[SdkRequest] = []

    class Capture:
        def __init__(self, client, **options):
            pass

        def send_request(self, request):
            sent.append(SdkRequest(request))
            return {}

    client = pusher.Pusher(
        app_id=APP_ID, key=KEY, secret=SECRET, host="localhost", port=8080,
        ssl=False, backend=Capture,
    )
    client.sent = sent
    return client


def _verify(req: SdkRequest, **overrides) -> None:
    args = dict(
        method=req.method, path=req.path, query=req.query, body=req.body,
        key=KEY, secret=SECRET, now=NOW,
    )
    args.update(overrides)
    verify_request(**args)


def _sdk_trigger(sdk) -> SdkRequest:
    sdk.trigger(["my-channel", "private-a"], "my-event", {"msg": "hi there"}, socket_id="1.2")
    return sdk.sent[-1]


SDK_CALLS = {
    "trigger": lambda c: c.trigger("my-channel", "my-event", {"a": "b/c"}),
    "trigger_many": lambda c: c.trigger(["a", "b"], "e", "plain text", socket_id="1.2"),
    "trigger_batch": lambda c: c.trigger_batch([{"channel": "a", "name": "e", "data": {"x": 1}}]),
    "send_to_user": lambda c: c.send_to_user("u-1", "e", {"x": 1}),
    "channels_info": lambda c: c.channels_info(
        prefix_filter="presence-", attributes=["user_count", "subscription_count"]
    ),
    "channels_info_plain": lambda c: c.channels_info(),
    "channel_info": lambda c: c.channel_info("presence-a@b;c", ["user_count"]),
    "users_info": lambda c: c.users_info("presence-room"),
    "terminate_user_connections": lambda c: c.terminate_user_connections("u-1"),
}


@pytest.mark.parametrize("call", SDK_CALLS.values(), ids=SDK_CALLS.keys())
def test_every_sdk_request_verifies(sdk, call):
    call(sdk)
    _verify(sdk.sent[-1])


def test_sdk_request_verifies_within_the_allowed_clock_skew(sdk):
    req = _sdk_trigger(sdk)
    _verify(req, now=NOW + DEFAULT_MAX_SKEW)
    _verify(req, now=NOW - DEFAULT_MAX_SKEW)


# --- tampering -------------------------------------------------------------


def test_tampered_body_is_a_400_body_md5_mismatch(sdk):
    req = _sdk_trigger(sdk)
    with pytest.raises(HttpError, match="body_md5 does not match") as info:
        _verify(req, body=req.body.replace(b"hi there", b"bye there"))
    assert info.value.status == 400


def test_tampered_body_with_a_recomputed_md5_fails_the_signature(sdk):
    req = _sdk_trigger(sdk)
    body = req.body.replace(b"hi there", b"bye there")
    query = dict(req.query, body_md5=hashlib.md5(body).hexdigest())
    with pytest.raises(HttpError, match="Invalid signature") as info:
        _verify(req, body=body, query=query)
    assert info.value.status == 401


def test_signed_body_md5_that_does_not_match_the_body_is_a_400():
    query = sign_request("POST", "/apps/1/events", {"body_md5": "0" * 32}, KEY, SECRET,
                         timestamp=NOW)
    with pytest.raises(HttpError, match="body_md5 does not match") as info:
        verify_request("POST", "/apps/1/events", query, b'{"a":1}', KEY, SECRET, NOW)
    assert info.value.status == 400


def test_body_without_body_md5_is_a_400():
    query = sign_request("POST", "/apps/1/events", {}, KEY, SECRET, timestamp=NOW)
    with pytest.raises(HttpError, match="Missing body_md5") as info:
        verify_request("POST", "/apps/1/events", query, b'{"a":1}', KEY, SECRET, NOW)
    assert info.value.status == 400


def test_empty_body_needs_no_body_md5_but_a_sent_one_must_match():
    query = sign_request("GET", "/apps/1/channels", {}, KEY, SECRET, timestamp=NOW)
    assert "body_md5" not in query
    verify_request("GET", "/apps/1/channels", query, b"", KEY, SECRET, NOW)
    wrong = sign_request("GET", "/apps/1/channels", {"body_md5": "f" * 32}, KEY, SECRET,
                         timestamp=NOW)
    with pytest.raises(HttpError) as info:
        verify_request("GET", "/apps/1/channels", wrong, b"", KEY, SECRET, NOW)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("path", "/apps/2/events"),
        ("method", "GET"),
        ("secret", "other-secret"),
    ],
)
def test_request_checked_against_other_values_fails_the_signature(sdk, change, value):
    req = _sdk_trigger(sdk)
    with pytest.raises(HttpError, match="Invalid signature") as info:
        _verify(req, **{change: value})
    assert info.value.status == 401


def test_added_query_parameter_fails_the_signature(sdk):
    sdk.channels_info(prefix_filter="presence-")
    req = sdk.sent[-1]
    with pytest.raises(HttpError, match="Invalid signature"):
        _verify(req, query=dict(req.query, info="user_count"))


def test_changed_query_value_fails_the_signature(sdk):
    sdk.channels_info(prefix_filter="presence-")
    req = sdk.sent[-1]
    with pytest.raises(HttpError, match="Invalid signature"):
        _verify(req, query=dict(req.query, filter_by_prefix="private-"))


def test_lowercase_method_is_signed_as_uppercase(sdk):
    req = _sdk_trigger(sdk)
    _verify(req, method="post")


def test_non_ascii_signature_is_a_401_not_a_crash(sdk):
    req = _sdk_trigger(sdk)
    with pytest.raises(HttpError) as info:
        _verify(req, query=dict(req.query, auth_signature="\u00e9" * 64))
    assert info.value.status == 401


def test_signature_error_shows_the_string_to_sign_but_not_the_signature(sdk):
    req = _sdk_trigger(sdk)
    with pytest.raises(HttpError) as info:
        _verify(req, query=dict(req.query, auth_signature="0" * 64))
    message = info.value.message
    assert repr(request_string_to_sign(req.method, req.path, req.query)) in message
    assert req.query["auth_signature"] not in message
    assert SECRET not in message


# --- timestamps ------------------------------------------------------------


@pytest.mark.parametrize("offset", [DEFAULT_MAX_SKEW + 1, -(DEFAULT_MAX_SKEW + 1), 86400])
def test_stale_or_future_timestamp_is_a_401(sdk, offset):
    req = _sdk_trigger(sdk)
    with pytest.raises(HttpError, match="Stale auth_timestamp") as info:
        _verify(req, now=NOW + offset)
    assert info.value.status == 401
    assert "behind" in info.value.message if offset > 0 else "ahead" in info.value.message


def test_max_skew_is_configurable(sdk):
    req = _sdk_trigger(sdk)
    _verify(req, now=NOW + 30, max_skew=30)
    with pytest.raises(HttpError):
        _verify(req, now=NOW + 31, max_skew=30)


@pytest.mark.parametrize("timestamp", ["abc", "1.5", "-5", " 12", "+12", "1_000", "\u0661"])
def test_timestamp_that_is_not_unix_seconds_is_a_401(timestamp):
    query = sign_request("GET", "/apps/1/channels", {}, KEY, SECRET, timestamp=NOW)
    query["auth_timestamp"] = timestamp
    with pytest.raises(HttpError, match="Invalid auth_timestamp") as info:
        verify_request("GET", "/apps/1/channels", query, b"", KEY, SECRET, NOW)
    assert info.value.status == 401


# --- missing and wrong auth parameters -------------------------------------


@pytest.mark.parametrize(
    ("param", "status"),
    [
        ("auth_key", 401),
        ("auth_signature", 401),
        ("auth_timestamp", 401),
        ("auth_version", 400),
        ("body_md5", 400),
    ],
)
def test_missing_auth_parameter_is_refused_and_named(sdk, param, status):
    req = _sdk_trigger(sdk)
    query = {k: v for k, v in req.query.items() if k != param}
    with pytest.raises(HttpError) as info:
        _verify(req, query=query)
    assert info.value.status == status
    assert param in info.value.message


@pytest.mark.parametrize("param", ["auth_key", "auth_signature", "auth_timestamp", "auth_version"])
def test_empty_auth_parameter_counts_as_missing(sdk, param):
    req = _sdk_trigger(sdk)
    with pytest.raises(HttpError, match=f"Missing {param}"):
        _verify(req, query=dict(req.query, **{param: ""}))


def test_key_that_is_not_the_apps_key_is_a_401(sdk):
    req = _sdk_trigger(sdk)
    with pytest.raises(HttpError, match="Invalid auth_key") as info:
        _verify(req, key="another-key")
    assert info.value.status == 401


def test_unsupported_auth_version_is_a_400_even_when_signed():
    query = sign_request("GET", "/apps/1/channels", {}, KEY, SECRET, timestamp=NOW)
    query["auth_version"] = "2.0"  # sign_request always writes 1.0: re-sign with the SDK
    query["auth_signature"] = pusher.signature.sign(
        SECRET, request_string_to_sign("GET", "/apps/1/channels", query)
    )
    with pytest.raises(HttpError, match="Unsupported auth_version") as info:
        verify_request("GET", "/apps/1/channels", query, b"", KEY, SECRET, NOW)
    assert info.value.status == 400


def test_query_keys_are_lower_cased_before_signing():
    query = sign_request("GET", "/apps/1/channels", {"info": "user_count"}, KEY, SECRET,
                         timestamp=NOW)
    query["INFO"] = query.pop("info")
    query["Auth_Key"] = query.pop("auth_key")
    verify_request("GET", "/apps/1/channels", query, b"", KEY, SECRET, NOW)


def test_same_key_in_two_spellings_is_a_400():
    query = sign_request("GET", "/apps/1/channels", {"info": "a"}, KEY, SECRET, timestamp=NOW)
    query["INFO"] = "b"
    with pytest.raises(HttpError, match="Duplicate query parameter") as info:
        verify_request("GET", "/apps/1/channels", query, b"", KEY, SECRET, NOW)
    assert info.value.status == 400


# --- string to sign and sign_request ---------------------------------------


def test_string_to_sign_sorts_lowercases_and_drops_the_signature():
    query = {"b": "2", "A": "1", "auth_signature": "x", "c": "a,b c"}
    assert request_string_to_sign("get", "/p", query) == "GET\n/p\na=1&b=2&c=a,b c"


def test_sign_request_matches_the_sdk_byte_for_byte(sdk):
    sdk.trigger("my-channel", "my-event", {"a": 1})
    req = sdk.sent[-1]
    ours = sign_request("POST", req.path, {}, KEY, SECRET, body=req.body, timestamp=NOW)
    assert ours == req.query


def test_sign_request_adds_the_auth_parameters_without_changing_its_input():
    query = {"info": "user_count"}
    signed = sign_request("GET", "/apps/1/channels", query, KEY, SECRET, timestamp=NOW + 0.7)
    assert query == {"info": "user_count"}
    assert signed["auth_key"] == KEY
    assert signed["auth_timestamp"] == str(NOW)
    assert signed["auth_version"] == AUTH_VERSION == "1.0"
    assert signed["info"] == "user_count"
    assert len(signed["auth_signature"]) == 64


def test_sign_request_replaces_a_stale_signature_in_its_input():
    first = sign_request("GET", "/p", {}, KEY, SECRET, timestamp=NOW)
    again = sign_request("GET", "/p", first, KEY, SECRET, timestamp=NOW + 5)
    verify_request("GET", "/p", again, b"", KEY, SECRET, NOW + 5)


def test_sign_request_defaults_to_the_current_time():
    signed = sign_request("POST", "/apps/1/events", {}, KEY, SECRET, body=b"{}")
    verify_request("POST", "/apps/1/events", signed, b"{}", KEY, SECRET, time.time())

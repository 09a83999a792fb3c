"""transport.auth_request and transport.cors: auth endpoint bodies in, checked fields or 4xx out; answers signed."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import urlencode

import pusher
import pytest

from transport import auth
from transport.auth_request import FORM, JSON, AuthRequest, channel_answer, parse_auth_request, user_answer
from transport.cors import cors_headers, parse_origins, preflight_headers
from transport.errors import ConfigError, HttpError

KEY, SECRET, SOCKET_ID = "app-key", "app-secret", "1234.5678"


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


def status_of(body: bytes, content_type: str | None = FORM, *, channel: bool = True) -> int:
    with pytest.raises(HttpError) as info:
        parse_auth_request(body, content_type, channel=channel)
    return info.value.status


# --- parsing ---------------------------------------------------------------------------


def test_a_pusher_js_form_body_gives_socket_id_channel_and_every_field():
    body = form(socket_id=SOCKET_ID, channel_name="private-room", team="7")
    request = parse_auth_request(body, "application/x-www-form-urlencoded; charset=UTF-8", channel=True)
    assert request == AuthRequest(SOCKET_ID, "private-room", {"socket_id": SOCKET_ID,
                                                              "channel_name": "private-room", "team": "7"})


def test_a_json_body_gives_the_same_fields():
    body = json.dumps({"socket_id": SOCKET_ID, "channel_name": "presence-room", "extra": [1]}).encode()
    request = parse_auth_request(body, JSON, channel=True)
    assert (request.socket_id, request.channel_name, request.params["extra"]) == (SOCKET_ID, "presence-room", [1])


def test_a_sign_in_needs_only_the_socket_id():
    assert parse_auth_request(form(socket_id=SOCKET_ID), FORM, channel=False).channel_name is None


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "multipart/form-data; boundary=x"])
def test_other_content_types_get_415(content_type):
    assert status_of(form(socket_id=SOCKET_ID, channel_name="private-a"), content_type) == 415


@pytest.mark.parametrize("socket_id", ["", "1234", "1.2.3", "a.b", "١٢.٣٤", "1.2\n", "1" * 21 + ".1", " 1.2"])
def test_a_malformed_socket_id_gets_400(socket_id):
    assert status_of(form(socket_id=socket_id, channel_name="private-a")) == 400
    assert status_of(json.dumps({"socket_id": socket_id}).encode(), JSON, channel=False) == 400


@pytest.mark.parametrize("channel", ["", "private-a b", "private-é", "x" * 201, "#server-to-user-1", "news",
                                     "cache-news"])
def test_a_bad_or_public_channel_name_gets_400(channel):
    assert status_of(form(socket_id=SOCKET_ID, channel_name=channel)) == 400


@pytest.mark.parametrize("body", [
    b"socket_id=1.2&channel_name=private-a&socket_id=3.4",   # a field twice
    b"socket_id=1.2&channel_name",                           # not k=v
    b"socket_id=1.2&channel_name=private-%ED%A0%80",         # percent-encoded lone surrogate
    b"socket_id=1.2&channel_name=private-\xff",              # not UTF-8
    "&".join(f"f{i}=1" for i in range(40)).encode(),         # a flood of fields
    b"socket_id=1.2",                                        # no channel_name
])
def test_malformed_form_bodies_get_400(body):
    assert status_of(body) == 400


@pytest.mark.parametrize("body", [
    b"{", b"[]", b'"socket_id"', b'{"socket_id": 1.2, "channel_name": "private-a"}',
    b'{"socket_id": "1.2", "channel_name": ["private-a"]}',
    b'{"socket_id": "1.2", "channel_name": "private-a", "x": "\\ud800"}',
    b'{"socket_id": "1.2", "channel_name": "private-a", "x": NaN}',
    b'{"socket_id": "1.2", "channel_name": "private-\xed\xa0\x80"}',
])
def test_malformed_json_bodies_get_400(body):
    assert status_of(body, JSON) == 400


# --- answers -----------------------------------------------------------------------------


def test_private_answer_equals_the_python_sdks():
    sdk = pusher.Pusher(app_id="1", key=KEY, secret=SECRET)
    assert channel_answer(KEY, SECRET, SOCKET_ID, "private-room") == sdk.authenticate("private-room", SOCKET_ID)


def test_presence_answer_signs_the_member_as_channel_data():
    answer = channel_answer(KEY, SECRET, SOCKET_ID, "presence-room", {"user_id": 42, "user_info": {"name": "Ann"}})
    auth.verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-room", answer["auth"], answer["channel_data"])
    assert json.loads(answer["channel_data"]) == {"user_id": 42, "user_info": {"name": "Ann"}}


@pytest.mark.parametrize("member", [None, {}, {"user_info": {}}, {"user_id": ""}, {"user_id": True},
                                    {"user_id": "1", "user_info": "x" * 3000}, {"user_id": "\ud800"},
                                    {"user_id": "1", "user_info": {"n": float("nan")}}])
def test_a_presence_answer_without_a_usable_member_is_a_value_error(member):
    with pytest.raises(ValueError):
        channel_answer(KEY, SECRET, SOCKET_ID, "presence-room", member)


def test_encrypted_answer_carries_the_channels_shared_secret():
    master = bytes(range(32))
    answer = channel_answer(KEY, SECRET, SOCKET_ID, "private-encrypted-a", encryption_master_key=master)
    assert answer["shared_secret"] == base64.b64encode(hashlib.sha256(b"private-encrypted-a" + master).digest()).decode()
    with pytest.raises(ValueError):
        channel_answer(KEY, SECRET, SOCKET_ID, "private-encrypted-a")


def test_user_answer_verifies_and_keeps_user_info_and_watchlist():
    answer = user_answer(KEY, SECRET, SOCKET_ID, {"id": "42", "user_info": {"name": "Ann"}, "watchlist": ["7"]})
    auth.verify_user_auth(KEY, SECRET, SOCKET_ID, answer["user_data"], answer["auth"])
    user = auth.parse_user_data(answer["user_data"])
    assert (user.id, user.user_info, user.watchlist) == ("42", {"name": "Ann"}, ("7",))


@pytest.mark.parametrize("user", [{}, {"id": 42}, {"id": ""}, {"id": "1", "watchlist": "7"}, {"id": object()}, "42"])
def test_a_user_without_a_string_id_is_a_value_error(user):
    with pytest.raises(ValueError):
        user_answer(KEY, SECRET, SOCKET_ID, user)


# --- CORS ------------------------------------------------------------------------------------


def test_only_listed_origins_get_allow_headers_and_every_answer_varies_on_origin():
    allowed = parse_origins(["http://localhost:3000", "HTTPS://App.Example.com"])
    assert ("Access-Control-Allow-Origin", "http://localhost:3000") in cors_headers("http://localhost:3000", allowed)
    assert ("Access-Control-Allow-Origin", "https://app.example.com") in cors_headers("https://app.example.com", allowed)
    for origin in (None, "http://localhost:3001", "null", "http://localhost:3000.evil.example"):
        assert cors_headers(origin, allowed) == [("Vary", "Origin")]


@pytest.mark.parametrize("origin", ["*", "null", "localhost:3000", "http://localhost:3000/", "http://a/path",
                                    "ftp://a", "http://user@a", ""])
def test_malformed_allowed_origins_are_config_errors(origin):
    with pytest.raises(ConfigError):
        parse_origins([origin])


def test_one_string_instead_of_a_list_is_a_config_error():
    with pytest.raises(ConfigError):
        parse_origins("http://localhost:3000")


def test_a_preflight_from_an_allowed_origin_allows_post_and_the_requested_headers():
    allowed = parse_origins(["http://localhost:3000"])
    headers = dict(preflight_headers("http://localhost:3000", "POST", "content-type, X-CSRF-TOKEN", allowed))
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "content-type, X-CSRF-TOKEN"
    assert int(headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize(("origin", "method", "requested", "status"), [
    ("http://other:3000", "POST", None, 403),
    (None, "POST", None, 403),
    ("http://localhost:3000", "DELETE", None, 405),
    ("http://localhost:3000", "POST", "x-a, bad header", 400),
    ("http://localhost:3000", "POST", ",".join(f"x-{i}" for i in range(40)), 400),
])
def test_a_preflight_that_is_not_allowed_gets_its_status(origin, method, requested, status):
    with pytest.raises(HttpError) as info:
        preflight_headers(origin, method, requested, parse_origins(["http://localhost:3000"]))
    assert info.value.status == status

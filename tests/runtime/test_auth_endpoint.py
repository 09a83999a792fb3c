"""actors.auth_endpoint.AuthEndpoint called as a WSGI server calls it (a fake environ, no socket)."""

from __future__ import annotations

import io
import json
import logging
from typing import Any
from urllib.parse import urlencode

import pytest

from actors import App
from actors.auth_endpoint import ENVIRON_KEY, AuthEndpoint
from transport import auth
from transport.errors import ConfigError

KEY, SECRET, SOCKET_ID = "app-key", "app-secret", "1234.5678"
ANN = {"user_id": "42", "user_info": {"name": "Ann"}}
ORIGIN = "http://localhost:3000"


def allow_all(environ: dict[str, Any], socket_id: str, channel: str) -> Any:
    return dict(ANN) if channel.startswith("presence-") else True


def ann_signs_in(environ: dict[str, Any], socket_id: str) -> Any:
    return {"id": "42", "user_info": {"name": "Ann"}}


def call(app: Any, path: str = "/pusher/auth", body: bytes | None = None, *, method: str = "POST",
         content_type: str = "application/x-www-form-urlencoded", **headers: str) -> tuple[int, dict[str, str], Any]:
    """Run one request through the WSGI app; return (status, headers, parsed JSON body or None)."""
    body = b"" if body is None else body
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_TYPE": content_type,
                               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    environ.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    started: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started["status"], started["headers"] = status, dict(response_headers)

    data = b"".join(app(environ, start_response))
    assert int(started["headers"]["Content-Length"]) == len(data)
    return int(started["status"].split()[0]), started["headers"], json.loads(data) if data else None


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


@pytest.fixture
def endpoint() -> AuthEndpoint:
    return AuthEndpoint(App(key=KEY, secret=SECRET), allow_all, ann_signs_in, allowed_origins=[ORIGIN])


def test_private_channel_is_signed_for_the_socket_and_channel(endpoint):
    status, headers, body = call(endpoint, body=form(socket_id=SOCKET_ID, channel_name="private-room"))
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    auth.verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-room", body["auth"])


def test_presence_channel_answer_carries_the_member_from_authorize(endpoint):
    status, _, body = call(endpoint, body=form(socket_id=SOCKET_ID, channel_name="presence-room"))
    assert status == 200
    member = auth.parse_presence_channel_data(body["channel_data"])
    assert (member.user_id, member.user_info) == ("42", {"name": "Ann"})


def test_json_bodies_are_answered_like_form_bodies(endpoint):
    body = json.dumps({"socket_id": SOCKET_ID, "channel_name": "private-room"}).encode()
    status, _, answer = call(endpoint, body=body, content_type="application/json")
    assert status == 200
    auth.verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-room", answer["auth"])


def test_sign_in_answers_the_user_from_authenticate_user(endpoint):
    status, _, body = call(endpoint, "/pusher/user-auth", form(socket_id=SOCKET_ID))
    assert status == 200
    auth.verify_user_auth(KEY, SECRET, SOCKET_ID, body["user_data"], body["auth"])
    assert auth.parse_user_data(body["user_data"]).id == "42"


def test_authorize_is_asked_with_the_checked_request_and_sees_it_in_the_environ():
    asked = []

    def authorize(environ, socket_id, channel):
        asked.append((socket_id, channel, dict(environ[ENVIRON_KEY].params)))
        return True

    call(AuthEndpoint(App(), authorize), body=form(socket_id=SOCKET_ID, channel_name="private-a", team="7"))
    assert asked == [(SOCKET_ID, "private-a", {"socket_id": SOCKET_ID, "channel_name": "private-a", "team": "7"})]


@pytest.mark.parametrize("refusal", [None, False])
def test_a_refusal_from_authorize_is_403(refusal):
    endpoint = AuthEndpoint(App(), lambda environ, socket_id, channel: refusal)
    status, _, body = call(endpoint, body=form(socket_id=SOCKET_ID, channel_name="private-a"))
    assert status == 403 and "auth" not in body and body["error"]


def test_a_refusal_from_authenticate_user_is_403():
    endpoint = AuthEndpoint(App(), allow_all, lambda environ, socket_id: None)
    assert call(endpoint, "/pusher/user-auth", form(socket_id=SOCKET_ID))[0] == 403


def test_sign_in_without_authenticate_user_is_404():
    assert call(AuthEndpoint(App(), allow_all), "/pusher/user-auth", form(socket_id=SOCKET_ID))[0] == 404


@pytest.mark.parametrize(("body", "status"), [
    (form(socket_id="x", channel_name="private-a"), 400),
    (form(socket_id=SOCKET_ID, channel_name="news"), 400),
    (form(socket_id=SOCKET_ID, channel_name="private-" + "a" * 300), 400),
    (b"socket_id=1.2&channel_name=private-%FF", 400),
])
def test_malformed_requests_are_400_and_never_reach_authorize(body, status):
    def authorize(environ, socket_id, channel):
        raise AssertionError("authorize must not see a malformed request")

    assert call(AuthEndpoint(App(), authorize), body=body)[0] == status


def test_content_length_is_required_and_bounded():
    endpoint = AuthEndpoint(App(), allow_all, max_body_bytes=100)
    assert call(endpoint, body=form(socket_id=SOCKET_ID, channel_name="private-a", pad="x" * 100))[0] == 413
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/pusher/auth", "wsgi.input": io.BytesIO(b""),
               "CONTENT_TYPE": "application/x-www-form-urlencoded"}
    statuses = []
    endpoint(environ, lambda status, headers: statuses.append(status))
    environ.update(CONTENT_LENGTH="-1", **{"wsgi.input": io.BytesIO(b"")})
    endpoint(environ, lambda status, headers: statuses.append(status))
    environ.update(CONTENT_LENGTH="50", **{"wsgi.input": io.BytesIO(b"socket_id=1.2")})  # body cut short
    endpoint(environ, lambda status, headers: statuses.append(status))
    assert [int(s.split()[0]) for s in statuses] == [411, 400, 400]


def test_other_content_types_are_415(endpoint):
    assert call(endpoint, body=b"socket_id=1.2", content_type="text/plain")[0] == 415


def test_other_methods_are_405_with_allow(endpoint):
    status, headers, _ = call(endpoint, method="GET")
    assert status == 405 and headers["Allow"] == "POST, OPTIONS"


def test_other_paths_are_404_or_go_to_the_fallback():
    assert call(AuthEndpoint(App(), allow_all), "/elsewhere")[0] == 404

    def fallback(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"{}"]

    assert call(AuthEndpoint(App(), allow_all, fallback=fallback), "/elsewhere")[0] == 200


def test_custom_paths_are_served_instead_of_the_defaults():
    endpoint = AuthEndpoint(App(), allow_all, ann_signs_in, channel_path="/broadcasting/auth",
                            user_path="/broadcasting/user-auth")
    assert call(endpoint, "/broadcasting/auth", form(socket_id=SOCKET_ID, channel_name="private-a"))[0] == 200
    assert call(endpoint, "/broadcasting/user-auth", form(socket_id=SOCKET_ID))[0] == 200
    assert call(endpoint, "/pusher/auth", form(socket_id=SOCKET_ID, channel_name="private-a"))[0] == 404


def test_allowed_origins_get_allow_origin_on_answers_and_errors_others_do_not(endpoint):
    ok = form(socket_id=SOCKET_ID, channel_name="private-a")
    for body, status in ((ok, 200), (b"socket_id=bad", 400)):
        got, headers, _ = call(endpoint, body=body, ORIGIN=ORIGIN)
        assert got == status
        assert headers["Access-Control-Allow-Origin"] == ORIGIN and headers["Vary"] == "Origin"
        got, headers, _ = call(endpoint, body=body, ORIGIN="http://evil.example")
        assert got == status and "Access-Control-Allow-Origin" not in headers


def test_preflights_are_answered_for_allowed_origins_only(endpoint):
    status, headers, body = call(endpoint, method="OPTIONS", ORIGIN=ORIGIN, ACCESS_CONTROL_REQUEST_METHOD="POST",
                                 ACCESS_CONTROL_REQUEST_HEADERS="x-csrf-token")
    assert (status, body) == (204, None)
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert headers["Access-Control-Allow-Headers"] == "x-csrf-token"
    status, headers, _ = call(endpoint, method="OPTIONS", ORIGIN="http://evil.example",
                              ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert status == 403 and "Access-Control-Allow-Origin" not in headers


def test_a_plain_options_request_lists_the_methods(endpoint):
    status, headers, _ = call(endpoint, method="OPTIONS")
    assert status == 204 and headers["Allow"] == "POST, OPTIONS"


def test_an_unusable_answer_from_the_app_is_a_500_logged_without_leaking_it(caplog):
    endpoint = AuthEndpoint(App(), lambda environ, socket_id, channel: True)  # no member for presence
    with caplog.at_level(logging.ERROR, logger="actors.auth_endpoint"):
        status, _, body = call(endpoint, body=form(socket_id=SOCKET_ID, channel_name="presence-a"))
    assert status == 500 and "True" not in body["error"]
    assert "presence-a" in caplog.text


def test_bad_settings_are_refused_at_construction():
    with pytest.raises(ConfigError):
        AuthEndpoint(App(), allow_all, allowed_origins=["*"])
    for kwargs in ({"encryption_master_key": b"short"}, {"channel_path": "pusher/auth"},
                   {"channel_path": "/a", "user_path": "/a"}, {"max_body_bytes": 0}):
        with pytest.raises(ValueError):
            AuthEndpoint(App(), allow_all, **kwargs)

"""The chat's web app without a browser: what it accepts, what it signs, what it broadcasts.

The checks and the cookie are pure functions (examples/chat/checks.py); the
endpoints are exercised over real HTTP against the module's chat process,
and a websocket-client subscriber on its node sees what ``POST /messages``
broadcasts.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from examples.chat.checks import (
    MAX_NAME,
    MAX_TEXT,
    Refused,
    User,
    check_name,
    check_room,
    check_text,
    read_user,
    sign_user,
)
from tests.wsclient import PusherClient
from transport import auth

SECRET = b"s" * 32


class Web:
    """One browser's worth of HTTP: a cookie jar and JSON requests, every call bounded."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             content_type: str = "application/json", form: dict[str, str] | None = None) -> tuple[int, dict, Any]:
        data = raw
        if form is not None:
            data, content_type = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=5) as response:
                status, headers_, payload = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, headers_, payload = exc.code, exc.headers, exc.read()
        is_json = headers_.get("Content-Type", "").startswith("application/json")
        return status, headers_, json.loads(payload) if is_json else payload

    def named(self, name: str) -> dict:
        status, _, body = self.call("POST", "/session", {"name": name})
        assert status == 200, body
        return body["user"]


@pytest.fixture
def web(chat_server) -> Web:
    return Web(chat_server.url)


# --- pure checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "Name is empty"),
        ("   ", "Name is empty"),
        ("x" * (MAX_NAME + 1), "Name is longer than 32 characters"),
        ("a\x00b", "Name holds a control character (U+0000)"),
        ("a\x1bb", "Name holds a control character (U+001B)"),
        ("evil\u202eeman", "Name holds a control character (U+202E)"),
        ("\ud800", "Name is not valid Unicode"),
        (42, "Name must be text"),
        (None, "Name must be text"),
    ],
)
def test_names_that_are_refused_say_why(value, reason):
    with pytest.raises(Refused, match=f"^{re.escape(reason)}$"):
        check_name(value)


def test_names_and_texts_are_stripped_and_may_hold_any_printable_text():
    assert check_name("  Ann  ") == "Ann"
    assert check_name("x" * MAX_NAME) == "x" * MAX_NAME
    assert check_name("Zoë 👩‍💻") == "Zoë 👩‍💻"  # the zero-width joiner is not a control character here
    assert check_text("<img src=x onerror=alert(1)>") == "<img src=x onerror=alert(1)>"  # escaping is the page's job
    assert check_text("y" * MAX_TEXT) == "y" * MAX_TEXT
    with pytest.raises(Refused, match="Message is longer than 500 characters"):
        check_text("y" * (MAX_TEXT + 1))
    assert check_room("lobby", ("lobby", "help")) == "lobby"
    with pytest.raises(Refused, match="unknown room"):
        check_room("nope", ("lobby", "help"))


def test_the_name_cookie_reads_back_and_refuses_forgeries():
    cookie = sign_user(SECRET, User("u-0a1b2c3d", "Ann"))
    assert read_user(SECRET, cookie) == User("u-0a1b2c3d", "Ann")
    payload, mac = cookie.rsplit(".", 1)
    forged = sign_user(b"another secret", User("u-0a1b2c3d", "Bob"))
    for bad in (None, "", "garbage", forged, f"{payload}.{'0' * 64}", f"{payload}x.{mac}", f"{payload}.{mac}é",
                f"{forged.rsplit('.', 1)[0]}.{mac}"):
        assert read_user(SECRET, bad) is None, bad
    # Signed but not a user the app makes (an old format, a bad id): refused too.
    assert read_user(SECRET, sign_user(SECRET, User("admin", "Ann"))) is None


# --- the endpoints, over HTTP ----------------------------------------------------------


def test_picking_a_name_sets_a_signed_http_only_same_site_cookie(web):
    status, headers, body = web.call("POST", "/session", {"name": "  Ann "})
    assert status == 200
    assert body["user"]["name"] == "Ann" and body["user"]["id"].startswith("u-")
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("chat_user=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    _, _, session = web.call("GET", "/session")
    assert session["user"] == body["user"]
    assert session["rooms"][0] == "t1" and session["pusher"]["key"] == "app-key"
    renamed = web.named("Annie")
    assert renamed["id"] == body["user"]["id"]  # same person, new name
    assert web.call("POST", "/logout", {})[0] == 200
    assert web.call("GET", "/session")[2]["user"] is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"room": "t1", "text": ""}, "Message is empty"),
        ({"room": "t1", "text": " \t "}, "Message is empty"),
        ({"room": "t1", "text": "y" * 501}, "Message is longer than 500 characters"),
        ({"room": "t1", "text": "bell\x07"}, "Message holds a control character (U+0007)"),
        ({"room": "t1", "text": 5}, "Message must be text"),
        ({"room": "nowhere", "text": "hi"}, "unknown room; rooms are t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12"),
        ({"text": "hi"}, "unknown room; rooms are t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12"),
        (["t1", "hi"], "the body must be a JSON object"),
    ],
)
def test_the_server_refuses_what_the_page_refuses_with_a_json_reason(web, body, reason):
    web.named("Ann")
    status, _, answer = web.call("POST", "/messages", body)
    assert (status, answer) == (400, {"error": reason})


def test_broken_bodies_are_refused_not_crashed_on(web):
    web.named("Ann")
    lone_surrogate = b'{"room": "t1", "text": "\\ud800"}'  # legal JSON, not valid Unicode
    assert web.call("POST", "/messages", raw=lone_surrogate)[2] == {"error": "Message is not valid Unicode"}
    assert web.call("POST", "/session", raw=b'{"name": "\\udfff"}')[2] == {"error": "Name is not valid Unicode"}
    assert web.call("POST", "/messages", raw=b"\xff\xfe")[:3:2] == (400, {"error": "the body is not valid JSON"})
    assert web.call("POST", "/messages", raw=b'{"room": "t1", "text": "hi"}', content_type="text/plain")[0] == 415
    assert web.call("POST", "/messages", raw=b"x" * 20_000)[0] == 413
    assert web.call("GET", "/messages?room=t1&room=" + "x" * 10)[0] == 200
    status, headers, _ = web.call("PUT", "/messages", {})
    assert status == 405 and headers["Allow"] == "GET, POST"
    assert web.call("GET", "/etc/passwd")[:3:2] == (404, {"error": "no such page"})


def test_without_a_name_nothing_is_signed_or_sent(web, chat_server):
    for method, path, kwargs in [
        ("POST", "/messages", {"body": {"room": "t1", "text": "hi"}}),
        ("GET", "/messages?room=t1", {}),
        ("POST", "/pusher/auth", {"form": {"socket_id": "1.2", "channel_name": "presence-room-t1"}}),
        ("POST", "/pusher/user-auth", {"form": {"socket_id": "1.2"}}),
    ]:
        assert web.call(method, path, **kwargs)[:3:2] == (401, {"error": "choose a name first"}), path
    forger = Web(chat_server.url)
    forger.jar.set_cookie(http.cookiejar.Cookie(
        0, "chat_user", sign_user(SECRET, User("u-00000000", "Root")), None, False, "127.0.0.1", False, False,
        "/", True, False, None, False, None, None, {}))
    assert forger.call("GET", "/messages?room=t1")[0] == 401


def test_the_auth_endpoints_sign_what_the_node_verifies(web):
    user = web.named("Ann")
    status, _, signed = web.call("POST", "/pusher/auth", form={"socket_id": "123.456", "channel_name": "presence-room-t2"})
    assert status == 200
    assert json.loads(signed["channel_data"]) == {"user_id": user["id"], "user_info": {"name": "Ann"}}
    auth.verify_channel_auth("app-key", "app-secret", "123.456", "presence-room-t2", signed["auth"], signed["channel_data"])
    status, _, signed_in = web.call("POST", "/pusher/user-auth", form={"socket_id": "123.456"})
    assert status == 200 and json.loads(signed_in["user_data"])["id"] == user["id"]
    auth.verify_user_auth("app-key", "app-secret", "123.456", signed_in["user_data"], signed_in["auth"])
    for channel in ("presence-room-nowhere", "private-room-t2", "presence-room-t2x", "private-encrypted-x"):
        assert web.call("POST", "/pusher/auth", form={"socket_id": "1.2", "channel_name": channel})[0] == 403, channel
    for socket_id in ("", "1", "1.2.3", "a.b", "1.2\n"):
        answer = web.call("POST", "/pusher/auth", form={"socket_id": socket_id, "channel_name": "presence-room-t2"})
        assert answer[:3:2] == (400, {"error": "socket_id is missing or malformed"}), socket_id


def test_a_posted_message_is_broadcast_to_the_room_and_kept_for_later(web):
    web.named("Ann")
    config = web.call("GET", "/session")[2]["pusher"]
    with PusherClient.connect(config["wsPort"], config["key"]) as client:
        form = {"socket_id": client.socket_id, "channel_name": "presence-room-t11"}
        client.subscribe("presence-room-t11", **web.call("POST", "/pusher/auth", form=form)[2])
        status, _, answer = web.call("POST", "/messages", {"room": "t11", "text": " <b>hi</b> "})
        assert status == 200
        event = client.expect("message", "presence-room-t11")
        assert json.loads(event["data"]) == answer["message"]
        assert answer["message"]["text"] == "<b>hi</b>" and answer["message"]["author"] == "Ann"
    for n in range(60):  # the history keeps the last 50 of each room
        assert web.call("POST", "/messages", {"room": "t12", "text": f"m{n}"})[0] == 200
    recent = web.call("GET", "/messages?room=t12")[2]["messages"]
    assert [m["text"] for m in recent] == [f"m{n}" for n in range(10, 60)]
    assert web.call("GET", "/messages?room=t11")[2]["messages"] == [answer["message"]]


def test_the_page_and_pusher_js_are_served_with_a_strict_content_policy(web):
    status, headers, page = web.call("GET", "/")
    assert status == 200 and b'<script src="/vendor/pusher.min.js"' in page
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'self': no inline script runs
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    status, headers, script = web.call("GET", "/vendor/pusher.min.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"Pusher" in script
    assert web.call("POST", "/", {})[0] == 405

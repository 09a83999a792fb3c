"""examples/pusher_auth: the demo endpoint built on actors.auth_endpoint works as documented.

AuthEndpoint itself is tested in tests/runtime/test_auth_endpoint.py (WSGI
calls) and tests/e2e/test_auth_endpoint.py (pusher-js, CORS). Here: the
example's ``identify``/``may_join`` model, its guests, its answers used on a
real node over a WebSocket, and ``python -m examples.pusher_auth`` serving.
"""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pusher.signature
import pytest

from examples.pusher_auth import make_auth_app
from tests.pyproc import PythonProcess
from tests.wsgiserve import serve_wsgi
from transport import auth

KEY, SECRET = "app-key", "app-secret"
SOCKET_ID = "1234.5678"
ANN = {"id": "42", "user_info": {"name": "Ann"}}
TIMEOUT = 5.0


def post(app, path: str, form: dict[str, str] | None = None, *, method: str = "POST") -> tuple[int, dict[str, str], Any]:
    """Call the WSGI app as a server would; return (status code, headers, parsed JSON body)."""
    body = urllib.parse.urlencode(form or {}).encode()
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    started: dict[str, Any] = {}

    def start_response(status, headers, exc_info=None):
        started["status"], started["headers"] = status, dict(headers)

    chunks = app(environ, start_response)
    data = b"".join(chunks)
    assert started["headers"]["Content-Type"] == "application/json"
    assert int(started["headers"]["Content-Length"]) == len(data)
    return int(started["status"].split()[0]), started["headers"], json.loads(data)


@pytest.fixture
def auth_app():
    return make_auth_app(KEY, SECRET, identify=lambda environ: dict(ANN))


def _hex(signed: str) -> str:
    key, _, signature = signed.rpartition(":")
    assert key == KEY
    return signature


# --- direct WSGI calls ----------------------------------------------------------------


def test_presence_channel_auth_signs_channel_data_naming_the_identified_user(auth_app):
    status, _, body = post(auth_app, "/pusher/auth", {"socket_id": SOCKET_ID, "channel_name": "presence-room"})
    assert status == 200
    assert set(body) == {"auth", "channel_data"}
    auth.verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-room", body["auth"], body["channel_data"])
    member = auth.parse_presence_channel_data(body["channel_data"])
    assert (member.user_id, member.user_info) == ("42", {"name": "Ann"})
    assert pusher.signature.verify(SECRET, f"{SOCKET_ID}:presence-room:{body['channel_data']}", _hex(body["auth"]))


def test_user_auth_signs_the_identified_users_data(auth_app):
    status, _, body = post(auth_app, "/pusher/user-auth", {"socket_id": SOCKET_ID})
    assert status == 200
    assert set(body) == {"auth", "user_data"}
    auth.verify_user_auth(KEY, SECRET, SOCKET_ID, body["user_data"], body["auth"])
    user = auth.parse_user_data(body["user_data"])
    assert (user.id, user.user_info) == ("42", {"name": "Ann"})
    assert pusher.signature.verify(SECRET, f"{SOCKET_ID}::user::{body['user_data']}", _hex(body["auth"]))


def test_anonymous_visitor_is_refused_with_403():
    app = make_auth_app(KEY, SECRET, identify=lambda environ: None)
    for path, form in (("/pusher/auth", {"socket_id": SOCKET_ID, "channel_name": "private-room"}),
                       ("/pusher/user-auth", {"socket_id": SOCKET_ID})):
        status, _, body = post(app, path, form)
        assert status == 403 and "auth" not in body


def test_channel_the_user_may_not_join_is_refused_with_403():
    app = make_auth_app(KEY, SECRET, identify=lambda environ: dict(ANN),
                        may_join=lambda user, channel: channel != "private-admins")
    status, _, body = post(app, "/pusher/auth", {"socket_id": SOCKET_ID, "channel_name": "private-admins"})
    assert status == 403 and "auth" not in body
    assert post(app, "/pusher/auth", {"socket_id": SOCKET_ID, "channel_name": "private-room"})[0] == 200


def test_may_join_is_asked_with_the_identified_user_and_channel():
    asked = []
    app = make_auth_app(KEY, SECRET, identify=lambda environ: dict(ANN),
                        may_join=lambda user, channel: asked.append((user["id"], channel)) or True)
    post(app, "/pusher/auth", {"socket_id": SOCKET_ID, "channel_name": "presence-room"})
    assert asked == [("42", "presence-room")]


def test_default_identify_makes_a_distinct_guest_per_request():
    app = make_auth_app(KEY, SECRET)
    users = [auth.parse_user_data(post(app, "/pusher/user-auth", {"socket_id": SOCKET_ID})[2]["user_data"])
             for _ in range(2)]
    assert users[0].id.startswith("guest-") and users[1].id.startswith("guest-")
    assert users[0].id != users[1].id


# --- over real sockets -----------------------------------------------------------------------


@pytest.fixture
def auth_url():
    """The example app served by gevent.pywsgi on 127.0.0.1 port 0, stopped after the test."""
    with serve_wsgi(make_auth_app(KEY, SECRET, identify=lambda environ: dict(ANN))) as url:
        yield url


def _form_post(url: str, form: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_endpoint_auth_lets_a_websocket_client_join_private_and_presence_channels_and_sign_in(auth_url, connect):
    client = connect()
    private = _form_post(f"{auth_url}/pusher/auth", {"socket_id": client.socket_id, "channel_name": "private-room"})
    client.subscribe("private-room", **private)

    presence = _form_post(f"{auth_url}/pusher/auth",
                          {"socket_id": client.socket_id, "channel_name": "presence-room"})
    joined = client.subscribe("presence-room", **presence)
    assert json.loads(joined["data"])["presence"] == {"ids": ["42"], "hash": {"42": {"name": "Ann"}}, "count": 1}

    user = _form_post(f"{auth_url}/pusher/user-auth", {"socket_id": client.socket_id})
    client.send_event("pusher:signin", user)
    signed_in = client.expect("pusher:signin_success")
    assert json.loads(signed_in["data"])["user_data"] == user["user_data"]
    client.subscribe("#server-to-user-42")


def test_endpoint_answers_a_get_over_http_with_405(auth_url):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{auth_url}/pusher/auth", timeout=TIMEOUT)  # a GET
    assert info.value.code == 405


def test_allowed_origins_reach_the_endpoint():
    app = make_auth_app(KEY, SECRET, allowed_origins=["http://localhost:3000"])
    body = urllib.parse.urlencode({"socket_id": SOCKET_ID, "channel_name": "private-room"}).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/pusher/auth", "HTTP_ORIGIN": "http://localhost:3000",
               "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    started: dict[str, Any] = {}
    app(environ, lambda status, headers: started.update(headers))
    assert started["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_python_m_examples_pusher_auth_serves_guests_until_ctrl_c():
    with PythonProcess("examples.pusher_auth", "--port", "0") as proc:
        url = proc.wait_for(re.compile(r"(http://127\.0\.0\.1:\d+)/pusher/auth"), 15).group(1)
        answer = _form_post(f"{url}/pusher/user-auth", {"socket_id": SOCKET_ID})
        assert auth.parse_user_data(answer["user_data"]).id.startswith("guest-")
        assert proc.stop() == 0
        assert "Traceback" not in proc.text()

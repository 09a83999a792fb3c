"""End-to-end: the real pusher-js authenticates through AuthEndpoint served by gevent.pywsgi.

pusher-js (tests/js/client.js under Node) is configured with its own endpoint
transport (``channelAuthorization: {endpoint}``), so it POSTs its form body to
the endpoint exactly as a browser page would; the signatures it gets back then
let it join private and presence channels and sign in on a real node. The CORS
tests speak HTTP as a browser does (a preflight, then the POST), and a real
headless Chromium loads a page on another origin whose pusher-js asks the
endpoint, so the browser itself decides whether the answer may be read.
"""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from actors import App
from actors.auth_endpoint import AuthEndpoint
from tests.jsdriver import PusherJsClient, ensure_node_modules
from tests.wsgiserve import serve_wsgi

HOST = "127.0.0.1"
PAGE_ORIGIN = "http://localhost:3000"
TIMEOUT = 5.0

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


class Users:
    """The app's side: who is signed in (here: Ann, always) and what they may join."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def authorize(self, environ: dict[str, Any], socket_id: str, channel: str) -> Any:
        self.asked.append((socket_id, channel))
        if channel == "private-admins":
            return None
        if channel.startswith("presence-"):
            return {"user_id": "ann", "user_info": {"name": "Ann"}}
        return True

    def authenticate_user(self, environ: dict[str, Any], socket_id: str) -> Any:
        return {"id": "ann", "user_info": {"name": "Ann"}}


@pytest.fixture
def users() -> Users:
    return Users()


@pytest.fixture
def auth_url(users: Users) -> Iterator[str]:
    endpoint = AuthEndpoint(App(), users.authorize, users.authenticate_user, allowed_origins=[PAGE_ORIGIN])
    with serve_wsgi(endpoint) as url:
        yield url


@pytest.fixture
def pusher_js(node, auth_url) -> Iterator[PusherJsClient]:
    ensure_node_modules()
    options = {
        "channelAuthorization": {"endpoint": f"{auth_url}/pusher/auth", "transport": "ajax"},
        "userAuthentication": {"endpoint": f"{auth_url}/pusher/user-auth", "transport": "ajax"},
    }
    with PusherJsClient(HOST, node.port, "app-key", options=options) as client:
        yield client


def test_pusher_js_joins_a_private_channel_with_the_endpoints_signature(node, pusher_js, users, wait_until):
    socket_id = pusher_js.wait_connected()
    pusher_js.subscribe("private-room")
    pusher_js.expect_event("private-room", "pusher:subscription_succeeded", timeout=TIMEOUT)
    assert users.asked == [(socket_id, "private-room")]
    wait_until(lambda: node.subscription_count("1", "private-room") == 1)
    node.broadcast("1", "private-room", "greeting", {"text": "hi"})
    assert pusher_js.expect_event("private-room", "greeting", timeout=TIMEOUT)["data"] == {"text": "hi"}


def test_pusher_js_joins_a_presence_channel_as_the_member_authorize_named(pusher_js):
    pusher_js.wait_connected()
    pusher_js.subscribe("presence-room")
    joined = pusher_js.expect_event("presence-room", "pusher:subscription_succeeded", timeout=TIMEOUT)
    assert joined["data"]["me"] == {"id": "ann", "info": {"name": "Ann"}}
    assert joined["data"]["count"] == 1


def test_pusher_js_signs_in_as_the_user_authenticate_user_named(pusher_js):
    pusher_js.wait_connected()
    pusher_js.signin()
    signed_in = pusher_js.expect("signin_success", timeout=TIMEOUT)
    assert signed_in["user_data"] == {"id": "ann", "user_info": {"name": "Ann"}}


def test_a_channel_authorize_refuses_reaches_pusher_js_as_a_403_subscription_error(pusher_js):
    pusher_js.wait_connected()
    pusher_js.subscribe("private-admins")
    error = pusher_js.expect_event("private-admins", "pusher:subscription_error", timeout=TIMEOUT)
    assert error["data"]["status"] == 403


# --- CORS, as a browser on another origin speaks it -------------------------------------------


def request(url: str, method: str, body: bytes = b"", **headers: str) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    connection.request(method, parts.path, body=body or None, headers=headers)
    response = connection.getresponse()
    response.read()  # bounded by the timeout
    connection.close()
    return response


def test_a_browser_preflight_from_the_allowed_origin_then_its_post_are_allowed(auth_url):
    preflight = request(f"{auth_url}/pusher/auth", "OPTIONS", **{
        "Origin": PAGE_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-csrf-token"})
    assert preflight.status == 204
    assert preflight.getheader("Access-Control-Allow-Origin") == PAGE_ORIGIN
    assert "POST" in preflight.getheader("Access-Control-Allow-Methods")
    assert preflight.getheader("Access-Control-Allow-Headers") == "content-type, x-csrf-token"
    assert preflight.getheader("Access-Control-Allow-Credentials") == "true"

    body = urlencode({"socket_id": "1.2", "channel_name": "private-room"}).encode()
    parts = urlsplit(auth_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    connection.request("POST", "/pusher/auth", body=body, headers={
        "Origin": PAGE_ORIGIN, "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": "t"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 200 and answer["auth"].startswith("app-key:")
    assert response.getheader("Access-Control-Allow-Origin") == PAGE_ORIGIN


def test_a_preflight_and_a_post_from_another_origin_get_no_allow_origin(auth_url):
    preflight = request(f"{auth_url}/pusher/auth", "OPTIONS", **{
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status == 403
    assert preflight.getheader("Access-Control-Allow-Origin") is None
    body = urlencode({"socket_id": "1.2", "channel_name": "private-room"}).encode()
    post = request(f"{auth_url}/pusher/auth", "POST", body, **{
        "Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"})
    assert post.status == 200  # answered, but the browser hides it from the other site's page
    assert post.getheader("Access-Control-Allow-Origin") is None
    assert post.getheader("Vary") == "Origin"


# --- the same in a real browser (Debian's chromium, headless) ---------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PUSHER_JS_WEB = Path(__file__).resolve().parents[1] / "js" / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js"


def page(node_port: int, auth_url: str) -> Callable[..., list[bytes]]:
    """A page (and its pusher-js) whose private subscription asks ``auth_url`` with a custom header."""
    html = f"""<!doctype html><html><body><p id="result">waiting</p><script src="/pusher.min.js"></script><script>
const pusher = new Pusher('app-key', {{cluster: 'mt1', wsHost: '127.0.0.1', wsPort: {node_port}, forceTLS: false,
  enabledTransports: ['ws'], channelAuthorization: {{endpoint: '{auth_url}/pusher/auth', headers: {{'X-Token': 't'}}}}}});
const result = document.getElementById('result');
const channel = pusher.subscribe('private-room');
channel.bind('pusher:subscription_succeeded', () => {{ result.textContent = 'subscribed'; }});
channel.bind('pusher:subscription_error', (e) => {{ result.textContent = 'refused ' + e.status; }});
</script></body></html>""".encode()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] == "/pusher.min.js":
            start_response("200 OK", [("Content-Type", "application/javascript")])
            return [PUSHER_JS_WEB.read_bytes()]
        start_response("200 OK", [("Content-Type", "text/html")])
        return [html]

    return app


def _page_result(url: str) -> str:
    """Open ``url`` in headless Chromium (Playwright) and wait, bounded, until the page shows a result."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[test]')")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"],
                                             timeout=30_000)
        try:
            page_ = browser.new_page()
            page_.goto(url, timeout=30_000)
            page_.wait_for_function("document.getElementById('result').textContent !== 'waiting'", timeout=30_000)
            return page_.text_content("#result") or ""
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (the README's test command installs it)")
@pytest.mark.parametrize(("listed", "result"), [(True, "subscribed"), (False, "refused 0")])
def test_a_page_on_another_origin_gets_its_signature_only_when_its_origin_is_listed(node, users, tmp_path,
                                                                                    listed, result):
    ensure_node_modules()
    endpoint: dict[str, AuthEndpoint] = {}  # made once the page's origin (its port) is known
    with serve_wsgi(lambda environ, start_response: endpoint["app"](environ, start_response)) as auth_url, \
            serve_wsgi(page(node.port, auth_url)) as page_url:
        page_origin = page_url.replace("127.0.0.1", "localhost")  # another origin than the endpoint's
        endpoint["app"] = AuthEndpoint(App(), users.authorize, allowed_origins=[page_origin] if listed else [])
        shown = _page_result(f"{page_origin}/")
    assert shown == result
    # Unlisted: the browser's preflight was refused, so the POST (and authorize) never happened.
    assert [channel for _, channel in users.asked] == (["private-room"] if listed else [])

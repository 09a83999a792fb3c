"""examples/ticker.py: ``python -m examples.ticker`` feeds prices to a real subscriber and serves its page.

The ticker runs as a subprocess on port 0 (it prints the ports it got); the
subscribers are websocket-client connections (tests/wsclient.py), every read
bounded, and headless Chromium (Playwright, tests/examples/conftest.py) loading the page.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request

import pytest

from examples.ticker import PUSHER_JS
from tests.examples.conftest import WAIT, expect, missing
from tests.pyproc import PythonProcess
from tests.wsclient import PusherClient

STARTUP = 20.0  # a cold interpreter importing gevent, pykka and prometheus on a busy 2-core machine
WS_PORT = re.compile(r"websocket: ws://127\.0\.0\.1:(\d+)/app/app-key")
PAGE_URL = re.compile(r"page: +(http://127\.0\.0\.1:\d+/)")


def next_prices(client: PusherClient, timeout: float = 5.0) -> dict:
    """The next ``prices`` event's data (a cache channel may first say ``pusher:cache_miss``)."""
    message = client.recv(timeout)
    if message.get("event") == "pusher:cache_miss":
        message = client.recv(timeout)
    assert (message.get("event"), message.get("channel")) == ("prices", "cache-prices"), message
    return json.loads(message["data"])


def ticker(*args: str) -> PythonProcess:
    return PythonProcess("examples.ticker", "--port", "0", "--page-port", "0", *args)


def test_the_ticker_reaches_a_websocket_subscriber_every_interval(open_client):
    with ticker("--interval-ms", "50", "--symbols", "ACME,GLOBEX") as proc:
        client = open_client(int(proc.wait_for(WS_PORT, STARTUP).group(1)))
        client.subscribe("cache-prices")
        ticks = [next_prices(client) for _ in range(3)]
        assert [[q["symbol"] for q in tick["prices"]] for tick in ticks] == [["ACME", "GLOBEX"]] * 3
        assert all(isinstance(q["price"], float) and q["price"] > 0 for tick in ticks for q in tick["prices"])
        assert ticks[0]["time"] <= ticks[1]["time"] <= ticks[2]["time"]
        assert proc.stop() == 0
    assert "ticker: stopped" in proc.text() and "Traceback" not in proc.text()


def test_a_late_subscriber_gets_the_last_prices_at_once_from_the_cache_channel(open_client):
    with ticker("--interval-ms", "60000") as proc:  # one tick at start, the next a minute later
        port = int(proc.wait_for(WS_PORT, STARTUP).group(1))
        first = open_client(port)
        first.subscribe("cache-prices")
        tick = next_prices(first)
        late = open_client(port)
        late.subscribe("cache-prices")
        assert next_prices(late, timeout=2.0) == tick
        assert proc.stop() == 0


def test_the_page_uses_pusher_js_and_names_the_node_port():
    with ticker() as proc:
        ws_port = proc.wait_for(WS_PORT, STARTUP).group(1)
        page_url = proc.wait_for(PAGE_URL, STARTUP).group(1)
        with urllib.request.urlopen(page_url, timeout=5) as response:
            page = response.read().decode()
        assert '<script src="/pusher.min.js">' in page
        assert f'"port": {ws_port}' in page and '"channel": "cache-prices"' in page
        if PUSHER_JS.is_file():
            with urllib.request.urlopen(page_url + "pusher.min.js", timeout=5) as response:
                assert response.read() == PUSHER_JS.read_bytes()
        else:  # the page says how to install it; so does the 404
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(page_url + "pusher.min.js", timeout=5)
            assert info.value.code == 404 and b"npm ci --prefix examples/chat" in info.value.read()
            assert "npm ci --prefix examples/chat" in proc.text()
        assert proc.stop() == 0


def test_a_port_in_use_is_one_line_that_says_which_and_what_to_do():
    with socket.socket() as taken:  # as when the chat's node already holds 6001
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with PythonProcess("examples.ticker", "--port", str(port), "--page-port", "0") as proc:
            assert proc.proc.wait(timeout=STARTUP) == 1
    assert proc.text().strip() == (f"ticker: cannot listen on 127.0.0.1:{port} (the main port): address already in use "
                                   "(is another node running, the chat's say? try --port 6002, or 0 for any free port)")


def test_watch_prints_the_feed_of_a_running_ticker():
    with ticker("--interval-ms", "50", "--symbols", "ACME") as proc:
        port = proc.wait_for(WS_PORT, STARTUP).group(1)
        with PythonProcess("examples.ticker", "--watch", "--port", port) as watcher:
            watcher.wait_for(re.compile(r"^ACME \d+\.\d\d \([+-]\d+\.\d\d\)$"), STARTUP)
            assert watcher.stop() == 0
        assert proc.stop() == 0


def test_the_page_shows_the_prices_in_a_browser(browser, screenshot):
    if not PUSHER_JS.is_file():
        missing("pusher-js for the page: run npm ci --prefix examples/chat (the README's test command does it)")
    with ticker("--interval-ms", "100", "--symbols", "ACME,GLOBEX") as proc:
        page_url = proc.wait_for(PAGE_URL, STARTUP).group(1)
        context = browser.new_context(viewport={"width": 600, "height": 360})
        context.set_default_timeout(WAIT * 1000)
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_url)
            expect(page.locator("#state")).to_have_text("connected")
            expect(page.locator("#rows tr td:first-child")).to_have_text(["ACME", "GLOBEX"])
            expect(page.locator("#rows tr").first.locator("td").nth(1)).to_have_text(re.compile(r"^\d+\.\d\d$"))
            first = page.locator("#time").text_content()
            expect(page.locator("#time")).not_to_have_text(first or "")  # it ticks
            screenshot(page, "ticker")
            assert proc.stop() == 0
            expect(page.locator("#state")).not_to_have_text("connected")  # the page shows the node is gone
            assert not errors, errors
        finally:
            context.close()

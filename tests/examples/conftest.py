"""Fixtures for the example apps: the chat as its own process, headless Chromium, screenshots.

* ``chat_server`` (module): ``python -m examples.chat --port 0 --node-port 0``
  with one room per test (``--rooms``), exactly as people start it; its URL
  is read from the line it prints. ``start_chat(*args)`` starts more.
* ``browser`` (session): Debian's chromium (/usr/bin/chromium) driven by
  Playwright. The test is skipped, saying why (``missing``), only when playwright or
  chromium is not installed (the README's test command installs both); on
  CI (``CI`` set) it fails instead, since CI must install them.
* ``open_page(url, name=None, room=None, viewport=None)``: a page in a browser context of
  its own (its own cookies: another person), joined when ``name`` is given;
  a JavaScript error on any page fails the test.
* ``screenshot(page, label)``: a PNG in the test's tmp dir (every browser test takes one).

Every wait is bounded: Playwright's default timeout is set to ``WAIT`` s.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the tests that use it need ``browser``, which skips (or fails on CI) saying why
    expect = None

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
WAIT = 5.0  # seconds, for every expectation on a page or a process
START_TIMEOUT = 15.0
ROOMS = [f"t{i}" for i in range(1, 13)]
# As the machine notes say: without the background-networking flags Chromium
# keeps trying hosts it cannot reach. --no-sandbox: the tests run as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


class Process:
    """A child process whose stdout lines are read by a thread, so every read has a deadline."""

    def __init__(self, args: list[str], stdin: bool = False, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first new line matching ``pattern`` (regex), within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output: {self.output}") from None
            if line is None:
                self.lines.put(None)
                raise AssertionError(f"process ended before a line matching {pattern!r}; output: {self.output}")
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def write(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> int | None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=5)
        # The rest of its output, for the caller's checks (the reader ends at EOF).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                break
            if line is None:
                self.lines.put(None)  # for the next reader
                break
            self.output.append(line)
        return code


def chat_args(*extra: str) -> list[str]:
    return [sys.executable, "-m", "examples.chat", "--port", "0", "--node-port", "0", "--rooms", ",".join(ROOMS), *extra]


@pytest.fixture(scope="module")
def start_chat() -> Iterator[Any]:
    """``start_chat(*extra_args, env=None)``: a running chat; its URL is ``.url``."""
    started: list[Process] = []
    if not (ROOT / "examples/chat/node_modules/pusher-js").is_dir():
        # The README's test command runs it; this is for a bare `pytest tests/examples`.
        subprocess.run(["npm", "ci", "--prefix", str(ROOT / "examples/chat"), "--no-audit", "--no-fund"],
                       check=True, timeout=180, capture_output=True)

    def start(*extra: str, env: dict[str, str] | None = None) -> Process:
        chat = Process(chat_args(*extra), env=env)
        started.append(chat)
        match = chat.expect(r"open (http://\S+/)", timeout=START_TIMEOUT)
        chat.url = match.group(1)  # type: ignore[attr-defined]
        return chat

    yield start
    for chat in started:
        code = chat.stop()
        assert code == 0, f"the chat exited with {code}: {chat.output}"
        assert not any("Traceback" in line for line in chat.output), chat.output


@pytest.fixture(scope="module")
def chat_server(start_chat: Any) -> Process:
    return start_chat()


def missing(reason: str) -> None:
    """Skip, saying why; on CI (``CI`` set, as .ci/run runs) fail instead: CI installs everything."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed: pip install '.[test]' (the README's test command does it)")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} not found: apt-get install -y chromium (the README's test command does it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(url: str, name: str | None = None, room: str | None = None, viewport: dict | None = None) -> Any:
        context = browser.new_context(viewport=viewport or {"width": 900, "height": 560})
        context.set_default_timeout(WAIT * 1000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url + (f"#{room}" if room else ""))
        if name is not None:
            join(page, name)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def join(page: Any, name: str) -> None:
    """Type a name, press Enter, wait until the page is connected and lists us online."""
    page.fill("#name", name)
    page.press("#name", "Enter")
    expect(page.locator("#state")).to_have_attribute("data-state", "connected")
    expect(page.locator("#members li.me")).to_have_text(name)


@pytest.fixture
def screenshot(tmp_path: Path) -> Any:
    def take(page: Any, label: str) -> Path:
        path = tmp_path / f"{label}.png"
        page.screenshot(path=str(path))
        return path

    return take

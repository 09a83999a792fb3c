"""The README's client snippets work as written: each runs against a real node, only its port changed.

Snippets are the fenced blocks that follow a ``<!-- snippet: NAME -->`` line in
README.md. The browser ones (pusher-js, Laravel Echo) run under Node from a
temporary ``.mjs`` file in tests/js, where their packages are installed, with
``window`` defined as the global object (the one thing Node lacks); each logs
the broadcast's title, which the test reads with a deadline. The SDK ones
trigger an event that a websocket-client subscriber must receive.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jsdriver import JS_DIR, ensure_node_modules, node_binary
from tests.pyproc import REPO, ChildProcess

README = REPO / "README.md"
SNIPPET = re.compile(r"^<!-- snippet: ([\w-]+) -->\n```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
README_PORT = re.compile(r"\b6001\b")
TITLE = "hello from the test"
TIMEOUT = 10.0
# Echo assigns window.Pusher / window.Echo as in a browser; Node has no window.
WINDOW_SHIM = "data:text/javascript,globalThis.window%20%3D%20globalThis%3B"

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def snippets() -> dict[str, tuple[str, str]]:
    """Every marked snippet of README.md: name -> (language, code)."""
    found = {name: (language, code) for name, language, code in SNIPPET.findall(README.read_text(encoding="utf-8"))}
    assert found, "README.md has no <!-- snippet: NAME --> blocks"
    return found


def snippet(name: str, port: int) -> str:
    """The snippet ``name`` with the README's port 6001 replaced by ``port``."""
    code = snippets()[name][1]
    assert README_PORT.search(code), f"snippet {name} names no port 6001 to replace"
    return README_PORT.sub(str(port), code)


@contextlib.contextmanager
def js_file(code: str) -> Iterator[Path]:
    """``code`` in a temporary .mjs file in tests/js (so its imports resolve), removed afterwards."""
    ensure_node_modules()
    with tempfile.NamedTemporaryFile("w", suffix=".mjs", prefix=".readme-", dir=JS_DIR, delete=False) as file:
        file.write(code)
    try:
        yield Path(file.name)
    finally:
        Path(file.name).unlink()


def test_the_readme_marks_the_snippets_this_test_runs():
    assert {"pusher-js", "laravel-echo", "python-sdk", "node-sdk", "embedded"} <= set(snippets())


# --- browser clients under Node ---------------------------------------------------------------


def receives_broadcast(node, wait_until, code: str) -> None:
    """Run a client snippet; once it subscribed to ``news``, broadcast and expect its log line."""
    with js_file(code) as path, ChildProcess([node_binary(), "--import", WINDOW_SHIM, str(path)], cwd=JS_DIR) as proc:
        wait_until(lambda: node.subscription_count("1", "news") >= 1 or proc.proc.poll() is not None,
                   timeout=TIMEOUT, message="the snippet subscribes to news")
        assert proc.proc.poll() is None, f"the snippet exited: {proc.text()}"
        node.broadcast("1", "news", "headline", {"title": TITLE})
        proc.wait_for(re.compile(rf"^{TITLE}$"), TIMEOUT)


@needs_node
def test_the_pusher_js_snippet_receives_a_broadcast(node, wait_until):
    receives_broadcast(node, wait_until, snippet("pusher-js", node.port))


@needs_node
@pytest.mark.parametrize("broadcaster", ["reverb", "pusher"])
def test_the_laravel_echo_snippet_receives_a_broadcast_with_either_broadcaster(node, wait_until, broadcaster):
    code = snippet("laravel-echo", node.port)
    assert "broadcaster: 'reverb'" in code
    receives_broadcast(node, wait_until, code.replace("broadcaster: 'reverb'", f"broadcaster: '{broadcaster}'"))


# --- server SDKs ---------------------------------------------------------------------------------


def expect_headline(client) -> None:
    message = client.expect("headline", "news", timeout=TIMEOUT)
    assert json.loads(message["data"]) == {"title": "hello"}


def test_the_python_sdk_snippet_triggers_an_event_a_subscriber_receives(node, connect):
    client = connect()
    client.subscribe("news")
    exec(compile(snippet("python-sdk", node.port), "README.md (python-sdk)", "exec"), {"__name__": "readme"})
    expect_headline(client)


@needs_node
def test_the_node_sdk_snippet_triggers_an_event_a_subscriber_receives(node, connect):
    client = connect()
    client.subscribe("news")
    with js_file(snippet("node-sdk", node.port)) as path:
        done = subprocess.run([node_binary(), str(path)], cwd=JS_DIR, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    expect_headline(client)


# --- embedding --------------------------------------------------------------------------------------


def test_the_embedded_python_example_runs_while_another_node_holds_the_metrics_port():
    holder = socket.socket()
    with contextlib.suppress(OSError):  # if 9601 is taken already, something else holds it: as good
        holder.bind(("0.0.0.0", 9601))
        holder.listen()
    try:
        code = snippets()["embedded"][1]
        exec(compile(code, "README.md (embedded)", "exec"), {"__name__": "readme"})
    finally:
        holder.close()

"""The chat scaled out as examples/README.md says: chat processes and a 2-worker node joined over Redis.

Chat A serves its pages' sockets on its own in-process node; chat B's pages
connect to ``actorcast serve --workers 2`` (``--ws-port``), and B's node only
broadcasts. Every node is joined to the others through one real redis-server.
A page on A and a page on B see each other online, typing and writing; a
terminal chat on A joins them, and sees B's page leave.
"""

from __future__ import annotations

import sys

import pytest

from tests.cluster.redis_server import RedisServer, free_port, missing_reason
from tests.examples.conftest import START_TIMEOUT, Process, expect, missing


@pytest.fixture(scope="module")
def redis_url():  # module scope: set up before the module's chats, so it stops after them
    reason = missing_reason()
    if reason:
        missing(reason)
    server = RedisServer().start()
    yield server.url()
    server.close()


def test_two_chats_and_a_worker_node_over_redis_are_one_chat(redis_url, start_chat, open_page, screenshot):
    env = {"CHAT_COOKIE_SECRET": "one secret for every web process"}
    workers_port = free_port()
    workers = Process([sys.executable, "-m", "actors", "serve", "--host", "127.0.0.1", "--port", str(workers_port),
                       "--metrics-port", "0", "--workers", "2", "--adapter", redis_url])
    terminals: list[Process] = []
    try:
        workers.expect(r"listening on .*, 2 workers", timeout=START_TIMEOUT)
        chat_a = start_chat("--adapter", redis_url, env=env)
        chat_b = start_chat("--adapter", redis_url, "--ws-port", str(workers_port), env=env)

        def terminal(chat: Process, name: str) -> Process:
            args = [sys.executable, "examples/terminal_chat.py", "--url", chat.url, "--name", name, "--room", "t3"]
            terminals.append(Process(args, stdin=True))
            return terminals[-1]

        ann = open_page(chat_a.url, "Ann", room="t3")  # her socket: chat A's in-process node
        bob = open_page(chat_b.url, "Bob", room="t3")  # his: one of the workers
        assert bob.evaluate("Pusher.instances[0].config.wsPort") == workers_port
        for page in (ann, bob):  # presence is replicated across nodes
            expect(page.locator("#members li")).to_have_text(["Ann", "Bob"])
        bob.locator("#text").press_sequentially("hi")  # a client event: worker -> Redis -> chat A's node
        expect(ann.locator("#typing")).to_have_text("Bob is typing...")
        bob.press("#text", "Enter")  # chat B's node.broadcast -> Redis -> the workers and chat A's node
        expect(ann.locator("#messages .text")).to_have_text(["hi"])

        chen = terminal(chat_a, "Chen")
        chen.expect(r"^\* you are in #t3 with Ann, Bob, Chen$")
        expect(bob.locator("#members li")).to_have_text(["Ann", "Bob", "Chen"])
        chen.write("hello from A")
        expect(bob.locator("#messages .text")).to_have_text(["hi", "hello from A"])
        send = ann.locator("#text")
        send.fill("hello from the page on A")
        send.press("Enter")
        chen.expect(r"^\[\d\d:\d\d\] Ann: hello from the page on A$")
        expect(bob.locator("#messages .author")).to_have_text(["Bob", "Chen", "Ann"])
        screenshot(bob, "bob-on-a-worker")
        bob.close()
        chen.expect(r"^\* Bob left$")
        expect(ann.locator("#members li")).to_have_text(["Ann", "Chen"])
    finally:
        for process in terminals:
            process.stop()
        assert workers.stop() == 0

"""The chat scaled out as examples/README.md says: chat processes and a 2-worker node joined over Redis.

Chat A serves its pages' sockets on its own in-process node; chat B's pages
connect to ``actorcast serve --workers 2`` (``--ws-port``), and B's node only
broadcasts. Every node is joined to the others through one real redis-server.
A terminal chat on A and one on B see each other join and read each other's messages.
"""

from __future__ import annotations

import sys

import pytest

from tests.cluster.redis_server import RedisServer, free_port, missing_reason
from tests.examples.conftest import START_TIMEOUT, Process, missing


@pytest.fixture(scope="module")
def redis_url():  # module scope: set up before the module's chats, so it stops after them
    reason = missing_reason()
    if reason:
        missing(reason)
    server = RedisServer().start()
    yield server.url()
    server.close()


def test_two_chats_and_a_worker_node_over_redis_are_one_chat(redis_url, start_chat):
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

        ann = terminal(chat_a, "Ann")
        ann.expect(r"^\* you are in #t3 with Ann$")
        bob = terminal(chat_b, "Bob")
        bob.expect(r"^\* you are in #t3 with Ann, Bob$")  # presence is replicated across nodes
        ann.expect(r"^\* Bob joined$")
        bob.write("hello from B")  # chat B's node.broadcast -> Redis -> the workers and chat A's node
        ann.expect(r"^\[\d\d:\d\d\] Bob: hello from B$")
        bob.expect(r"^\[\d\d:\d\d\] Bob: hello from B$")
        ann.write("hello from A")
        bob.expect(r"^\[\d\d:\d\d\] Ann: hello from A$")
        ann.write("/quit")
        bob.expect(r"^\* Ann left$")
    finally:
        for process in terminals:
            process.stop()
        assert workers.stop() == 0

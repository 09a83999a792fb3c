"""examples/terminal_chat.py, as a person runs it, chatting with a browser in the web chat.

The terminal chat is a subprocess whose stdin the test types into and whose
stdout lines it reads with a deadline each (tests/examples/conftest.Process).
"""

from __future__ import annotations

import json
import socket
import sys

from examples.terminal_chat import Chat, show
from tests.examples.conftest import Process, expect, join


def terminal(url: str, name: str, room: str) -> Process:
    return Process([sys.executable, "examples/terminal_chat.py", "--url", url, "--name", name, "--room", room], stdin=True)


def test_the_terminal_chat_and_a_browser_exchange_messages(chat_server, open_page, screenshot):
    ann = open_page(chat_server.url, "Ann", room="t1")
    ann.fill("#text", "before you came")
    ann.press("#text", "Enter")
    expect(ann.locator("#messages .text")).to_have_text(["before you came"])
    term = terminal(chat_server.url, "Term", "t1")
    try:
        term.expect(r"^\* you are in #t1 with Ann, Term$")
        term.expect(r"^\[\d\d:\d\d\] Ann: before you came$")  # the recent messages, on joining
        expect(ann.locator("#members li")).to_have_text(["Ann", "Term"])  # a presence member like any other

        term.write("hello from the terminal")
        expect(ann.locator("#messages .author")).to_have_text(["Ann", "Term"])
        expect(ann.locator("#messages .text").last).to_have_text("hello from the terminal")
        term.expect(r"^\[\d\d:\d\d\] Term: hello from the terminal$")  # it comes back through the node

        ann.fill("#text", "hi <b>terminal</b>")
        ann.press("#text", "Enter")
        term.expect(r"^\[\d\d:\d\d\] Ann: hi <b>terminal</b>$")

        bob = open_page(chat_server.url, room="t1")
        join(bob, "Bob")
        term.expect(r"^\* Bob joined$")
        bob.close()
        term.expect(r"^\* Bob left$")

        term.write("")  # empty lines are not sent
        term.write("x" * 501)
        term.expect(r"^! not sent: Message is longer than 500 characters$")
        screenshot(ann, "with-terminal")
        term.write("/quit")
        assert term.proc.wait(timeout=5) == 0
        expect(ann.locator("#members li")).to_have_text(["Ann"])
    finally:
        term.stop()


def test_the_terminal_chat_says_why_it_cannot_join(chat_server):
    refused = terminal(chat_server.url, "   ", "t2")
    refused.expect(r"^could not join: Name is empty$")
    assert refused.proc.wait(timeout=5) == 1
    no_room = terminal(chat_server.url, "Ann", "nowhere")
    no_room.expect(r"^could not join: no room 'nowhere'; rooms are t1, t2")
    assert no_room.proc.wait(timeout=5) == 1
    refused.stop()
    no_room.stop()


def test_the_terminal_chat_says_when_the_node_goes_away(start_chat):
    chat = start_chat()
    term = terminal(chat.url, "Term", "t3")
    try:
        term.expect(r"^\* you are in #t3 with Term$")
        chat.stop()  # the node says 4200 to every client, then closes
        term.expect(r"^! the node says: Server is shutting down \(4200\)$")
        term.expect(r"^! disconnected from the node \(the node closed the connection\); press Enter to leave$")
        term.write("")
        assert term.proc.wait(timeout=5) == 1
    finally:
        term.stop()
    assert not any("Traceback" in line for line in term.output), term.output


def test_a_web_app_gone_while_joining_is_said_and_the_socket_kept(capsys):
    with socket.socket() as closed:  # a port nothing listens on: the web app just stopped
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    chat = Chat(url, "t1")
    joined = {"presence": {"ids": ["u-1"], "hash": {"u-1": {"name": "Term"}}, "count": 1}}
    chat.on_event({"event": "pusher_internal:subscription_succeeded", "channel": "presence-room-t1",
                   "data": json.dumps(joined)})  # raises nothing: the reader thread goes on
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "* you are in #t1 with Term"
    assert lines[1].startswith("! could not load the recent messages (") and len(lines) == 2


def test_what_others_wrote_cannot_steer_the_terminal(capsys):
    show("Ann: \x1b[2J\x1b]0;pwned\x07 hi")
    assert capsys.readouterr().out == "Ann: \ufffd[2J\ufffd]0;pwned\ufffd hi\n"

"""The web chat in headless Chromium: two people (two browser contexts) in a room.

Each test has a room of its own on the module's chat process, so they share
one process and one browser and stay fast. Every test takes a screenshot.
"""

from __future__ import annotations

import re
import time

from tests.examples.conftest import WAIT, expect, join


def send(page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_name_comes_first_then_both_pages_see_each_other_online_and_connected(chat_server, open_page, screenshot):
    ann = open_page(chat_server.url, room="t1")
    assert ann.evaluate("document.activeElement.id") == "name"  # the first field: type and press Enter
    assert ann.locator("input").first.get_attribute("id") == "name"
    expect(ann.locator("#chat")).to_be_hidden()
    with ann.expect_response("**/pusher/auth") as channel_auth, ann.expect_response("**/pusher/user-auth") as user_auth:
        join(ann, "Ann")
    assert channel_auth.value.status == 200 and user_auth.value.status == 200  # pusher-js used both endpoints
    bob = open_page(chat_server.url, "Bob", room="t1")
    for page in (ann, bob):
        expect(page.locator("#members li")).to_have_text(["Ann", "Bob"])
        expect(page.locator("#state")).to_have_text("connected")
        expect(page.locator("#room-title")).to_have_text("# t1")
    screenshot(ann, "online")


def test_typing_shows_an_indicator_on_the_other_page_until_the_message_comes(chat_server, open_page, screenshot):
    ann = open_page(chat_server.url, "Ann", room="t2")
    bob = open_page(chat_server.url, "Bob", room="t2")
    expect(ann.locator("#members li")).to_have_count(2)
    bob.locator("#text").press_sequentially("hel")
    expect(ann.locator("#typing")).to_have_text("Bob is typing...")
    expect(bob.locator("#typing")).to_have_text("")  # nobody is told about their own typing
    screenshot(ann, "typing")
    bob.locator("#text").press_sequentially("lo")
    bob.press("#text", "Enter")
    expect(ann.locator("#messages .text")).to_have_text(["hello"])
    expect(ann.locator("#typing")).to_have_text("")
    bob.locator("#text").press_sequentially("again")  # right after sending: announced at once, not throttled
    expect(ann.locator("#typing")).to_have_text("Bob is typing...", timeout=1000)


def test_a_message_reaches_the_other_page_with_author_and_time(chat_server, open_page, screenshot):
    ann = open_page(chat_server.url, "Ann", room="t3")
    bob = open_page(chat_server.url, "Bob", room="t3")
    expect(ann.locator("#members li")).to_have_count(2)
    before = time.time()
    send(bob, "hello Ann")
    message = ann.locator("#messages li").last
    expect(message.locator(".author")).to_have_text("Bob")
    expect(message.locator(".text")).to_have_text("hello Ann")
    expect(message.locator("time")).to_have_text(re.compile(r"^\d{1,2}:\d{2}"))
    sent_at = ann.evaluate("Date.parse(document.querySelector('#messages li:last-child time').dateTime) / 1000")
    assert before - 1 <= sent_at <= time.time() + 1
    expect(bob.locator("#text")).to_have_value("")
    expect(bob.locator("#messages .text")).to_have_text(["hello Ann"])  # once, though it came twice
    send(ann, "hi Bob!")
    expect(bob.locator("#messages .author")).to_have_text(["Bob", "Ann"])
    screenshot(ann, "messages")


def test_a_burst_of_messages_keeps_the_order_it_was_sent_in(chat_server, open_page, screenshot):
    ann = open_page(chat_server.url, "Ann", room="t10")  # t10 and t11 are free here: their tests start a chat
    bob = open_page(chat_server.url, "Bob", room="t10")
    expect(bob.locator("#members li")).to_have_count(2)
    texts = [f"burst {n}" for n in range(8)]
    # Faster than anyone types: eight sends in one go, before the first is answered.
    ann.evaluate("""texts => {
        for (const text of texts) {
            document.getElementById("text").value = text;
            document.getElementById("send-form").requestSubmit();
        }
    }""", texts)
    for page in (ann, bob):
        expect(page.locator("#messages .text")).to_have_text(texts)
    screenshot(bob, "burst")


def test_html_in_names_and_messages_is_shown_as_text(chat_server, open_page, screenshot):
    name = "<img src=x onerror=alert(1)>"
    attacks = ['<img src=x onerror="window.pwned=1">', "<script>window.pwned=2</script>", "<b>bold</b> &amp;"]
    mallory = open_page(chat_server.url, name, room="t4")
    ann = open_page(chat_server.url, "Ann", room="t4")
    expect(ann.locator("#members li")).to_have_text(sorted(["Ann", name]))
    for attack in attacks:  # sent as fast as Playwright types: they still arrive in this order
        send(mallory, attack)
    expect(ann.locator("#messages .text")).to_have_text(attacks)
    expect(ann.locator("#messages .author").first).to_have_text(name)
    for page in (ann, mallory):
        assert page.locator("#chat img, #chat script, #chat b").count() == 0
        assert page.evaluate("window.pwned") is None
    screenshot(ann, "injection")


def test_empty_and_too_long_input_is_refused_with_a_visible_reason(chat_server, open_page, screenshot):
    page = open_page(chat_server.url, room="t5")
    page.press("#name", "Enter")
    expect(page.locator("#join-error")).to_have_text("Name is empty")
    page.fill("#name", "x" * 33)
    page.press("#name", "Enter")
    expect(page.locator("#join-error")).to_have_text("Name is longer than 32 characters")
    join(page, "Ann")
    send(page, "   ")
    expect(page.locator("#send-error")).to_have_text("Message is empty")
    send(page, "y" * 501)
    expect(page.locator("#send-error")).to_have_text("Message is longer than 500 characters")
    screenshot(page, "refused")
    send(page, "y" * 500)
    expect(page.locator("#messages .text")).to_have_count(1)
    expect(page.locator("#send-error")).to_have_text("")


def test_a_closed_page_disappears_from_the_other_pages_list(chat_server, open_page, screenshot):
    ann = open_page(chat_server.url, "Ann", room="t6")
    bob = open_page(chat_server.url, "Bob", room="t6")
    expect(ann.locator("#members li")).to_have_text(["Ann", "Bob"])
    bob.close()  # closing the page closes its socket: the node sends member_removed
    expect(ann.locator("#members li")).to_have_text(["Ann"], timeout=WAIT * 1000)
    screenshot(ann, "left")


def test_a_reload_rejoins_and_shows_the_recent_messages(chat_server, open_page, screenshot):
    ann = open_page(chat_server.url, "Ann", room="t7")
    for text in ("first", "second", "third"):
        send(ann, text)
    expect(ann.locator("#messages .text")).to_have_text(["first", "second", "third"])
    ann.reload()
    # The signed cookie remembers the name: straight back into the room, with its recent messages.
    expect(ann.locator("#state")).to_have_attribute("data-state", "connected")
    expect(ann.locator("#members li.me")).to_have_text("Ann")
    expect(ann.locator("#messages .text")).to_have_text(["first", "second", "third"])
    expect(ann.locator("#messages .author")).to_have_text(["Ann"] * 3)
    carol = open_page(chat_server.url, "Carol", room="t7")
    expect(carol.locator("#messages .text")).to_have_text(["first", "second", "third"])
    screenshot(ann, "reloaded")


def test_switching_rooms_changes_who_is_online_and_the_messages(chat_server, open_page, screenshot):
    ann = open_page(chat_server.url, "Ann", room="t8")
    bob = open_page(chat_server.url, "Bob", room="t9")
    send(ann, "in t8")
    expect(ann.locator("#messages .text")).to_have_text(["in t8"])
    ann.click("#rooms a[data-room=t9]")
    expect(ann.locator("#room-title")).to_have_text("# t9")
    assert ann.evaluate("location.hash") == "#t9"
    expect(ann.locator("#members li")).to_have_text(["Ann", "Bob"])
    expect(bob.locator("#members li")).to_have_text(["Ann", "Bob"])
    expect(ann.locator("#messages li")).to_have_count(0)
    send(bob, "in t9")
    expect(ann.locator("#messages .text")).to_have_text(["in t9"])
    screenshot(ann, "switched")
    ann.click("#rooms a[data-room=t8]")
    expect(bob.locator("#members li")).to_have_text(["Bob"])  # leaving a room is leaving its presence
    expect(ann.locator("#messages .text")).to_have_text(["in t8"])


def test_the_connection_state_shows_when_the_node_goes_away(start_chat, open_page, screenshot):
    chat = start_chat()
    page = open_page(chat.url, "Ann", room="t10")
    expect(page.locator("#state")).to_have_text("connected")
    expect(page.locator("#notice")).to_be_hidden()
    chat.stop()  # the node says 4200 (reconnect) to every client, then is gone
    expect(page.locator("#state")).to_have_attribute("data-state", re.compile("reconnecting|offline"))
    expect(page.locator("#notice")).to_have_text("the node said: Server is shutting down (4200)")
    send(page, "anyone there?")  # the web app is gone too: the reason, not the browser's "Failed to fetch"
    expect(page.locator("#send-error")).to_have_text(re.compile("^the chat server cannot be reached"))
    expect(page.locator("#text")).to_have_value("anyone there?")  # given back, to send again later
    screenshot(page, "node-gone")


def test_a_node_that_refuses_the_page_shows_its_reason(start_node, start_chat, open_page, screenshot):
    node = start_node(key="other-key")  # pages sent to a node that serves another app (a wrong --ws-port)
    chat = start_chat("--ws-port", str(node.port))
    page = open_page(chat.url, room="t11")
    page.fill("#name", "Ann")
    page.press("#name", "Enter")
    expect(page.locator("#state")).to_have_text("offline")
    expect(page.locator("#notice")).to_have_text("the node said: App key app-key does not exist (4001)")
    screenshot(page, "refused-by-node")


def test_on_a_phone_the_rooms_and_who_is_online_sit_above_the_messages(chat_server, open_page, screenshot):
    ann = open_page(chat_server.url, "Ann", room="t12", viewport={"width": 390, "height": 700})
    send(ann, "a message long enough to wrap on a narrow screen, as messages on phones do")
    expect(ann.locator("#messages .text")).to_have_count(1)
    assert ann.evaluate("document.documentElement.scrollWidth <= innerWidth")  # nothing sticks out sideways
    nav, members, messages = (ann.locator(where).bounding_box() for where in ("nav", "#members li", "#messages"))
    assert nav["y"] + nav["height"] <= messages["y"] and messages["width"] > 300
    assert nav["y"] <= members["y"] <= nav["y"] + nav["height"] - members["height"]  # online, in sight without scrolling
    screenshot(ann, "phone")

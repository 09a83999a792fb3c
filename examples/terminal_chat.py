"""Chat from a terminal with the people in the web chat (examples/chat).

::

    python -m examples.chat                                   # the web chat, in another terminal
    python examples/terminal_chat.py --name Ann [--room lobby] [--url http://127.0.0.1:8000]

It does what the page does, with the same endpoints: picks a name (the web
app answers with its signed name cookie), connects to the node the web app
names, asks the web app to sign its presence subscription (``/pusher/auth``,
with that cookie), then prints the room's recent messages, every new message
and who joins and leaves; each line you type is sent with ``POST /messages``.
``/quit`` or end of input (Ctrl-D) leaves. When the node goes away it says
so and why; it does not reconnect (start it again).

Only the standard library and websocket-client (``pip install websocket-client``);
copy it anywhere.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import websocket  # websocket-client

__all__ = ["Chat", "main"]

HTTP_TIMEOUT = 10.0


class Chat:
    """One person in one room: the web app's endpoints over HTTP, the node over a WebSocket."""

    def __init__(self, url: str, room: str) -> None:
        self.url = url.rstrip("/")
        self.room = room
        self.channel = f"presence-room-{room}"
        # The cookie jar keeps the web app's signed name cookie for every later request.
        self.http = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.ws: websocket.WebSocket | None = None
        self.members: dict[str, str] = {}  # user id -> name
        self.seen: set[str] = set()  # message ids printed (history and live events overlap)
        self.closed = threading.Event()
        self.lost = False  # the node went away (not /quit)

    # --- the web app -------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, form: dict[str, str] | None = None) -> Any:
        """Call the web app; return its JSON answer, or raise RuntimeError with its reason."""
        data, headers = None, {}
        if body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with self.http.open(request, timeout=HTTP_TIMEOUT) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                reason = json.load(exc).get("error", exc.reason)
            except ValueError:
                reason = exc.reason
            raise RuntimeError(reason) from None

    def join(self, name: str) -> None:
        """Pick ``name``, connect to the node, subscribe to the room; start printing what comes."""
        self.request("POST", "/session", {"name": name})
        config = self.request("GET", "/session")
        if self.room not in config["rooms"]:
            raise RuntimeError(f"no room {self.room!r}; rooms are {', '.join(config['rooms'])}")
        pusher = config["pusher"]
        host = pusher["wsHost"] or urllib.parse.urlsplit(self.url).hostname
        self.ws = websocket.create_connection(
            f"ws://{host}:{pusher['wsPort']}/app/{pusher['key']}?protocol=7&client=terminal-chat&version=1.0",
            timeout=HTTP_TIMEOUT,
        )
        established = self.receive()
        if established.get("event") != "pusher:connection_established":
            raise RuntimeError(f"the node said {established}")
        info = json.loads(established["data"])
        signed = self.request("POST", "/pusher/auth", form={"socket_id": info["socket_id"], "channel_name": self.channel})
        self.send("pusher:subscribe", {"channel": self.channel, **signed})
        # Silence for activity_timeout: ping the node, as every Pusher client does.
        self.ws.settimeout(info.get("activity_timeout", 120))
        threading.Thread(target=self.listen, name="node-reader", daemon=True).start()

    def say(self, text: str) -> None:
        """Send one message to the room (it comes back through the node, and is printed then)."""
        self.request("POST", "/messages", {"room": self.room, "text": text})

    # --- the node ------------------------------------------------------------------

    def send(self, event: str, data: Any) -> None:
        assert self.ws is not None
        self.ws.send(json.dumps({"event": event, "data": data}))

    def receive(self) -> dict[str, Any]:
        assert self.ws is not None
        text = self.ws.recv()
        if not text:  # websocket-client's answer to a close frame
            raise websocket.WebSocketConnectionClosedException("the node closed the connection")
        message = json.loads(text)
        return message if isinstance(message, dict) else {}

    def listen(self) -> None:
        """Print what the node sends until the socket closes."""
        try:
            while True:
                try:
                    self.on_event(self.receive())
                except websocket.WebSocketTimeoutException:
                    self.send("pusher:ping", {})
                except (KeyError, TypeError, AttributeError, RuntimeError) as exc:  # an odd event: say so, go on
                    show(f"! could not handle a message from the node ({exc!r})")
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            if not self.closed.is_set():
                self.lost = True
                show(f"! disconnected from the node ({exc or 'closed'}); press Enter to leave")
        finally:
            self.closed.set()

    def on_event(self, message: dict[str, Any]) -> None:
        data: Any
        event, data = message.get("event"), message.get("data")
        if isinstance(data, str):  # Pusher sends data as a JSON string
            try:
                data = json.loads(data)
            except ValueError:
                pass
        if event == "pusher:ping":
            self.send("pusher:pong", {})
        elif event == "pusher:error" and isinstance(data, dict):
            show(f"! the node says: {data.get('message')} ({data.get('code')})")
        elif event == "pusher:subscription_error":
            show(f"! could not join #{self.room}: {data}")
        elif event == "pusher_internal:subscription_succeeded":
            hash_ = data["presence"]["hash"]
            self.members = {user_id: (info or {}).get("name", user_id) for user_id, info in hash_.items()}
            show(f"* you are in #{self.room} with {', '.join(sorted(self.members.values()))}")
            try:
                recent = self.request("GET", f"/messages?room={self.room}")["messages"]
            except (RuntimeError, OSError) as exc:  # the web app, not the node: the socket is fine
                show(f"! could not load the recent messages ({exc})")
                recent = []
            for old in recent:
                self.print_message(old)
        elif event == "pusher_internal:member_added":
            name = self.members[data["user_id"]] = (data.get("user_info") or {}).get("name", data["user_id"])
            show(f"* {name} joined")
        elif event == "pusher_internal:member_removed":
            show(f"* {self.members.pop(data['user_id'], data['user_id'])} left")
        elif event == "message" and isinstance(data, dict):
            self.print_message(data)

    def print_message(self, message: dict[str, Any]) -> None:
        if message["id"] in self.seen:
            return
        self.seen.add(message["id"])
        clock = time.strftime("%H:%M", time.localtime(message["time"] / 1000))
        show(f"[{clock}] {message['author']}: {message['text']}")

    def close(self) -> None:
        self.closed.set()
        if self.ws is not None:
            self.ws.close(timeout=2)


def show(line: str) -> None:
    """Print a line of what others wrote, with anything that could steer the terminal replaced."""
    print("".join(char if char.isprintable() else "\ufffd" for char in line), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chat in a room of the web chat (python -m examples.chat).")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the web chat's address")
    parser.add_argument("--room", default="lobby")
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    chat = Chat(args.url, args.room)
    try:
        chat.join(args.name)
    except (RuntimeError, OSError, websocket.WebSocketException) as exc:
        print(f"could not join: {exc}", file=sys.stderr)
        return 1
    try:
        for line in sys.stdin:
            text = line.strip()
            if text == "/quit" or chat.closed.is_set():
                break
            if text:
                try:
                    chat.say(text)
                except (RuntimeError, OSError) as exc:
                    show(f"! not sent: {exc}")
    except KeyboardInterrupt:
        pass
    finally:
        chat.close()
    return 1 if chat.lost else 0


if __name__ == "__main__":
    sys.exit(main())

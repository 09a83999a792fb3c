"""The smallest useful actorcast program: a node that broadcasts a ticking price feed.

::

    python -m examples.ticker                 # node on :6001, page on http://127.0.0.1:8001/
    python -m examples.ticker --watch         # in another terminal: print the feed

It starts a node in-process (``actors.Node``), and every ``--interval-ms``
moves a few made-up prices and sends them with ``node.broadcast`` as one
``prices`` event on the channel ``cache-prices``. Being a cache channel, a
new subscriber gets the last prices at once instead of waiting for the next
tick. Any Pusher client can subscribe; the page this program serves uses
pusher-js from ``examples/chat/node_modules`` (``npm ci --prefix
examples/chat``), and ``--watch`` is a terminal subscriber (websocket-client).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["EVENT", "PUSHER_JS", "Feed", "main", "page_app"]

EVENT = "prices"
PUSHER_JS = Path(__file__).resolve().parent / "chat" / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js"
INSTALL_HINT = "pusher-js is not installed: run `npm ci --prefix examples/chat` in the project root, then reload"


class Feed:
    """Made-up prices doing a random walk, rounded to cents."""

    def __init__(self, symbols: Sequence[str], seed: int | None = None) -> None:
        self._random = random.Random(seed)
        self.prices = {symbol: round(self._random.uniform(20, 200), 2) for symbol in symbols}

    def tick(self) -> dict[str, Any]:
        """Move every price by up to 1%; return the event data."""
        quotes = []
        for symbol, price in self.prices.items():
            new = max(0.01, round(price * (1 + self._random.uniform(-0.01, 0.01)), 2))
            self.prices[symbol] = new
            quotes.append({"symbol": symbol, "price": new, "change": round(new - price, 2)})
        return {"time": int(time.time() * 1000), "prices": quotes}


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>actorcast ticker</title><link rel="icon" href="data:,">
<style>
 body { font: 16px system-ui, sans-serif; margin: 2em; }
 table { border-collapse: collapse; min-width: 20em; }
 td, th { padding: .3em .8em; text-align: right; border-bottom: 1px solid #ddd; }
 th:first-child, td:first-child { text-align: left; }
 .up { color: #080; } .down { color: #b00; } #state { color: #666; }
</style></head>
<body>
<h1>Prices <small id="state">loading pusher-js...</small></h1>
<table><thead><tr><th>symbol</th><th>price</th><th>change</th></tr></thead><tbody id="rows"></tbody></table>
<p id="time"></p>
<script>const TICKER = __CONFIG__;</script>
<script src="/pusher.min.js"></script>
<script>
const state = document.getElementById('state');
if (typeof Pusher === 'undefined') {
  state.textContent = TICKER.installHint;
} else {
  const pusher = new Pusher(TICKER.key, {
    cluster: 'mt1', wsHost: location.hostname, wsPort: TICKER.port, wssPort: TICKER.port,
    forceTLS: false, enabledTransports: ['ws'],  // the node speaks plain ws here: no wss fallback to try
  });
  pusher.connection.bind('state_change', (s) => { state.textContent = s.current; });
  pusher.subscribe(TICKER.channel).bind(TICKER.event, (data) => {
    const rows = document.getElementById('rows');
    rows.replaceChildren(...data.prices.map((q) => {
      const tr = document.createElement('tr');
      const cls = q.change > 0 ? 'up' : q.change < 0 ? 'down' : '';
      for (const [text, c] of [[q.symbol, ''], [q.price.toFixed(2), ''],
                               [(q.change > 0 ? '+' : '') + q.change.toFixed(2), cls]]) {
        const td = document.createElement('td');
        td.textContent = text;
        if (c) td.className = c;
        tr.appendChild(td);
      }
      return tr;
    }));
    document.getElementById('time').textContent = new Date(data.time).toLocaleTimeString();
  });
}
</script>
</body></html>
"""


def page_app(key: str, port: int, channel: str) -> Any:
    """The WSGI app of the page: ``/`` (the page) and ``/pusher.min.js``."""
    config = json.dumps({"key": key, "port": port, "channel": channel, "event": EVENT, "installHint": INSTALL_HINT})
    page = _PAGE.replace("__CONFIG__", config.replace("</", "<\\/")).encode()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO")
        if path == "/":
            body, status, kind = page, "200 OK", "text/html; charset=utf-8"
        elif path == "/pusher.min.js" and PUSHER_JS.is_file():
            body, status, kind = PUSHER_JS.read_bytes(), "200 OK", "application/javascript"
        elif path == "/pusher.min.js":
            body, status, kind = INSTALL_HINT.encode(), "404 Not Found", "text/plain; charset=utf-8"
        else:
            body, status, kind = b"not found", "404 Not Found", "text/plain"
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve(args: argparse.Namespace) -> None:
    """Run the node, the feed and the page until Ctrl-C or SIGTERM."""
    import gevent
    import gevent.event
    from gevent.pywsgi import WSGIServer

    from actors import App, Node

    app = App()  # id "1", key "app-key", secret "app-secret"
    # metrics_port=None: an example has no use for a metrics port (and would
    # clash with a node already running on 9601).
    try:
        node = Node(apps=[app], host=args.host, port=args.port, metrics_port=None).start()
    except OSError as exc:
        # The node's error names the address already ("cannot listen on HOST:PORT (the main port): ...").
        raise SystemExit(f"ticker: {exc.strerror} (is another node running, the chat's say? "
                         "try --port 6002, or 0 for any free port)") from None
    server = WSGIServer((args.host, args.page_port), page_app(app.key, node.port, args.channel), log=None)
    try:
        server.start()
    except OSError as exc:
        node.stop()
        raise SystemExit(f"ticker: cannot serve the page on {args.host}:{args.page_port}: {exc.strerror} "
                         "(try --page-port 0)") from None
    feed = Feed(args.symbols.split(","))
    print(f"ticker: '{EVENT}' on channel {args.channel} every {args.interval_ms} ms", flush=True)
    print(f"  websocket: ws://{args.host}:{node.port}/app/{app.key}?protocol=7", flush=True)
    print(f"  page:      http://{args.host}:{server.server_port}/", flush=True)
    channel = "" if args.channel == "cache-prices" else f" --channel {args.channel}"
    print(f"  terminal:  python -m examples.ticker --watch --port {node.port}{channel}", flush=True)
    if not PUSHER_JS.is_file():
        print(f"  ({INSTALL_HINT})", flush=True)

    def ticking() -> None:
        while True:
            node.broadcast(app.id, args.channel, EVENT, feed.tick())  # thread-safe: the node has its own hub
            gevent.sleep(args.interval_ms / 1000)

    stop = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    ticker = gevent.spawn(ticking)
    stop.wait()
    ticker.kill()
    server.stop(timeout=1)
    node.stop()
    print("ticker: stopped", flush=True)


def watch(args: argparse.Namespace) -> None:
    """Subscribe from the terminal and print each tick (needs websocket-client)."""
    try:
        import websocket
    except ImportError:
        raise SystemExit("--watch needs websocket-client: pip install websocket-client") from None
    url = f"ws://{args.host}:{args.port}/app/app-key?protocol=7&client=ticker-watch&version=1"
    try:
        ws = websocket.create_connection(url, timeout=10)
    except OSError as exc:
        raise SystemExit(f"no ticker at {url}: {exc}") from None
    ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": args.channel}}))
    try:
        while True:
            try:
                text = ws.recv()
            except websocket.WebSocketTimeoutException:
                ws.send(json.dumps({"event": "pusher:ping", "data": {}}))  # quiet feed: keep the socket alive
                continue
            if not text:  # a close frame: the ticker stopped
                print("the ticker closed the connection")
                return
            message = json.loads(text)
            if message.get("event") == "pusher:ping":
                ws.send(json.dumps({"event": "pusher:pong", "data": {}}))
            elif message.get("event") == EVENT:
                data = json.loads(message["data"])
                print("  ".join(f"{q['symbol']} {q['price']:.2f} ({q['change']:+.2f})" for q in data["prices"]),
                      flush=True)
    except KeyboardInterrupt:
        # Ctrl-C can land inside websocket-client's frame reading, with its
        # reader lock held: a close handshake would then wait on that lock for
        # ever. Close the socket instead; the node sees the watcher go.
        ws.shutdown()
    except websocket.WebSocketConnectionClosedException:
        print("the ticker closed the connection")
    finally:
        ws.close()  # a no-op after shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m examples.ticker [--watch] ...``"""
    parser = argparse.ArgumentParser(prog="python -m examples.ticker", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6001, help="the node's port (0: any free one)")
    parser.add_argument("--page-port", type=int, default=8001, help="the page's port (0: any free one)")
    parser.add_argument("--interval-ms", type=int, default=500, help="time between ticks")
    parser.add_argument("--channel", default="cache-prices")
    parser.add_argument("--symbols", default="ACME,GLOBEX,INITECH,UMBRELLA")
    parser.add_argument("--watch", action="store_true", help="subscribe to a running ticker and print the feed")
    args = parser.parse_args(argv)
    if not 10 <= args.interval_ms <= 60_000:
        parser.error("--interval-ms must be 10 to 60000")
    for flag, port in (("--port", args.port), ("--page-port", args.page_port)):
        if not 0 <= port <= 65535:
            parser.error(f"{flag} must be 0 to 65535")
    from transport.errors import ProtocolError
    from transport.names import validate_channel_name

    try:
        validate_channel_name(args.channel)
    except ProtocolError as exc:
        parser.error(f"--channel: {exc.message}")
    if args.watch:
        watch(args)
    else:
        serve(args)


if __name__ == "__main__":
    main()

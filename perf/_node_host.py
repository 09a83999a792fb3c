"""The node-host process: one actorcast Node, driven by commands on stdin.

The driver runs the node here, not in its own process, so this process holds
only the node's sockets and its RSS / peak RSS (VmHWM) are the node's. The
node runs its gevent hub in a background thread; this main thread only reads
commands and calls the node's thread-safe API.

Commands (JSON lines): ``mem``, ``counts`` {channels}, ``totals``,
``broadcast`` {seq, channels, payload_bytes}, ``same_floor`` {seq, channels,
payload_bytes}, ``hub_timings``, ``profile`` {action: start|stop, path},
``census``, ``ticker`` {action: start|status|stop, channel, interval,
payload_bytes}, ``peers``, ``rate`` {channels, rate, seconds, payload_bytes},
``stop``. Each is answered by an event of the same name.

As one of several nodes (``perf/_group.py``): ``--port P --reuse-port
--adapter workers:PATH`` is a worker of ``--workers N`` (the way
``actors/workers.py`` starts one: a fresh process, the shared port, the
relay's bus, no metrics port); ``--adapter redis://...`` a node of a Redis
cluster. ``peers`` lists the other nodes it hears; ``rate`` publishes at a
fixed rate on the hub (``perf/_publisher.py``).

For ``perf/connections.py``: ``census`` reads, on the hub and without asking
any actor (so a long inbox does not delay it), how many connections and
channels the app actor holds and how many sockets the WebSocket glue has
open; ``ticker`` runs a thread that calls ``node.broadcast`` every
``interval`` seconds with ``seq`` and the call time in the data, as the
``broadcast`` command does.

Two measuring tools live here, in this process only (the node's code is untouched):

* ``same_floor``: the floor on the node's own sockets, on its own hub: a bare
  non-blocking ``send`` loop of one pre-encoded frame per channel over the
  sockets of the channel's subscribers, timed inside the hub. Unlike the
  floor server (another process, other sockets) it shares everything with the
  fan-out: the process, its memory, the same socket objects, the same clients.
* ``hub_timings``: per broadcast, the first channel loop's start and the
  last channel's last send (``FanoutDone``, after every slice), with the hub
  thread's CPU and run-queue wait over that span (from /proc), so the
  fan-out splits into thread hop (or bus hop) + loop.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import os
import sys
import threading
import time
import tracemalloc
from typing import Any

from perf._proc import die_with_parent, emit
from perf._publisher import run_rate
from perf._stats import read_proc_mem, read_schedstat
from perf._wire import EVENT, FLOOR_EVENT, make_data

APP_ID = "1"
# A floor frame's data is this much shorter, so its frame is as long as a benchmark event's.
FLOOR_SHORTER = len(FLOOR_EVENT) - len(EVENT)


def install_hub_timer(log: list) -> None:
    """Time each broadcast on the hub (this process only): first channel loop start -> last send.

    ``ChannelActor.broadcast`` is wrapped to note when a channel's loop
    starts, and the ``FanoutDone`` the channel reports once its last
    subscriber was offered the frame (after every slice of a big channel) is
    noted as the end. Each note carries the hub thread's schedstat (ns on
    CPU, ns runnable-but-waiting), read outside the timed span.
    """
    from actors import channel

    original, real_done = channel.ChannelActor.broadcast, channel.FanoutDone

    def timed(self: Any, message: Any) -> None:
        run, wait = read_schedstat()
        log.append((0, message.broadcast_id, message.started, time.monotonic(), run, wait))
        original(self, message)

    def done(app_id: str, broadcast_id: int, sent: int, sent_bytes: int, at: float) -> Any:
        run, wait = read_schedstat()
        log.append((1, broadcast_id, sent, at, run, wait))
        return real_done(app_id, broadcast_id, sent, sent_bytes, at)

    channel.ChannelActor.broadcast, channel.FanoutDone = timed, done


def hub_timings(log: list) -> list[dict]:
    """Per broadcast, in order: call (or arrival) -> first loop start, first start -> last send, CPU."""
    by_id: dict[int, list] = {}
    for entry in log:
        by_id.setdefault(entry[1], []).append(entry)
    log.clear()
    out = []
    for bid in sorted(by_id):
        starts = [e for e in by_id[bid] if e[0] == 0]
        dones = [e for e in by_id[bid] if e[0] == 1]
        if not starts or not dones:
            continue
        first, last = min(starts, key=lambda e: e[3]), max(dones, key=lambda e: e[3])
        out.append({"started": first[2], "first_start": first[3], "last_done": last[3], "hop_s": first[3] - first[2],
                    "span_s": last[3] - first[3], "subscribers": sum(e[2] for e in dones),
                    "cpu_s": (last[4] - first[4]) / 1e9, "wait_s": (last[5] - first[5]) / 1e9})
    return out


def make_bus(spec: str, prefix: str) -> Any:
    """The node's bus: ``workers:PATH`` (a relay's Unix socket, as ``--workers`` uses), a Redis URL, or none."""
    if not spec:
        return None
    if spec.startswith("workers:"):
        from actors.worker_bus import WorkerBus

        return WorkerBus(spec[len("workers:"):])
    from actors.redis_bus import RedisBus

    return RedisBus(spec, prefix=prefix)


def same_socket_pass(node: Any, channels: list[str], seq: int, payload_bytes: int, where: str = "hub") -> dict:
    """One bare send pass of a floor frame over the channels' subscriber sockets.

    The loop runs on the hub (``node.call``), or with ``where="main"`` on this
    process's main thread while the hub idles (a diagnostic: same sockets, a
    thread with another scheduling history). Writers with queued bytes (none,
    when paced) get the frame through ``offer`` after the timed loop, so a
    stream is never reordered; a short send hands its rest to ``offer`` too.
    Both are counted: non-zero means pacing failed.
    """
    t, frames = node.call(_prepare, node, channels, seq, payload_bytes)
    loop = _send_loop(frames) if where == "main" else node.call(_send_loop, frames, timeout=60)
    node.call(_finish, frames, loop["short"])
    from transport import protocol

    return {"seq": seq, "t": t, "seconds": loop["seconds"], "subscribers": sum(len(f[1]) for f in frames),
            "blocked": len(loop["short"]), "queued": sum(len(f[2]) for f in frames), "cpu_s": loop["cpu_s"],
            "wait_s": loop["wait_s"], "frame_bytes": len(frames[0][0]) if frames else 0,
            "event_frame_bytes": len(protocol.event_frame(channels[0], EVENT, make_data(seq, t, payload_bytes)))}


def _prepare(node: Any, channels: list[str], seq: int, payload_bytes: int) -> tuple[float, list]:
    """On the hub: (t, [(frame, raw sends of idle writers, writers with a queue)] per channel)."""
    from transport import protocol  # the node's own encoder, as the floor server uses

    app = node._app_actors[APP_ID]._actor_weakref()
    groups = []
    for name in channels:
        entry = app.channels.get(name)
        writers = [offer.__self__ for offer in entry.ref._actor_weakref().offers.values()] if entry else []
        groups.append((name, [w._send for w in writers if not w._blocked], [w for w in writers if w._blocked]))
    t = time.monotonic()
    data = make_data(seq, t, max(0, payload_bytes - FLOOR_SHORTER))
    return t, [(protocol.event_frame(name, FLOOR_EVENT, data), sends, queued) for name, sends, queued in groups]


def _send_loop(frames: list) -> dict:
    """The timed loop, the same as the floor server's; short sends are noted, not retried."""
    short: list[tuple[Any, bytes, int]] = []
    run0, wait0 = read_schedstat()
    start = time.perf_counter()
    for frame, sends, _ in frames:
        size = len(frame)
        for send in sends:
            try:
                if (n := send(frame)) != size:
                    short.append((send, frame, n))
            except BlockingIOError:
                short.append((send, frame, 0))
    elapsed = time.perf_counter() - start
    run1, wait1 = read_schedstat()
    return {"seconds": elapsed, "short": short, "cpu_s": (run1 - run0) / 1e9, "wait_s": (wait1 - wait0) / 1e9}


def _finish(frames: list, short: list) -> None:
    """On the hub: what the loop could not send goes through the writers, in order."""
    for frame, _, queued in frames:
        for writer in queued:
            writer.offer(frame)
    for send, frame, n in short:
        send.__self__.offer(memoryview(frame)[n:])


def census(node: Any) -> dict:
    """On the hub: the app actor's connection and channel counts, the glue's open sockets."""
    app = node._app_actors[APP_ID]._actor_weakref()
    routes = getattr(node, "_routes", None)
    out = {"sockets": getattr(routes, "open_sockets", None)}
    if app is not None and hasattr(app, "connections") and hasattr(app, "channels"):
        out.update(connections=len(app.connections), channels=len(app.channels))
        if len(app.channels) <= 5:  # a few left: name them (a leftover is then easy to tell)
            out["names"] = sorted(app.channels)
    else:  # the app actor keeps its tables elsewhere: ask it (slower, queued behind its inbox)
        proxy = node._app_actors[APP_ID].proxy()
        out.update(connections=proxy.connection_count().get(timeout=5), channels=len(proxy.channel_names().get(timeout=5)))
    return out


class Ticker:
    """A thread broadcasting one event every ``interval`` seconds (seq 1, 2, ...)."""

    def __init__(self, node: Any, channel: str, interval: float, payload_bytes: int, seq: int = 0) -> None:
        self.node, self.channel, self.interval, self.payload_bytes = node, channel, interval, payload_bytes
        self.seq = seq
        self.late_max_s = 0.0  # worst lateness of a tick against its schedule (this thread's own delay)
        self.call_max_s = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, name="perf-ticker", daemon=True)
        self.thread.start()

    def run(self) -> None:
        start = time.monotonic()
        ticks = 0
        while not self.done.wait(max(0.0, start + ticks * self.interval - time.monotonic())):
            ticks += 1
            self.seq += 1
            t = time.monotonic()
            self.late_max_s = max(self.late_max_s, t - (start + (ticks - 1) * self.interval))
            self.node.broadcast(APP_ID, [self.channel], EVENT, make_data(self.seq, t, self.payload_bytes))
            self.call_max_s = max(self.call_max_s, time.monotonic() - t)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)

    def status(self) -> dict:
        return {"seq": self.seq, "late_max_ms": round(self.late_max_s * 1e3, 3),
                "call_max_ms": round(self.call_max_s * 1e3, 3)}


def _trace_growth(baseline: tracemalloc.Snapshot | None) -> tracemalloc.Snapshot | None:
    """Print (stderr) the 12 allocation sites that grew most since ``baseline``."""
    if not tracemalloc.is_tracing():
        return None
    snapshot = tracemalloc.take_snapshot()
    if baseline is not None:
        print("tracemalloc: top growth since the previous mem command", file=sys.stderr)
        for stat in snapshot.compare_to(baseline, "traceback")[:12]:
            print(f"  {stat.size_diff / 1024:10.0f} KiB {stat.count_diff:8d} blocks", file=sys.stderr)
            for frame in stat.traceback.format()[-6:]:
                print("      " + frame, file=sys.stderr)
    return snapshot


def _diagnostic_knobs() -> None:
    """Experiments on this process only (see perf/README.md): the GIL's switch interval, the cyclic GC."""
    if os.environ.get("PERF_SWITCH_INTERVAL"):  # seconds a thread may hold the GIL while another waits (5 ms)
        sys.setswitchinterval(float(os.environ["PERF_SWITCH_INTERVAL"]))
    if os.environ.get("PERF_GC") == "off":
        gc.disable()
    elif os.environ.get("PERF_GC") == "freeze":  # after start-up, before clients: what exists now is never scanned
        gc.freeze()


def main() -> None:
    die_with_parent()
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default="app-key")
    parser.add_argument("--secret", default="app-secret")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT, as a worker of --workers N")
    parser.add_argument("--metrics-port", type=int, default=0, help="-1: none (a worker's /metrics is its parent's)")
    parser.add_argument("--adapter", default="", help="workers:PATH (a relay's socket) or redis://host:port/db")
    parser.add_argument("--bus-prefix", default="actorcast", help="Redis channel prefix")
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--no-hub-timer", action="store_true", help="no per-broadcast timing (rate runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    baseline = None
    _diagnostic_knobs()
    if os.environ.get("PERF_TRACEMALLOC"):
        # Where the per-connection memory goes: each ``mem`` prints the top growth since the last.
        tracemalloc.start(int(os.environ["PERF_TRACEMALLOC"]))
    from actors import App, Node  # imported here: the driver process never loads gevent

    timings: list = []
    if not args.no_hub_timer:
        install_hub_timer(timings)

    node = Node(
        apps=[App(id=APP_ID, key=args.key, secret=args.secret, activity_timeout=120)],
        host="127.0.0.1",
        port=args.port,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        adapter=make_bus(args.adapter, args.bus_prefix),
        reuse_port=args.reuse_port,
        heartbeat_interval=args.heartbeat,
    ).start()
    emit({"ev": "started", "port": node.port, "metrics_port": node.metrics_port, "pid": os.getpid(),
          "node_id": node.node_id, **read_proc_mem(os.getpid())})
    profiler: cProfile.Profile | None = None
    ticker: Ticker | None = None
    seqs: dict[str, int] = {}  # rate runs: channel -> last seq published (kept across steps)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "broadcast":
                data_len = cmd["payload_bytes"]
                t = time.monotonic()
                node.broadcast(APP_ID, cmd["channels"], EVENT, make_data(cmd["seq"], t, data_len))
                emit({"ev": "broadcast", "seq": cmd["seq"], "t": t, "call_us": (time.monotonic() - t) * 1e6})
            elif op == "same_floor":
                where = os.environ.get("PERF_SAME_FLOOR_THREAD", "hub")  # "main": diagnostic, see README
                result = same_socket_pass(node, cmd["channels"], cmd["seq"], cmd["payload_bytes"], where)
                emit({"ev": "same_floor", **result})
            elif op == "hub_timings":
                emit({"ev": "hub_timings", "broadcasts": node.call(hub_timings, timings)})
            elif op == "mem":
                emit({"ev": "mem", **read_proc_mem(os.getpid())})
                baseline = _trace_growth(baseline)
            elif op == "counts":
                subs = {ch: node.subscription_count(APP_ID, ch) for ch in cmd.get("channels", [])}
                emit({"ev": "counts", "connections": node.connection_count(), "subscriptions": subs})
            elif op == "totals":
                emit({"ev": "totals", "totals": node.metrics_totals().get(APP_ID, {})})
            elif op == "profile":
                # cProfile only sees the thread that enables it: enable it on the hub thread.
                if cmd["action"] == "start":
                    profiler = cProfile.Profile()
                    node.call(profiler.enable)
                elif profiler is not None:
                    node.call(profiler.disable)
                    profiler.dump_stats(cmd["path"])
                emit({"ev": "profile"})
            elif op == "census":
                emit({"ev": "census", "t": time.monotonic(), **node.call(census, node, timeout=60)})
            elif op == "ticker":
                if cmd["action"] == "start" and ticker is None:
                    ticker = Ticker(node, cmd["channel"], cmd["interval"], cmd["payload_bytes"], cmd.get("seq", 0))
                elif cmd["action"] == "stop" and ticker is not None:
                    ticker.stop()
                emit({"ev": "ticker", **(ticker.status() if ticker else {"seq": 0})})
                if cmd["action"] == "stop":
                    ticker = None
            elif op == "peers":
                emit({"ev": "peers", "peers": node.call(lambda: sorted(node.cluster.peers)),
                      "connected": node.cluster.connected})
            elif op == "rate":
                seconds = cmd["seconds"]
                emit({"ev": "rate", **node.call(run_rate, node, APP_ID, cmd, seqs, timeout=seconds + 60)})
            elif op == "stop":
                break
            else:
                emit({"ev": "error", "message": f"unknown command {op!r}"})
    finally:
        if ticker is not None:
            ticker.stop()
        started = time.monotonic()
        node.stop()
        emit({"ev": "stop", "seconds": time.monotonic() - started})


if __name__ == "__main__":
    main()

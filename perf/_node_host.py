"""The node-host process: one actorcast Node, driven by commands on stdin.

The driver runs the node here, not in its own process, so this process holds
only the node's sockets and its RSS / peak RSS (VmHWM) are the node's. The
node runs its gevent hub in a background thread; this main thread only reads
commands and calls the node's thread-safe API.

Commands (JSON lines): ``mem``, ``counts`` {channels}, ``totals``,
``broadcast`` {seq, channels, payload_bytes}, ``profile`` {action: start|stop,
path}, ``stop``. Each is answered by an event of the same name.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import sys
import time
import tracemalloc

from perf._proc import die_with_parent, emit
from perf._stats import read_proc_mem
from perf._wire import EVENT, make_data

APP_ID = "1"


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


def main() -> None:
    die_with_parent()
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default="app-key")
    parser.add_argument("--secret", default="app-secret")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    baseline = None
    if os.environ.get("PERF_TRACEMALLOC"):
        # Where the per-connection memory goes: each ``mem`` prints the top growth since the last.
        tracemalloc.start(int(os.environ["PERF_TRACEMALLOC"]))
    from actors import App, Node  # imported here: the driver process never loads gevent

    node = Node(
        apps=[App(id=APP_ID, key=args.key, secret=args.secret, activity_timeout=120)],
        host="127.0.0.1",
        port=0,
        metrics_port=0,
    ).start()
    emit({"ev": "started", "port": node.port, "metrics_port": node.metrics_port, "pid": os.getpid(),
          **read_proc_mem(os.getpid())})
    profiler: cProfile.Profile | None = None
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
            elif op == "stop":
                break
            else:
                emit({"ev": "error", "message": f"unknown command {op!r}"})
    finally:
        started = time.monotonic()
        node.stop()
        emit({"ev": "stop", "seconds": time.monotonic() - started})


if __name__ == "__main__":
    main()

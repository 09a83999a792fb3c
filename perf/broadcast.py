"""Broadcast fan-out benchmark: real WebSocket clients, one node, a measured floor.

Run from the repository root::

    python -m perf.broadcast                                   # 1000 clients, 1 channel, 20 messages
    python -m perf.broadcast --clients 10000 --compare-channels 1,50
    python -m perf.broadcast --clients 19000 --json

It starts a node in a node-host subprocess (so the node's RSS is its own),
spreads the clients over several client processes (a process may hold at
most 20,000 file descriptors), broadcasts ``--messages`` events one after
another, and measures the same send pattern with a bare ``socket.send`` loop
twice: in a floor-server process of its own, and on the node's own sockets
inside the node's hub (the same-socket floor, interleaved with the
broadcasts). See perf/README.md for what each figure means. Exits 1 when a
message was lost, duplicated or reordered or the node's counters disagree
with what clients received; 2 on a usage error or a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.parse
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``perf`` and ``actors`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perf._http import HttpTrigger, NotAvailable  # noqa: E402
from perf._proc import ChildError, kill_all, spawn  # noqa: E402
from perf._run import run_layout  # noqa: E402
from perf._wire import MIN_PAYLOAD  # noqa: E402

MAX_SOCKETS_PER_PROCESS = 5000


def _env(name: str, default: Any) -> Any:
    value = os.environ.get(name)
    return type(default)(value) if value not in (None, "") else default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m perf.broadcast", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=_env("NUM_CLIENTS", 1000), help="WebSocket clients (NUM_CLIENTS)")
    p.add_argument("--channels", type=int, default=_env("NUM_CHANNELS", 1),
                   help="channels, clients spread evenly (NUM_CHANNELS)")
    p.add_argument("--messages", type=int, default=_env("NUM_MESSAGES", 20), help="broadcasts per run (NUM_MESSAGES)")
    p.add_argument("--payload-bytes", type=int, default=_env("PAYLOAD_BYTES", 100),
                   help="length of the event's data string (PAYLOAD_BYTES)")
    p.add_argument("--via", choices=("python", "http"), default=_env("VIA", "python"),
                   help="broadcast with Node.broadcast in the node host, or the HTTP API (VIA)")
    p.add_argument("--workers", type=int, default=_env("WORKERS", 1), help="node worker processes: only 1 for now")
    p.add_argument("--client-procs", type=int, default=_env("CLIENT_PROCS", 0),
                   help=f"client processes (default: enough for <= {MAX_SOCKETS_PER_PROCESS} sockets each, min 2)")
    p.add_argument("--compare-channels", default=_env("COMPARE_CHANNELS", ""),
                   help="e.g. 1,50: run each channel count with the same clients")
    p.add_argument("--url", default=_env("TARGET_URL", ""), help="ws://host:port/app/KEY of a running node")
    p.add_argument("--metrics-url", default=_env("METRICS_URL", ""), help="its /metrics (with --url)")
    p.add_argument("--app-id", default=_env("APP_ID", "1"))
    p.add_argument("--secret", default=_env("APP_SECRET", "app-secret"), help="app secret for --via http")
    p.add_argument("--connect-timeout", type=float, default=_env("CONNECT_TIMEOUT", 0.0),
                   help="seconds for all clients to connect and subscribe (default 30 + 10 per 1000)")
    p.add_argument("--message-timeout", type=float, default=_env("MESSAGE_TIMEOUT", 30.0),
                   help="seconds for one message to reach every client")
    p.add_argument("--timeout", type=float, default=_env("RUN_TIMEOUT", 1800.0), help="whole run, seconds")
    p.add_argument("--inflight", type=int, default=64, help="handshakes in flight per client process")
    p.add_argument("--profile", default="", help="cProfile the node's hub during broadcasts into PREFIX.cN.prof")
    p.add_argument("--spy", default="", help="py-spy record the node host during broadcasts into PREFIX.cN.txt")
    p.add_argument("--strace", default="", help="strace -c -f the node host during broadcasts into PREFIX.cN.txt")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    opts = p.parse_args(argv)

    if opts.spy and opts.strace:
        p.error("--spy and --strace both trace the node host and cannot attach together: pick one")
    if opts.workers != 1:
        p.error("--workers: only 1 is supported for now (worker processes come with the cluster adapter)")
    if opts.clients < 1 or opts.messages < 1 or opts.channels < 1:
        p.error("--clients, --channels and --messages must be at least 1")
    if opts.payload_bytes < MIN_PAYLOAD:
        p.error(f"--payload-bytes must be at least {MIN_PAYLOAD} (seq, timestamp and padding)")
    opts.layouts = [int(x) for x in opts.compare_channels.split(",") if x.strip()] or [opts.channels]
    if any(c < 1 or c > 100 for c in opts.layouts):
        p.error("channel counts must be 1..100 (a Pusher trigger names at most 100 channels)")
    procs = opts.client_procs or max(2, -(-opts.clients // MAX_SOCKETS_PER_PROCESS))
    opts.client_procs = min(procs, opts.clients)
    if -(-opts.clients // opts.client_procs) > 19000:
        p.error("more than 19,000 sockets per client process would pass the 20,000 descriptor limit")
    if not opts.connect_timeout:
        opts.connect_timeout = 30 + opts.clients / 100
    opts.host, opts.key, opts.port = "127.0.0.1", "app-key", 0
    if opts.url:
        url = urllib.parse.urlsplit(opts.url)
        if url.scheme != "ws" or not url.path.startswith("/app/"):
            p.error("--url must look like ws://host:port/app/KEY")
        opts.host, opts.port, opts.key = url.hostname, url.port or 80, url.path.split("/")[2]
        if opts.via != "http":
            p.error("--url targets a node in another process: only --via http can broadcast to it")
    opts.make_trigger = lambda port: HttpTrigger(f"http://{opts.host}:{port}", opts.app_id, opts.key, opts.secret)
    opts.trigger = opts.make_trigger(opts.port) if opts.url else None
    opts.metrics_url = opts.metrics_url or None
    return opts


def run(opts: argparse.Namespace) -> dict[str, Any]:
    """Every layout with the same client processes; returns the whole report."""
    if opts.trigger is not None:
        opts.trigger.probe()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "clients": opts.clients,
        "messages": opts.messages,
        "payload_bytes": opts.payload_bytes,
        "via": opts.via,
        "client_procs": opts.client_procs,
        "layouts": [],
    }
    clients = [spawn(f"clients-{i}", "perf._clients") for i in range(opts.client_procs)]
    for channels in opts.layouts:
        report["layouts"].append(run_layout(opts, channels, clients))
    for child in clients:
        child.kill(grace=5)
    layouts = report["layouts"]
    if len(layouts) >= 2 and layouts[0].get("fanout_ms") and layouts[1].get("fanout_ms"):
        report["single_vs_multi"] = round(layouts[0]["fanout_ms"] / layouts[1]["fanout_ms"], 2)
    report["failures"] = [f"{l['channels']} channels: {f}" for l in layouts for f in l["failures"]]
    report["ok"] = not report["failures"]
    return report


ROWS = [
    ("delivered / expected", lambda r: f"{r.get('delivered')} / {r.get('expected')}"),
    ("duplicates, out of order, lost conns", lambda r: f"{r.get('duplicates')}, {r.get('out_of_order')}, "
                                                       f"{r.get('connections_lost')}"),
    ("latency p50/p95/p99/max (ms)", lambda r: "/".join(str(r.get(f"latency_{k}_ms")) for k in ("p50", "p95", "p99", "max"))),
    ("fan-out per broadcast (ms, mean/median/min)", lambda r: f"{r.get('fanout_ms')} / {r.get('fanout_median_ms')} / "
                                                        f"{r.get('fanout_min_ms')}"),
    ("fan-out per subscriber (us)", lambda r: r.get("fanout_per_subscriber_us")),
    ("floor per subscriber (us)", lambda r: r.get("floor_per_subscriber_us")),
    ("floor total per pass (ms, mean/median/min)", lambda r: f"{r.get('floor_total_ms')} / "
     f"{r.get('floor_total_median_ms')} / {r.get('floor_total_min_ms')}"),
    ("ratio_to_floor (mean; median)", lambda r: f"{r.get('ratio_to_floor')}; {r.get('ratio_to_floor_median')}"),
    ("p99 latency / floor total", lambda r: r.get("p99_over_floor_total")),
    ("floor latency p50/p99 (ms)", lambda r: f"{r.get('floor_latency_p50_ms')}/{r.get('floor_latency_p99_ms')}"),
    ("fan-out in hub (ms, mean/median)", lambda r: f"{r.get('hub_fanout_ms')} / {r.get('hub_fanout_median_ms')}"),
    ("hub fan-out per subscriber (us)", lambda r: r.get("hub_fanout_per_subscriber_us")),
    ("call->loop hop (ms, mean/max)", lambda r: f"{r.get('hub_hop_ms')} / {r.get('hub_hop_max_ms')}"),
    ("same-socket floor per subscriber (us)", lambda r: r.get("same_socket_floor_per_subscriber_us")),
    ("same-socket floor total (ms, mean/median)", lambda r: f"{r.get('same_socket_floor_total_ms')} / "
     f"{r.get('same_socket_floor_total_median_ms')}"),
    ("ratio_to_same_socket_floor (histogram; hub)", lambda r: f"{r.get('ratio_to_same_socket_floor')}; "
     f"{r.get('hub_ratio_to_same_socket_floor')}"),
    ("p99 latency / same-socket floor total", lambda r: r.get("p99_over_same_socket_floor_total")),
    ("same-socket floor latency p50/p99 (ms)", lambda r: f"{r.get('same_floor_latency_p50_ms')}/"
     f"{r.get('same_floor_latency_p99_ms')}"),
    ("CPU/sub us: fan-out / same-sock / floor srv", lambda r: f"{r.get('hub_cpu_per_subscriber_us')} / "
     f"{r.get('same_socket_floor_cpu_per_subscriber_us')} / {r.get('floor_cpu_per_subscriber_us')}"),
    ("run-queue wait/pass ms: same three", lambda r: f"{r.get('hub_runqueue_wait_ms')} / "
     f"{r.get('same_socket_floor_runqueue_wait_ms')} / {r.get('floor_runqueue_wait_ms')}"),
    ("node sent delta / delivered", lambda r: f"{r.get('node_sent_delta')} / {r.get('delivered')}"),
    ("node RSS before/connected/peak (MiB)", lambda r: "/".join(
        f"{r[k] / 1024:.1f}" if r.get(k) is not None else "-"
        for k in ("node_rss_before_kib", "node_rss_connected_kib", "node_peak_rss_kib"))),
    ("RSS per client (KiB)", lambda r: r.get("rss_per_client_kib")),
    ("connect+subscribe (s)", lambda r: r.get("connect_seconds")),
    ("frame bytes", lambda r: r.get("frame_bytes")),
]


def print_report(report: dict[str, Any]) -> None:
    print(f"actorcast broadcast benchmark, {report['date']}: {report['clients']} clients, "
          f"{report['messages']} messages of {report['payload_bytes']} bytes via {report['via']}, "
          f"{report['client_procs']} client processes")
    layouts = report["layouts"]
    print(f"{'':44}" + "".join(f"{str(l['channels']) + ' channel(s)':>30}" for l in layouts))
    for label, get in ROWS:
        print(f"{label:44}" + "".join(f"{str(get(l)):>30}" for l in layouts))
    if "single_vs_multi" in report:
        print(f"{'single_vs_multi (fan-out 1st / 2nd)':44}{report['single_vs_multi']:>30}")
    print("OK" if report["ok"] else "FAILED:\n  " + "\n  ".join(report["failures"]))


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)

    def on_alarm(*_: Any) -> None:
        raise TimeoutError(f"the run took longer than --timeout {opts.timeout:.0f}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(opts.timeout)))
    try:
        report = run(opts)
    except (ChildError, NotAvailable, TimeoutError, OSError) as exc:
        print(f"perf.broadcast: {exc}", file=sys.stderr)
        if opts.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        return 2
    finally:
        signal.alarm(0)
        kill_all()
    if opts.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

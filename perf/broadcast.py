"""Broadcast fan-out benchmark: real WebSocket clients, one node, a measured floor.

Run from the repository root::

    python -m perf.broadcast                                   # 1000 clients, 1 channel, 20 messages
    python -m perf.broadcast --clients 10000 --compare-channels 1,50
    python -m perf.broadcast --clients 19000 --json
    python -m perf.broadcast --clients 25000 --workers 2              # one channel, 2 worker processes
    python -m perf.broadcast --clients 19000 --workers 1,2            # 1 vs 2 workers, same clients, one run
    python -m perf.broadcast --clients 1000 --adapter redis --nodes 1,2   # the Redis hop: 1 node vs 2
    python -m perf.broadcast --adapter redis --nodes 3 --rates 1000,2000  # 3 nodes, publishes at fixed rates

It starts a node in a node-host subprocess (so the node's RSS is its own;
with ``--workers``/``--nodes``, several: perf/_group.py),
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
import platform
import signal
import sys
import time
import urllib.parse
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``perf`` and ``actors`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perf._http import HttpTrigger, NotAvailable  # noqa: E402
from perf._proc import ChildError, kill_all, spawn  # noqa: E402
from perf._rate_run import print_rates, run_rates  # noqa: E402
from perf._redis import RedisServer  # noqa: E402
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
    p.add_argument("--workers", default=_env("WORKERS", "1"),
                   help="worker processes on one port, e.g. 2, or 1,2 to compare them in one run (WORKERS)")
    p.add_argument("--adapter", default=_env("ADAPTER", ""),
                   help="redis://host:port/db, or 'redis' to start a private redis-server (ADAPTER)")
    p.add_argument("--nodes", default=_env("NODES", "1"),
                   help="with --adapter: nodes joined by Redis, e.g. 1,2 (NODES)")
    p.add_argument("--placement", choices=("remote", "all"), default=_env("PLACEMENT", "remote"),
                   help="over Redis: clients on the nodes but the publisher's (remote), or on every node")
    p.add_argument("--no-floor", dest="floor", action="store_false", help="skip the floor-server phase")
    p.add_argument("--lazy-clients", type=float, default=_env("LAZY_CLIENTS", 0.0), metavar="MS",
                   help="clients sleep MS once frames arrive, then read, timed by the kernel (perf/_clients_lazy.py)")
    p.add_argument("--rates", default=_env("RATES", ""),
                   help="cluster rate run: publishes/s per step, e.g. 1000,2000,4000 (see perf/_rate_run.py)")
    p.add_argument("--rate-floor", action="store_true", default=bool(_env("RATE_FLOOR", 0)),
                   help="rate run: the same steps on floor nodes (perf/_rate_floor.py) right after (RATE_FLOOR)")
    p.add_argument("--step-seconds", type=float, default=_env("STEP_SECONDS", 5.0), help="rate run: seconds per step")
    p.add_argument("--knee-ms", type=float, default=_env("KNEE_MS", 50.0),
                   help="rate run: stop stepping up once p99 passes this (or the rate is not kept)")
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
    try:
        workers = [int(x) for x in str(opts.workers).split(",") if x.strip()]
        nodes = [int(x) for x in str(opts.nodes).split(",") if x.strip()]
    except ValueError:
        p.error("--workers and --nodes take numbers, e.g. 2 or 1,2")
    if not workers or not nodes or min(workers + nodes) < 1:
        p.error("--workers and --nodes must be at least 1")
    if opts.adapter and max(workers) > 1:
        p.error("--workers with --adapter is not measured here: pick workers (one machine) or --nodes over Redis")
    if max(nodes) > 1 and not opts.adapter:
        p.error("--nodes N needs --adapter redis://... (or --adapter redis)")
    if opts.adapter and opts.adapter != "redis" and not opts.adapter.startswith("redis://"):
        p.error("--adapter must be redis://host:port/db or 'redis'")
    counts = nodes if opts.adapter else workers
    opts.groups = [("single", 1) if k == 1 else ("redis" if opts.adapter else "workers", k) for k in counts]
    opts.rate_steps = [float(x) for x in opts.rates.split(",") if x.strip()]
    if opts.rate_floor and not (opts.rate_steps and opts.adapter):
        p.error("--rate-floor goes with a rate run over Redis: --adapter redis --nodes 3 --rates ...")
    if opts.rate_steps and (len(opts.groups) != 1 or opts.groups[0][0] == "single"):
        p.error("--rates needs one group of nodes: --adapter ... --nodes 3, or --workers 3")
    if opts.clients < 1 or opts.messages < 1 or opts.channels < 1:
        p.error("--clients, --channels and --messages must be at least 1")
    if opts.payload_bytes < MIN_PAYLOAD:
        p.error(f"--payload-bytes must be at least {MIN_PAYLOAD} (seq, timestamp and padding)")
    opts.layouts = [int(x) for x in opts.compare_channels.split(",") if x.strip()] or [opts.channels]
    if any(c < 1 or (c > 100 and not opts.rate_steps) for c in opts.layouts):
        p.error("channel counts must be 1..100 (a Pusher trigger names at most 100 channels; a rate run publishes "
                "to one channel at a time and takes more)")
    procs = opts.client_procs or max(2, -(-opts.clients // MAX_SOCKETS_PER_PROCESS))
    opts.client_procs = min(procs, opts.clients)
    if -(-opts.clients // opts.client_procs) > 19000:
        p.error("more than 19,000 sockets per client process would pass the 20,000 descriptor limit")
    if not opts.connect_timeout:
        opts.connect_timeout = 30 + opts.clients / 100
    opts.host, opts.key, opts.port = "127.0.0.1", "app-key", 0
    if opts.url and opts.groups != [("single", 1)]:
        p.error("--url measures a running node: --workers/--nodes start their own")
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
        "lazy_clients_ms": opts.lazy_clients or None,
        "machine": machine(),
        "layouts": [],
    }
    redis = None
    if opts.adapter:
        redis = RedisServer() if opts.adapter == "redis" else None
        opts.adapter_url = redis.url if redis is not None else opts.adapter
        opts.redis_pid = redis.pid if redis is not None else None
        report["adapter"] = "private redis-server " + opts.adapter_url if redis is not None else opts.adapter_url
    try:
        lazy = ("perf._clients_lazy", str(opts.lazy_clients)) if opts.lazy_clients else ("perf._clients",)
        clients = [spawn(f"clients-{i}", *lazy) for i in range(opts.client_procs)]
        if opts.rate_steps:
            report.update(run_rates(opts, clients, redis.pid if redis is not None else None))
            if opts.rate_floor:
                report["floor"] = run_rates(opts, clients, opts.redis_pid, "floor", opts.groups[0][1])
        else:
            for kind, count in opts.groups:
                for channels in opts.layouts:
                    report["layouts"].append(run_layout(opts, channels, clients, kind, count))
        for child in clients:
            child.kill(grace=5)
    finally:
        if redis is not None:
            redis.stop()
    layouts = report["layouts"]
    if len(opts.groups) == 1 and len(layouts) >= 2 and layouts[0].get("fanout_ms") and layouts[1].get("fanout_ms"):
        report["single_vs_multi"] = round(layouts[0]["fanout_ms"] / layouts[1]["fanout_ms"], 2)
    report["comparisons"] = compare(layouts)
    if report.get("floor") is not None:
        report["failures"] = report.get("failures", []) + [f"floor: {f}" for f in report["floor"]["failures"]]
    report["failures"] = report.get("failures", []) + [
        f"{l['channels']} channels, {l['label']}: {f}" for l in layouts for f in l["failures"]]
    report["ok"] = not report["failures"]
    return report


def compare(layouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each group (workers, Redis nodes) against one node, same channels: means over repeated layouts."""
    def avg(rows: list[dict], key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    out = []
    for channels in sorted({l["channels"] for l in layouts}):
        base = [l for l in layouts if l["channels"] == channels and l["node"] == "single"]
        for label in dict.fromkeys(l["label"] for l in layouts if l["node"] != "single"):
            rows = [l for l in layouts if l["channels"] == channels and l["label"] == label]
            if not base or not rows:
                continue
            row: dict[str, Any] = {"channels": channels, "group": label, "runs": [len(base), len(rows)]}
            for key in ("fanout_wall_median_ms", "fanout_wall_ms", "last_send_median_ms", "first_receipt_median_ms",
                        "latency_p50_ms", "latency_p99_ms"):
                b, g = avg(base, key), avg(rows, key)
                if b is not None and g is not None:
                    row[key] = [round(b, 3), round(g, 3)]
                    row[key.replace("_ms", "_ratio")] = round(g / b, 3) if b else None
                    row[key.replace("_ms", "_diff_ms")] = round(g - b, 3)
            out.append(row)
    return out


def machine() -> str:
    """Cores, kernel and Python of this machine, for the record."""
    return (f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def _cpu_row(cpu: dict[str, Any]) -> str:
    clients = round(sum(cpu["clients_ms"]), 1) if cpu.get("clients_ms") else None
    nodes = "+".join(str(round(ms, 1)) for ms in cpu.get("node_ms", [])) or None
    return f"{nodes} / {clients} / {cpu.get('others_ms')}"


ROWS = [
    ("delivered / expected", lambda r: f"{r.get('delivered')} / {r.get('expected')}"),
    ("duplicates, out of order, lost conns", lambda r: f"{r.get('duplicates')}, {r.get('out_of_order')}, "
                                                       f"{r.get('connections_lost')}"),
    ("latency p50/p95/p99/max (ms)", lambda r: "/".join(str(r.get(f"latency_{k}_ms")) for k in ("p50", "p95", "p99", "max"))),
    ("fan-out wall: call->last receipt (mean/med/max)", lambda r: f"{r.get('fanout_wall_ms')} / "
     f"{r.get('fanout_wall_median_ms')} / {r.get('fanout_wall_max_ms')}"),
    ("first receipt (ms, median/min)",
     lambda r: f"{r.get('first_receipt_median_ms')} / {r.get('first_receipt_min_ms')}"),
    ("call->last send, all nodes (ms, mean/med)",
     lambda r: f"{r.get('last_send_ms')} / {r.get('last_send_median_ms')}"),
    ("CPU ms/broadcast: nodes / clients / others", lambda r: _cpu_row(r.get("cpu_per_broadcast") or {})),
    ("cores busy during broadcasts",
     lambda r: f"{(r.get('cpu_per_broadcast') or {}).get('cores_busy')} of {os.cpu_count()}"),
    ("clients per node", lambda r: "+".join(str(h["connections"]) for h in r["hosts"]) if r.get("hosts") else "-"),
    ("latency on other nodes p50/p99 (ms)", lambda r: f"{r['latency_label1']['p50_ms']}/{r['latency_label1']['p99_ms']}"
     if r.get("latency_label1") else "-"),
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


def print_floor_ratios(report: dict[str, Any]) -> None:
    """The nodes' latency over the floor's, step by step, measured in one run."""
    floor = {s["rate"]: s for s in report["floor"]["steps"]}
    for step in report["steps"]:
        f = floor.get(step["rate"])
        if f and f.get("latency_p99_ms") and step.get("latency_p99_ms") and f.get("latency_p50_ms"):
            print(f"{step['rate']:.0f}/s: nodes / floor: p50 {step['latency_p50_ms'] / f['latency_p50_ms']:.1f}x, "
                  f"p99 {step['latency_p99_ms'] / f['latency_p99_ms']:.1f}x; node cores "
                  f"{sum(step['cpu_cores']['nodes']):.2f} / {sum(f['cpu_cores']['nodes']):.2f}")


def print_report(report: dict[str, Any]) -> None:
    print(f"actorcast broadcast benchmark, {report['date']}: {report['clients']} clients, "
          f"{report['messages']} messages of {report['payload_bytes']} bytes via {report['via']}, "
          f"{report['client_procs']} client processes")
    if report.get("steps") is not None:
        print_rates(report)
        if report.get("floor") is not None:
            print_rates({**report["floor"], "clients": report["clients"], "adapter": report.get("adapter")})
            print_floor_ratios(report)
        print("OK" if report["ok"] else "FAILED:\n  " + "\n  ".join(report["failures"]))
        return
    layouts = report["layouts"]
    print(f"{'':44}" + "".join(f"{str(l['channels']) + ' ch, ' + l['label']:>30}" for l in layouts))
    for label, get in ROWS:
        print(f"{label:44}" + "".join(f"{str(get(l)):>30}" for l in layouts))
    if "single_vs_multi" in report:
        print(f"{'single_vs_multi (fan-out 1st / 2nd)':44}{report['single_vs_multi']:>30}")
    for c in report.get("comparisons", []):
        print(f"{c['group']} vs 1 node, {c['channels']} channel(s), runs {c['runs']}: fan-out wall median "
              f"{c.get('fanout_wall_median_ms')} ms = {c.get('fanout_wall_median_ratio')}x "
              f"(mean-based {c.get('fanout_wall_ratio')}x); first receipt {c.get('first_receipt_median_ms')} ms "
              f"(+{c.get('first_receipt_median_diff_ms')} ms)")
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

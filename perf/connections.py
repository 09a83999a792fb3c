"""Connections at scale: connect storms, idle memory, mass disconnects, big queries, first messages.

Run from the repository root::

    python -m perf.connections                       # N=10,000, every phase (a few minutes)
    python -m perf.connections --quick               # N=500, smaller samples
    python -m perf.connections --phases storm,memory --clients 20000 --json

One node host process (``perf._node_host``), the clients spread over several
processes (a process may hold at most 20,000 descriptors), a probe process and
a survivors process; every figure is measured in the same run, the connect
floor (``perf._conn_floor``) too, and CPU is read from /proc. See the
"Connections" section of perf/README.md for what each figure means. Exit
status: 0 every check passed (targets are reported, not enforced), 1 a check
failed (a client not served, a leftover channel, a survivor lost a message),
2 usage error, timeout or a child died.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``perf`` and ``actors`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perf._conn_run import ConnRun  # noqa: E402
from perf._proc import ChildError, kill_all  # noqa: E402

__all__ = ["main", "parse_args", "run"]

PHASES = ("storm", "memory", "first", "query", "mass")
MAX_SOCKETS_PER_PROCESS = 5000

# (label, section, field, target, at most?) -- the targets next to what was measured
TARGETS = [
    ("broadcast right after subscription_succeeded, p99 (ms)", "first_message", "broadcast_p99_ms", 5, True),
    ("trigger on a kept-alive HTTP connection, p99 (ms)", "first_message", "trigger_p99_ms", 5, True),
    ("node CPU per connect + subscribe (ms)", "storm", "cpu_per_connection_ms", 0.3, True),
    ("connect_ratio_to_floor (node CPU / floor CPU)", "storm", "connect_ratio_to_floor", 2.5, True),
    ("mass disconnect: worst probe connect (ms)", "mass_disconnect", "probe_ws_worst_ms", 250, True),
    ("mass disconnect: worst probe API call (ms)", "mass_disconnect", "probe_api_worst_ms", 250, True),
    ("mass disconnect: worst survivor latency (ms)", "mass_disconnect", "survivor_worst_ms", 250, True),
    ("GET /apps/1/channels, worst of the repeats (ms)", "query", "query_max_ms", 100, True),
    ("RSS per idle subscribed connection (KiB)", "memory", "rss_per_connection_kib", 8, True),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m perf.connections", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=0, help="N: storm clients, channels queried, subscribers killed "
                   "(default 10000; 500 with --quick)")
    p.add_argument("--quick", action="store_true", help="N=500 and smaller samples: a minute at most")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma list of {', '.join(PHASES)} (default: all)")
    p.add_argument("--survivors", type=int, default=0, help="subscribers that stay (ticker's audience; default 100)")
    p.add_argument("--storm-channels", type=int, default=0, help="storm client i joins c-{i %% K} (default 0: one "
                   "channel per client, so the query sees N channels)")
    p.add_argument("--client-procs", type=int, default=0, help=f"storm client processes (default: "
                   f"<= {MAX_SOCKETS_PER_PROCESS} sockets each, at least 2)")
    p.add_argument("--inflight", type=int, default=128, help="handshakes in flight per storm process")
    p.add_argument("--first-clients", type=int, default=0, help="fresh clients for the first-message figure (200)")
    p.add_argument("--triggers", type=int, default=0, help="kept-alive triggers timed (default 200)")
    p.add_argument("--trigger-channel", default="live", help="channel of the timed triggers (default: the "
                   "survivors' channel, so each trigger fans out to them; a name nobody joined times the API alone)")
    p.add_argument("--trigger-interval", type=float, default=0.01, help="seconds between timed triggers (0: "
                   "back to back, which measures a queue: each trigger's fan-out delays the next)")
    p.add_argument("--query-repeat", type=int, default=3, help="GET /channels calls in the query phase")
    p.add_argument("--tick-interval", type=float, default=0.1, help="seconds between the survivors' broadcasts")
    p.add_argument("--probe-interval", type=float, default=0.05, help="seconds between probe connects / API calls")
    p.add_argument("--prompt-ms", type=float, default=250, help="a probe slower than this is 'not prompt'")
    p.add_argument("--window-margin", type=float, default=0.5, help="seconds measured before/after a query or cleanup")
    p.add_argument("--census-interval", type=float, default=0.1, help="seconds between node counts after the kill")
    p.add_argument("--cleanup-timeout", type=float, default=120.0, help="seconds the cleanup may take")
    p.add_argument("--connect-timeout", type=float, default=0.0, help="seconds for the storm (default 30 + N/100)")
    p.add_argument("--http-timeout", type=float, default=60.0, help="seconds for one API answer")
    p.add_argument("--timeout", type=float, default=900.0, help="whole run, seconds")
    p.add_argument("--spy", default="", help="py-spy record the node host during storm, query and mass into "
                   "PREFIX.PHASE.txt (raw format, for flame graphs)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    opts = p.parse_args(argv)
    opts.clients = opts.clients or (500 if opts.quick else 10000)
    opts.survivors = opts.survivors or (20 if opts.quick else 100)
    opts.first_clients = opts.first_clients or (50 if opts.quick else 200)
    opts.triggers = opts.triggers or (50 if opts.quick else 200)
    opts.phases = {x.strip() for x in opts.phases.split(",") if x.strip()}
    if opts.phases - set(PHASES) or not opts.phases:
        p.error(f"--phases takes a comma list of {', '.join(PHASES)}")
    if opts.clients < 1 or opts.survivors < 1 or opts.storm_channels < 0:
        p.error("--clients and --survivors must be at least 1, --storm-channels at least 0")
    procs = opts.client_procs or max(2, -(-opts.clients // MAX_SOCKETS_PER_PROCESS))
    opts.client_procs = min(procs, opts.clients)
    if -(-opts.clients // opts.client_procs) > 19000:
        p.error("more than 19,000 sockets per client process would pass the 20,000 descriptor limit")
    opts.connect_timeout = opts.connect_timeout or 30 + opts.clients / 100
    opts.key, opts.secret = "app-key", "app-secret"
    return opts


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version()}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for label, section, field, target, at_most in TARGETS:
        value = report.get(section, {}).get(field)
        if value is None:
            continue
        out.append({"what": label, "target": target, "measured": value,
                    "met": value <= target if at_most else value >= target})
    return out


def run(opts: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "clients": opts.clients,
                              "survivors": opts.survivors, "client_procs": opts.client_procs,
                              "phases": [p for p in PHASES if p in opts.phases]}
    started = time.monotonic()
    report.update(ConnRun(opts).run())
    report["seconds"] = round(time.monotonic() - started, 1)
    report["targets"] = targets(report)
    report["ok"] = not report["failures"]
    return report


SECTIONS = {
    "floor": ["seconds", "connects_per_s", "connect_p50_ms", "connect_p99_ms", "connect_max_ms", "cpu_s",
              "cpu_per_connection_ms", "cpu_sched_per_connection_ms"],
    "storm": ["channels", "seconds", "connects_per_s", "connect_p50_ms", "connect_p99_ms", "connect_max_ms", "retried",
              "cpu_s", "cpu_per_connection_ms", "cpu_sched_per_connection_ms", "connect_ratio_to_floor",
              "connect_ratio_source", "connect_ratio_to_floor_sched"],
    "memory": ["rss_before_kib", "rss_after_kib", "peak_rss_kib", "rss_per_connection_kib"],
    "first_message": ["clients", "broadcast_p50_ms", "broadcast_p99_ms", "broadcast_max_ms", "connect_to_message_p50_ms",
                      "triggers", "trigger_p50_ms", "trigger_p99_ms", "trigger_max_ms"],
    "query": ["channels", "listed", "query_ms", "survivor_worst_ms", "survivor_received", "probe_ws_worst_ms",
              "probe_api_worst_ms", "probe_ws_failed", "probe_api_failed"],
    "mass_disconnect": ["killed", "killed_channels", "survivors", "cleanup_s", "final_census", "prompt_again_s",
                        "probe_ws_count", "probe_ws_worst_ms", "probe_ws_p50_ms", "probe_ws_failed", "probe_api_count",
                        "probe_api_worst_ms", "probe_api_p50_ms", "probe_api_failed", "survivor_worst_ms",
                        "survivor_p99_ms", "survivor_received", "baseline_ws_worst_ms", "baseline_api_worst_ms"],
}


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"actorcast connections benchmark, {report['date']}: N={report['clients']}, {report['survivors']} survivors, "
          f"{report['client_procs']} storm processes; {m['cpus']} CPUs, Python {m['python']}, {report['seconds']} s")
    for section, fields in SECTIONS.items():
        if section not in report:
            continue
        print(f"\n{section}")
        for field in fields:
            if field in report[section]:
                print(f"  {field:34}{report[section][field]}")
    if report["targets"]:
        print("\ntargets (issue 5/9)")
        for t in report["targets"]:
            print(f"  {t['what']:56}<= {t['target']:<6} measured {t['measured']}"
                  f"  {'met' if t['met'] else 'NOT MET'}")
    print("\nOK" if report["ok"] else "\nFAILED:\n  " + "\n  ".join(report["failures"]))


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)

    def on_alarm(*_: Any) -> None:
        raise TimeoutError(f"the run took longer than --timeout {opts.timeout:.0f}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(opts.timeout)))
    try:
        report = run(opts)
    except (ChildError, TimeoutError, OSError) as exc:
        print(f"perf.connections: {exc}", file=sys.stderr)
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

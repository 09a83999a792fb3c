"""The cluster rate run: K nodes over Redis, small channels spread over them, publishes at fixed rates.

``python -m perf.broadcast --adapter redis --nodes 3 --clients 3000 --channels 300 --rates 1000,2000,4000``
(``--workers 3`` instead of ``--adapter``/``--nodes``: the same load on 3 workers joined by the
relay, clients placed by the kernel; a comparison of the two buses on one machine.)

* Layout: client i joins channel ``i % C`` and connects to node ``(i // C) % K``,
  so the subscribers of every channel are spread over the nodes; channel c is
  published by node ``c % K`` only (one publisher per channel, so each channel's
  ``seq`` is the order its subscribers must see it in). Of each publish's
  deliveries about 1/K are local to the publisher, the rest cross Redis;
  every node hears every publish on the bus, as a node of a real cluster does.
* A step at rate R: every node publishes ``R / K`` per second for
  ``--step-seconds`` (``perf/_publisher.py``: on its hub, each publish due at a
  fixed time, lateness measured). Then the clients are told each channel's
  last seq and answer ``caught_up`` (bounded by ``--message-timeout``), and
  report the step's latencies: publish call -> receipt, ``time.monotonic()``
  on both sides, split by whether the subscriber is on the publishing node.
* CPU of every node, of Redis and of the client processes over each step
  (``/proc/PID/stat``), and of the rest of the machine, to say where the time
  goes; ``--spy PREFIX`` records every node with py-spy during each step's
  publishes (``PREFIX.r<rate>.n<k>.txt``).
* The steps go up until one misses: p99 over ``--knee-ms``, fewer than 95% of
  the asked publishes made in time, or a delivery missing. That rate is the
  knee; the one before it is the highest rate sustained.
"""

from __future__ import annotations

import time
from typing import Any

from perf._group import start_group
from perf._proc import Child, ChildError, wait_events
from perf._run import Layout, merge_reports
from perf._stats import machine_busy_s, read_proc_cpu
from perf._trace import start_tracers, stop_tracers

__all__ = ["print_rates", "run_rates"]

TARGET_RATE, TARGET_P99_MS = 1000.0, 5.0  # issue 6/9: p99 <= 5 ms at 1,000 publishes/s on 3 nodes


def _cpu(pid: int) -> float:
    try:
        return read_proc_cpu(pid)["stat_s"]
    except OSError:  # gone: the step's failure says why
        return 0.0


def run_rates(opts: Any, clients: list[Child], redis_pid: int | None, kind: str = "", k: int = 0) -> dict[str, Any]:
    """Every step of ``opts.rate_steps`` against one fresh group; the report's ``steps`` and verdicts.

    The group is ``opts.groups[0]`` unless ``kind``/``k`` name another (``"floor"``: perf._rate_floor).
    """
    if not kind:
        kind, k = opts.groups[0]
    c = opts.channels
    layout = Layout(opts, c, clients, kind, k)
    group = start_group(opts, kind, k, hub_timer=False)
    out: dict[str, Any] = {"nodes": k, "node": kind, "label": group.label, "channels": c,
                           "step_seconds": opts.step_seconds, "steps": [], "failures": []}
    try:
        ports = labels = None  # workers: one port, the kernel places each client
        if kind in ("redis", "floor"):
            node_of = [(i // c) % k for i in range(opts.clients)]
            ports = [group.started[n]["port"] for n in node_of]
            labels = [int(node_of[i] != (i % c) % k) for i in range(opts.clients)]  # 1: not on the publisher
        path = f"/app/{opts.key}?protocol=7&client=perf&version=1"
        out["connect_seconds"] = round(layout.connect(group.port, path, ports, labels, paced=False), 2)
        out["clients_per_node"] = [h["connections"] for h in layout.check_counts(group.hosts)]
        subscribers: dict[str, int] = {}
        for name in layout.names:
            subscribers[name] = subscribers.get(name, 0) + 1
        own = [[name for i, name in enumerate(layout.channels) if i % k == n] for n in range(k)]
        finals: dict[str, int] = {}
        pids = {"nodes": [h.pid for h in group.hosts], "clients": [ch.pid for ch in clients],
                "redis": [redis_pid] if redis_pid else [], "relay": [group.relay.pid] if group.relay else []}
        for rate in opts.rate_steps:
            step = _step(opts, layout, group.hosts, own, rate, finals, subscribers, pids)
            out["steps"].append(step)
            if not step["kept"]:
                out["knee_per_s"] = rate
                break
            out["sustained_per_s"] = rate
        out["failures"].extend(layout.result["failures"])
        for child in clients:
            child.send(op="close")
        wait_events(clients, lambda ch, e: e["ev"] == "close", 60)
        out["node_stop_seconds"] = group.stop()
    finally:
        group.kill()
    at_target = [s for s in out["steps"] if s["rate"] == TARGET_RATE]
    if at_target and k == 3 and kind == "redis":
        out["target_p99_ms_at_1000"] = at_target[0]["latency_p99_ms"]
        out["target_met"] = at_target[0]["kept"] and (at_target[0]["latency_p99_ms"] or 1e9) <= TARGET_P99_MS
    for step in out["steps"]:
        if step["delivered"] != step["expected"] or step["duplicates"] or step["out_of_order"]:
            out["failures"].append(f"{step['rate']:.0f}/s: delivered {step['delivered']} of {step['expected']}, "
                                   f"{step['duplicates']} duplicates, {step['out_of_order']} out of order")
    return out


def _step(opts: Any, layout: Layout, hosts: list[Child], own: list[list[str]], rate: float, finals: dict[str, int],
          subscribers: dict[str, int], pids: dict[str, list[int]]) -> dict[str, Any]:
    clients = layout.clients
    for child in clients:
        child.send(op="reset", keep_last=True)
    wait_events(clients, lambda ch, e: e["ev"] == "reset", 30)
    cpu0 = {role: [_cpu(p) for p in ps] for role, ps in pids.items()}
    tracers = start_tracers(opts, [(host, f"r{rate:.0f}.n{n + 1}") for n, host in enumerate(hosts)])
    machine0 = machine_busy_s()
    started = time.monotonic()
    for host, channels in zip(hosts, own):
        host.send(op="rate", channels=channels, rate=rate / len(hosts), seconds=opts.step_seconds,
                  payload_bytes=opts.payload_bytes)
    pubs = [e for _, e in wait_events(hosts, lambda ch, e: e["ev"] == "rate", opts.step_seconds + 90)]
    publish_s = time.monotonic() - started
    stop_tracers(tracers)
    new = {ch: seq for p in pubs for ch, seq in p["finals"].items()}
    expected = sum((seq - finals.get(ch, 0)) * subscribers.get(ch, 0) for ch, seq in new.items())
    finals.update(new)
    for child in clients:
        child.send(op="expect", finals=finals)
    caught_up = True
    try:
        wait_events(clients, lambda ch, e: e["ev"] == "caught_up", opts.message_timeout)
    except ChildError as exc:
        caught_up = False
        layout.fail(f"{rate:.0f}/s: {exc}")
    drain_s = time.monotonic() - started - publish_s
    cpu1 = {role: [_cpu(p) for p in ps] for role, ps in pids.items()}
    machine = machine_busy_s() - machine0
    for child in clients:
        child.send(op="report")
    figures = merge_reports([e for _, e in wait_events(clients, lambda ch, e: e["ev"] == "report", 60)])
    wall = publish_s + drain_s
    achieved = sum(p["published"] for p in pubs) / max(max(p["seconds"] for p in pubs), 1e-9)
    step: dict[str, Any] = {
        "rate": rate, "achieved_per_s": round(achieved, 1), "published": sum(p["published"] for p in pubs),
        "expected": expected, **figures, "caught_up": caught_up, "drain_s": round(drain_s, 3),
        "late_p99_ms": max((p["late_p99_ms"] or 0) for p in pubs),
        "late_max_ms": max((p["late_max_ms"] or 0) for p in pubs),
        "bus_ack_p50_ms": max((p["bus_ack_p50_ms"] or 0) for p in pubs),
        "bus_ack_p99_ms": max((p["bus_ack_p99_ms"] or 0) for p in pubs),
        "bus_failed": sum(p["bus_failed"] for p in pubs),
        "cpu_cores": {role: [round((b - a) / wall, 2) for a, b in zip(cpu0[role], cpu1[role])] for role in cpu0},
    }
    names = sorted({name for p in pubs for name in p.get("thread_cpu_s", {})})
    if names:  # where each node's CPU went, by thread, over the step's publishes
        step["thread_cores"] = {name: [round(p.get("thread_cpu_s", {}).get(name, 0.0) / p["seconds"], 3)
                                       for p in pubs] for name in names}
    ours = sum(sum(b - a for a, b in zip(cpu0[role], cpu1[role])) for role in cpu0)
    step["cpu_cores"]["others"] = round(max(0.0, machine - ours) / wall, 2)  # the rest of the machine meanwhile
    p99 = step.get("latency_p99_ms")
    step["kept"] = (caught_up and step["delivered"] == expected and achieved >= 0.95 * rate
                    and p99 is not None and p99 <= opts.knee_ms)
    return step


def print_rates(report: dict[str, Any]) -> None:
    """The rate run's table: one line per step."""
    print(f"{report['label']}, {report['channels']} channels, {report['clients']} clients "
          f"{report.get('clients_per_node')}, {report['step_seconds']:.0f} s per step, {report.get('adapter')}")
    print(f"{'rate/s':>8} {'made/s':>8} {'delivered':>17} {'p50':>7} {'p99':>7} {'max':>7} {'local p99':>9} "
          f"{'remote p99':>10} {'late p99':>8} {'ack p99':>7}  cores: nodes / bus / clients / others")
    for s in report["steps"]:
        local, remote = s.get("latency_label0") or {}, s.get("latency_label1") or {}
        cores = s["cpu_cores"]
        bus = cores["redis"] or cores["relay"]
        print(f"{s['rate']:>8.0f} {s['achieved_per_s']:>8.0f} {str(s['delivered']) + '/' + str(s['expected']):>17} "
              f"{s['latency_p50_ms']!s:>7} {s['latency_p99_ms']!s:>7} {s['latency_max_ms']!s:>7} "
              f"{local.get('p99_ms', '-')!s:>9} {remote.get('p99_ms', '-')!s:>10} {s['late_p99_ms']!s:>8} "
              f"{s['bus_ack_p99_ms']!s:>7}  {cores['nodes']} / {bus} / {sum(cores['clients']):.2f}"
              f" / {cores.get('others')}"
              + ("" if s["kept"] else "  <- knee"))
        busy = {name: cores for name, cores in s.get("thread_cores", {}).items() if max(cores) >= 0.005}
        if busy:
            print(f"{'':>8} threads, cores per node: "
                  + "; ".join(f"{name} {' / '.join(f'{c:.2f}' for c in cores)}" for name, cores in busy.items()))
    target = (f"p99 at 1,000/s: {report['target_p99_ms_at_1000']} ms (target <= {TARGET_P99_MS} ms: "
              f"{'met' if report.get('target_met') else 'not met'})" if "target_p99_ms_at_1000" in report
              else "no 1,000/s step on 3 Redis nodes: the target is not measured")
    print(f"sustained {report.get('sustained_per_s')}/s, knee {report.get('knee_per_s')}/s; {target}")

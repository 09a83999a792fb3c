"""One benchmark layout: N clients on C channels, K broadcasts, then the floor.

Phases, each bounded by a timeout and paced by events from the children
(never by sleeps):

1. node: start the node under test (``perf/_group.py``: one node host, N
   workers on one port, or K nodes over Redis; unless ``--url``), read its
   RSS, let the client processes connect and subscribe, read RSS again, then
   broadcast K messages one at a time, each after every client process
   reported ``got`` for the previous one; scrape the fan-out histogram (one
   node) and the sent counters around it. After each broadcast every host
   also runs one same-socket floor pass (a bare send loop on its own sockets,
   on its hub; all hosts at once), paced by ``floor_got``: interleaved, so
   both see the same neighbours and clients.
2. floor (one node only, N <= 19,000): the same client processes connect to
   the floor server, which sends K frames of the same size with a bare
   ``socket.send`` loop, paced the same.
"""

from __future__ import annotations

import time
from typing import Any

from perf._figures import (CpuMeter, derive, hub_figures, mean, median, merge_same_floor, same_floor_figures,
                           wall_figures)
from perf._group import Group, group_label, start_group
from perf._http import HttpTrigger
from perf._proc import Child, ChildError, spawn, wait_events
from perf._stats import merge_hist, percentile, scrape
from perf._trace import start_tracers, stop_tracers
from perf._wire import EVENT, make_data

__all__ = ["FLOOR_MAX_CLIENTS", "Layout", "channel_names", "run_layout"]

FANOUT = "actorcast_broadcast_fanout_seconds"
SENT = "actorcast_messages_sent_total"
FLOOR_MAX_CLIENTS = 19000  # the floor server is one process: 20,000 descriptors at most


def channel_names(count: int) -> list[str]:
    return [f"perf-{i}" for i in range(count)]


class Layout:
    """Runs one layout against ``clients`` (already started client processes)."""

    def __init__(self, opts: Any, channels: int, clients: list[Child], kind: str = "single", count: int = 1) -> None:
        self.opts = opts
        self.channels = channel_names(channels)
        self.clients = clients
        self.n = opts.clients
        self.kind, self.count = kind, count
        # client i subscribes to channel i % C; process p gets a contiguous slice
        self.names = [self.channels[i % channels] for i in range(self.n)]
        self.per = -(-self.n // len(clients))
        self.result: dict[str, Any] = {"channels": channels, "clients": self.n, "messages": opts.messages,
                                       "payload_bytes": opts.payload_bytes, "node": kind, "nodes": count,
                                       "label": group_label(kind, count), "failures": []}

    def fail(self, why: str) -> None:
        self.result["failures"].append(why)

    def _slice(self, values: list) -> list[list]:
        return [values[p * self.per : (p + 1) * self.per] for p in range(len(self.clients))]

    # --- shared steps ------------------------------------------------------------

    def connect(self, port: int, path: str, ports: list[int] | None = None, labels: list[int] | None = None,
                paced: bool = True) -> float:
        """Every client process connects its slice; ``ports``/``labels``: per client (else all on ``port``)."""
        started = time.monotonic()
        per_ports = self._slice(ports) if ports else [None] * len(self.clients)
        per_labels = self._slice(labels) if labels else [None] * len(self.clients)
        for child, names, pp, ll in zip(self.clients, self._slice(self.names), per_ports, per_labels):
            child.send(op="connect", host=self.opts.host, port=port, path=path, channels=names, ports=pp, labels=ll,
                       paced=paced, timeout=self.opts.connect_timeout, inflight=self.opts.inflight)
        events = wait_events(self.clients, lambda c, e: e["ev"] == "connect", self.opts.connect_timeout + 30)
        ready = sum(e["ready"] for _, e in events)
        if ready != self.n:
            errors = [err for _, e in events for err in e["errors"]][:5]
            raise ChildError(f"only {ready}/{self.n} clients connected and subscribed: {errors}")
        return time.monotonic() - started

    def pace(self, seq: int, ev: str = "got") -> list[dict] | None:
        """Wait until every client process has message ``seq`` on all its sockets; their events."""
        try:
            got = wait_events(self.clients, lambda c, e: e["ev"] == ev and e["seq"] == seq, self.opts.message_timeout)
            return [e for _, e in got]
        except ChildError as exc:
            self.fail(f"message {seq}: {exc}")
            return None

    def collect(self, prefix: str) -> dict[str, Any]:
        """Merge the client processes' reports and close their connections."""
        for child in self.clients:
            child.send(op="report")
        reports = [e for _, e in wait_events(self.clients, lambda c, e: e["ev"] == "report", 60)]
        for child in self.clients:
            child.send(op="close")
        wait_events(self.clients, lambda c, e: e["ev"] == "close", 60)
        return merge_reports(reports, prefix)

    # --- phases ------------------------------------------------------------------

    def check_counts(self, hosts: list[Child]) -> list[dict]:
        """Each host's connections and subscriptions (their sums must be N); per-host dicts."""
        per = []
        for host in hosts:
            counts = host.request(30, op="counts", channels=self.channels)
            per.append({"connections": counts["connections"], "subscriptions": sum(counts["subscriptions"].values())})
        conns, subs = sum(h["connections"] for h in per), sum(h["subscriptions"] for h in per)
        if conns != self.n or subs != self.n:
            self.fail(f"nodes see {conns} connections, {subs} subscriptions; want {self.n}")
        return per

    def run_node(self, group: Group | None, port: int, metrics_url: str | None, trigger: HttpTrigger | None) -> None:
        opts, r = self.opts, self.result
        hosts = group.hosts if group is not None else []
        mem = [h.request(10, op="mem")["rss_kib"] for h in hosts]
        if hosts:
            r["node_rss_before_kib"] = sum(mem)
        ports = group.client_ports(self.n, opts.placement) if group is not None else None
        labels = [int(p != group.port) for p in ports] if group is not None and group.kind == "redis" else None
        path = f"/app/{opts.key}?protocol=7&client=perf&version=1"
        r["connect_seconds"] = round(self.connect(port, path, ports, labels), 2)
        per_host: list[dict] = []
        if hosts:
            per_host = self.check_counts(hosts)
            for host, info in zip(per_host, [h.request(10, op="mem") for h in hosts]):
                host["rss_connected_kib"] = info["rss_kib"]
            r["node_rss_connected_kib"] = sum(h["rss_connected_kib"] for h in per_host)
            r["rss_per_client_kib"] = round((r["node_rss_connected_kib"] - r["node_rss_before_kib"]) / self.n, 2)
            sent_before = [h.request(30, op="totals")["totals"].get("sent", 0) for h in hosts]
        before = scrape(metrics_url) if metrics_url else {}
        if opts.profile and hosts:
            group.publisher.request(10, op="profile", action="start")
        suffix = f"c{len(self.channels)}"
        if group is not None and group.kind != "single":
            suffix += f".{group.kind[0]}{group.count}"
        tracers = start_tracers(opts, [(h, suffix + (f".{k}" if len(hosts) > 1 else "")) for k, h in enumerate(hosts)])
        calls: list[float] = []  # each broadcast's call time (monotonic, the clients' clock too)
        call_us: list[float] = []
        walls: list[float] = []  # per broadcast: the last client's receipt latency (us)
        firsts: list[float] = []
        per: list[float] = []  # fan-out seconds of each broadcast, for the median
        same: list[dict] = []  # same-socket floor passes, one after each broadcast
        last = before.get((FANOUT + "_sum", "1"), 0)
        meter = CpuMeter({"node": [h.pid for h in hosts], "relay": [group.relay.pid] if group and group.relay else [],
                          "redis": [opts.redis_pid] if getattr(opts, "redis_pid", None) and hosts else [],
                          "clients": [c.pid for c in self.clients]})
        for seq in range(1, opts.messages + 1):
            meter.start()
            if trigger is not None:
                t = time.monotonic()
                status, body = trigger.trigger(self.channels, EVENT, make_data(seq, t, opts.payload_bytes))
                if status != 200:
                    self.fail(f"HTTP trigger answered {status}: {body[:100]!r}")
            else:
                reply = group.publisher.request(10, op="broadcast", seq=seq, channels=self.channels,
                                                payload_bytes=opts.payload_bytes)
                t = reply["t"]
                call_us.append(reply["call_us"])
            calls.append(t)
            got = self.pace(seq)
            meter.stop()
            if got is None:
                break
            walls.append(max(e["last_us"] for e in got))
            firsts.append(min(e["first_us"] for e in got))
            if metrics_url:  # after delivery, so the scrape never overlaps a fan-out
                now = scrape(metrics_url)
                per.append(now.get((FANOUT + "_sum", "1"), 0) - last)
                last = now.get((FANOUT + "_sum", "1"), 0)
            if hosts:
                for host in hosts:  # every host at once: one pass over all the node's sockets
                    host.send(op="same_floor", seq=seq, channels=self.channels, payload_bytes=opts.payload_bytes)
                passes = wait_events(hosts, lambda c, e: e["ev"] == "same_floor", 60)
                same.append(merge_same_floor([e for _, e in passes]))
                if self.pace(seq, "floor_got") is None:
                    break
        stop_tracers(tracers)
        if opts.profile and hosts:
            group.publisher.request(60, op="profile", action="stop", path=f"{opts.profile}.{suffix}.prof")
        after = settled_scrape(metrics_url, hosts) if metrics_url else {}
        r.update(self.collect(""))
        expected = self.n * opts.messages
        r["expected"] = expected
        if r["delivered"] != expected:
            self.fail(f"delivered {r['delivered']} != expected {expected}")
        if r["duplicates"] or r["out_of_order"]:
            self.fail(f"{r['duplicates']} duplicates, {r['out_of_order']} out of order")
        if call_us:
            r["broadcast_call_us"] = round(sum(call_us) / len(call_us), 1)
        wall_figures(r, walls, firsts)
        r["cpu_per_broadcast"] = meter.figures()
        if metrics_url:
            self.histogram_figures(before, after, per)
        if hosts:
            timings = [h.request(30, op="hub_timings")["broadcasts"] for h in hosts]
            hub_figures(r, timings, calls if len(calls) == len(walls) else [], per_host)
            for failure in same_floor_figures(r, same, self.n):
                self.fail(failure)
            # Floor frames went out through raw sends, past the node's metrics: the sent
            # counter counts benchmark events only, as ``delivered`` does.
            sent = sum(h.request(30, op="totals")["totals"].get("sent", 0) for h in hosts) - sum(sent_before)
            r["node_sent_delta"] = sent
            if sent != r["delivered"]:
                self.fail(f"node sent counter grew by {sent}, clients got {r['delivered']}")
            mems = [h.request(10, op="mem") for h in hosts]
            r["node_rss_end_kib"] = sum(m["rss_kib"] for m in mems)
            r["node_peak_rss_kib"] = sum(m["hwm_kib"] for m in mems)
            for host, m in zip(per_host, mems):
                host["peak_rss_kib"] = m["hwm_kib"]
            if len(hosts) > 1:
                r["hosts"] = per_host

    def histogram_figures(self, before: dict, after: dict, per: list[float]) -> None:
        """The node's own fan-out histogram (call -> last channel's send) around the broadcasts."""
        r, key = self.result, (lambda name: (name, "1"))  # noqa: E731
        count = after.get(key(FANOUT + "_count"), 0) - before.get(key(FANOUT + "_count"), 0)
        total = after.get(key(FANOUT + "_sum"), 0) - before.get(key(FANOUT + "_sum"), 0)
        r["fanout_observations"] = int(count)
        # One per broadcast per process that has subscribers: a ``--url`` node may be N workers
        # behind one /metrics (their histograms summed), so any whole multiple is right.
        if not count or count % self.opts.messages:
            self.fail(f"fan-out histogram got {count} observations for {self.opts.messages} broadcasts")
        if count:
            r["fanout_ms"] = round(total / count * 1e3, 3)
            # all processes' fan-out seconds per broadcast / N (one node: the same as fanout_ms / N)
            r["fanout_per_subscriber_us"] = round(total / self.opts.messages / self.n * 1e6, 3)
        if per:
            r["fanout_median_ms"] = round(median(per) * 1e3, 3)
            r["fanout_min_ms"] = round(min(per) * 1e3, 3)

    def run_floor(self) -> None:
        opts, r = self.opts, self.result
        floor = spawn("floor", "perf._floor")
        try:
            port = wait_events([floor], lambda c, e: e["ev"] == "started", 30)[0][1]["port"]
            self.connect(port, "/floor")
            got = floor.request(30, op="count")["subscribers"]
            if got != self.n:
                self.fail(f"floor server has {got} subscribers, want {self.n}")
            passes = []
            for seq in range(1, opts.messages + 1):
                passes.append(floor.request(30, op="send", seq=seq, payload_bytes=opts.payload_bytes))
                if self.pace(seq) is None:
                    break
            r.update(self.collect("floor_"))
            if r["floor_delivered"] != self.n * len(passes):
                self.fail(f"floor delivered {r['floor_delivered']} != {self.n * len(passes)}")
            seconds = mean([p["seconds"] for p in passes])
            r["frame_bytes"] = passes[0]["frame_bytes"]
            r["floor_blocked_sends"] = sum(p["blocked"] for p in passes)
            r["floor_cpu_per_subscriber_us"] = round(mean([p["cpu_s"] for p in passes]) / self.n * 1e6, 3)
            r["floor_runqueue_wait_ms"] = round(mean([p["wait_s"] for p in passes]) * 1e3, 3)
            r["floor_total_ms"] = round(seconds * 1e3, 3)
            r["floor_per_subscriber_us"] = round(seconds / self.n * 1e6, 3)
            r["floor_total_min_ms"] = round(min(p["seconds"] for p in passes) * 1e3, 3)
            r["floor_total_median_ms"] = round(median([p["seconds"] for p in passes]) * 1e3, 3)
        finally:
            floor.kill()


def settled_scrape(url: str, hosts: list[Child]) -> dict:
    """``/metrics`` once its fan-out count stopped growing (a ``--url`` node of N workers flushes
    every 0.5 s); our own node host flushes before each scrape, so one scrape is exact."""
    now = scrape(url)
    if hosts:
        return now
    deadline, steady = time.monotonic() + 5, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - steady < 1.2:
        time.sleep(0.2)  # bounded poll: the workers' flush timer has no signal to wait on
        again = scrape(url)
        if again.get((FANOUT + "_count", "1")) != now.get((FANOUT + "_count", "1")):
            now, steady = again, time.monotonic()
    return now


def merge_reports(reports: list[dict], prefix: str = "") -> dict[str, Any]:
    """The client processes' ``report`` events summed: counts, latency quantiles (per label too)."""
    hist: dict[int, int] = {}
    labels: dict[str, dict[int, int]] = {}
    for report in reports:
        merge_hist(hist, report["hist"])
        for label, h in report.get("hists", {}).items():
            merge_hist(labels.setdefault(str(label), {}), h)
    total = lambda key: sum(r[key] for r in reports)  # noqa: E731
    out = {
        f"{prefix}delivered": total("received"),
        f"{prefix}duplicates": total("dups"),
        f"{prefix}out_of_order": total("out_of_order"),
        f"{prefix}connections_lost": total("server_closed"),
    }
    out.update(quantiles(hist, f"{prefix}latency_", ("p50", "p95", "p99")))
    out[f"{prefix}latency_max_ms"] = round(max(r["max_us"] for r in reports) / 1000, 3)
    if any("unstamped" in r for r in reports):  # lazy clients: frames the kernel did not time
        out[f"{prefix}unstamped"] = sum(r.get("unstamped", 0) for r in reports)
    for label, h in labels.items():  # over Redis, label 1: subscribers on another node than the publisher
        out[f"{prefix}latency_label{label}"] = {"n": sum(h.values()), **quantiles(h, "", ("p50", "p99"))}
    if any(r.get("floor_received") for r in reports):  # same-socket floor frames (node phase)
        floor_hist: dict[int, int] = {}
        for report in reports:
            merge_hist(floor_hist, report["floor_hist"])
        out["same_floor_delivered"] = total("floor_received")
        out.update(quantiles(floor_hist, "same_floor_latency_", ("p50", "p99")))
    return out


def quantiles(hist: dict[int, int], prefix: str, names: tuple[str, ...]) -> dict[str, float | None]:
    """``{prefix}p50_ms``... from a histogram in us."""
    out: dict[str, float | None] = {}
    for name in names:
        value = percentile(hist, int(name[1:]) / 100)
        out[f"{prefix}{name}_ms"] = None if value is None else round(value / 1000, 3)
    return out


def run_layout(opts: Any, channels: int, clients: list[Child], kind: str = "single", count: int = 1) -> dict[str, Any]:
    """Node phase (then the floor phase, for one node) for one layout; returns its figures."""
    layout = Layout(opts, channels, clients, kind, count)
    group = None
    try:
        if opts.url:
            port, metrics_url, trigger = opts.port, opts.metrics_url, opts.trigger
            layout.result["label"] = f"node at {opts.url}"
        else:
            group = start_group(opts, kind, count)
            port, metrics_url = group.port, group.metrics_url
            layout.result["node_pid"] = group.started[0]["pid"]
            trigger = opts.make_trigger(port) if opts.via == "http" else None
            if trigger is not None:
                trigger.probe()
        layout.run_node(group, port, metrics_url, trigger)
        if group is not None:
            try:
                layout.result["node_stop_seconds"] = round(group.stop(), 2)
            except ChildError as exc:
                layout.fail(f"node did not stop cleanly: {exc}")
            group = None
        if kind == "single" and opts.floor and opts.clients <= FLOOR_MAX_CLIENTS:
            layout.run_floor()
    finally:
        if group is not None:
            group.kill()
    return derive(layout.result)

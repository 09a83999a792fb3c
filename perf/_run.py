"""One benchmark layout: N clients on C channels, K broadcasts, then the floor.

Phases, each bounded by a timeout and paced by events from the children
(never by sleeps):

1. node: start the node host (unless ``--url``), read its RSS, let the client
   processes connect and subscribe, read RSS again, then broadcast K messages
   one at a time, each after every client process reported ``got`` for the
   previous one; scrape the fan-out histogram and the sent counter around it.
   After each broadcast the node host also runs one same-socket floor pass (a
   bare send loop on the node's own sockets, on its hub), paced by
   ``floor_got``: interleaved, so both see the same neighbours and clients.
2. floor: the same client processes connect to the floor server, which sends
   K frames of the same size with a bare ``socket.send`` loop, paced the same.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from typing import Any

from perf._http import HttpTrigger
from perf._proc import Child, ChildError, spawn, wait_events
from perf._stats import merge_hist, percentile, scrape
from perf._wire import EVENT, make_data


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0

FANOUT = "actorcast_broadcast_fanout_seconds"
SENT = "actorcast_messages_sent_total"


def channel_names(count: int) -> list[str]:
    return [f"perf-{i}" for i in range(count)]


def start_tracers(opts: Any, node: Child | None, channels: int) -> list[subprocess.Popen]:
    """Attach py-spy and/or strace -c to the node host for the broadcast phase only."""
    if node is None:
        return []
    pid, tracers = str(node.pid), []
    if opts.spy and shutil.which("py-spy"):
        out = f"{opts.spy}.c{channels}.txt"
        tracers.append(subprocess.Popen(["py-spy", "record", "--pid", pid, "--rate", "250", "--format", "raw",
                                         "--threads", "--output", out], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
    if opts.strace and shutil.which("strace"):
        out = f"{opts.strace}.c{channels}.txt"
        tracers.append(subprocess.Popen(["strace", "-c", "-f", "-p", pid, "-o", out], stderr=subprocess.DEVNULL))
    if tracers:
        # Both tools need a moment to attach; broadcasting before that would go unseen.
        # py-spy and strace have no readiness signal, so this one wait is a bounded poll on /proc.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _traced(pid, opts.strace):
            time.sleep(0.05)
        time.sleep(0.5)
    return tracers


def _traced(pid: str, strace: str) -> bool:
    if not strace:
        return True
    with open(f"/proc/{pid}/status") as status:
        return any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in status)


def stop_tracers(tracers: list[subprocess.Popen]) -> None:
    for proc in tracers:
        proc.send_signal(signal.SIGINT)  # both write their summary on SIGINT
    for proc in tracers:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


class Layout:
    """Runs one layout against ``clients`` (already started client processes)."""

    def __init__(self, opts: Any, channels: int, clients: list[Child]) -> None:
        self.opts = opts
        self.channels = channel_names(channels)
        self.clients = clients
        self.n = opts.clients
        # client i subscribes to channel i % C; process p gets a contiguous slice
        names = [self.channels[i % channels] for i in range(self.n)]
        per = -(-self.n // len(clients))
        self.slices = [names[p * per : (p + 1) * per] for p in range(len(clients))]
        self.result: dict[str, Any] = {"channels": channels, "clients": self.n, "messages": opts.messages,
                                       "payload_bytes": opts.payload_bytes, "failures": []}

    def fail(self, why: str) -> None:
        self.result["failures"].append(why)

    # --- shared steps ------------------------------------------------------------

    def connect(self, port: int, path: str) -> float:
        started = time.monotonic()
        for child, names in zip(self.clients, self.slices):
            child.send(op="connect", host=self.opts.host, port=port, path=path, channels=names,
                       timeout=self.opts.connect_timeout, inflight=self.opts.inflight)
        events = wait_events(self.clients, lambda c, e: e["ev"] == "connect", self.opts.connect_timeout + 30)
        ready = sum(e["ready"] for _, e in events)
        if ready != self.n:
            errors = [err for _, e in events for err in e["errors"]][:5]
            raise ChildError(f"only {ready}/{self.n} clients connected and subscribed: {errors}")
        return time.monotonic() - started

    def pace(self, seq: int, ev: str = "got") -> bool:
        """Wait until every client process has message ``seq`` on all its sockets."""
        try:
            wait_events(self.clients, lambda c, e: e["ev"] == ev and e["seq"] == seq, self.opts.message_timeout)
            return True
        except ChildError as exc:
            self.fail(f"message {seq}: {exc}")
            return False

    def collect(self, prefix: str) -> dict[str, Any]:
        """Merge the client processes' reports and close their connections."""
        for child in self.clients:
            child.send(op="report")
        reports = [e for _, e in wait_events(self.clients, lambda c, e: e["ev"] == "report", 60)]
        for child in self.clients:
            child.send(op="close")
        wait_events(self.clients, lambda c, e: e["ev"] == "close", 60)
        hist: dict[int, int] = {}
        for report in reports:
            merge_hist(hist, report["hist"])
        total = lambda key: sum(r[key] for r in reports)  # noqa: E731
        out = {
            f"{prefix}delivered": total("received"),
            f"{prefix}duplicates": total("dups"),
            f"{prefix}out_of_order": total("out_of_order"),
            f"{prefix}connections_lost": total("server_closed"),
        }
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            value = percentile(hist, q)
            out[f"{prefix}latency_{name}_ms"] = None if value is None else round(value / 1000, 3)
        out[f"{prefix}latency_max_ms"] = round(max(r["max_us"] for r in reports) / 1000, 3)
        if any(r.get("floor_received") for r in reports):  # same-socket floor frames (node phase)
            floor_hist: dict[int, int] = {}
            for report in reports:
                merge_hist(floor_hist, report["floor_hist"])
            out["same_floor_delivered"] = total("floor_received")
            for name, q in (("p50", 0.5), ("p99", 0.99)):
                value = percentile(floor_hist, q)
                out[f"same_floor_latency_{name}_ms"] = None if value is None else round(value / 1000, 3)
        return out

    # --- phases ------------------------------------------------------------------

    def run_node(self, node: Child | None, port: int, metrics_url: str | None, trigger: HttpTrigger | None) -> None:
        opts, r = self.opts, self.result
        if node is not None:
            r["node_rss_before_kib"] = node.request(10, op="mem")["rss_kib"]
        r["connect_seconds"] = round(self.connect(port, f"/app/{opts.key}?protocol=7&client=perf&version=1"), 2)
        if node is not None:
            counts = node.request(30, op="counts", channels=self.channels)
            subscribed = sum(counts["subscriptions"].values())
            if counts["connections"] != self.n or subscribed != self.n:
                self.fail(f"node sees {counts['connections']} connections, {subscribed} subscriptions; want {self.n}")
            mem = node.request(10, op="mem")
            r["node_rss_connected_kib"] = mem["rss_kib"]
            r["rss_per_client_kib"] = round((mem["rss_kib"] - r["node_rss_before_kib"]) / self.n, 2)
            sent_before = node.request(30, op="totals")["totals"].get("sent", 0)
        before = scrape(metrics_url) if metrics_url else {}
        if opts.profile and node is not None:
            node.request(10, op="profile", action="start")
        tracers = start_tracers(opts, node, len(self.channels))
        calls: list[float] = []
        per: list[float] = []  # fan-out seconds of each broadcast, for the median
        same: list[dict] = []  # same-socket floor passes, one after each broadcast
        last = before.get((FANOUT + "_sum", "1"), 0)
        for seq in range(1, opts.messages + 1):
            if trigger is not None:
                t = time.monotonic()
                status, body = trigger.trigger(self.channels, EVENT, make_data(seq, t, opts.payload_bytes))
                if status != 200:
                    self.fail(f"HTTP trigger answered {status}: {body[:100]!r}")
            else:
                calls.append(node.request(10, op="broadcast", seq=seq, channels=self.channels,
                                          payload_bytes=opts.payload_bytes)["call_us"])
            if not self.pace(seq):
                break
            if metrics_url:  # after delivery, so the scrape never overlaps a fan-out
                now = scrape(metrics_url)
                per.append(now.get((FANOUT + "_sum", "1"), 0) - last)
                last = now.get((FANOUT + "_sum", "1"), 0)
            if node is not None:
                same.append(node.request(60, op="same_floor", seq=seq, channels=self.channels,
                                         payload_bytes=opts.payload_bytes))
                if not self.pace(seq, "floor_got"):
                    break
        stop_tracers(tracers)
        if opts.profile and node is not None:
            node.request(60, op="profile", action="stop", path=f"{opts.profile}.c{len(self.channels)}.prof")
        after = scrape(metrics_url) if metrics_url else {}
        r.update(self.collect(""))
        expected = self.n * opts.messages
        r["expected"] = expected
        if r["delivered"] != expected:
            self.fail(f"delivered {r['delivered']} != expected {expected}")
        if r["duplicates"] or r["out_of_order"]:
            self.fail(f"{r['duplicates']} duplicates, {r['out_of_order']} out of order")
        if calls:
            r["broadcast_call_us"] = round(sum(calls) / len(calls), 1)
        if metrics_url:
            key = lambda name: (name, "1")  # noqa: E731
            count = after.get(key(FANOUT + "_count"), 0) - before.get(key(FANOUT + "_count"), 0)
            total = after.get(key(FANOUT + "_sum"), 0) - before.get(key(FANOUT + "_sum"), 0)
            r["fanout_observations"] = int(count)
            if count != opts.messages:
                self.fail(f"fan-out histogram got {count} observations for {opts.messages} broadcasts")
            if count:
                r["fanout_ms"] = round(total / count * 1e3, 3)
                r["fanout_per_subscriber_us"] = round(total / count / self.n * 1e6, 3)
            if per:
                r["fanout_median_ms"] = round(sorted(per)[len(per) // 2] * 1e3, 3)
                r["fanout_min_ms"] = round(min(per) * 1e3, 3)
        if node is not None:
            self.node_extras(node, same)
            # Floor frames went out through raw sends, past the node's metrics: the sent
            # counter counts benchmark events only, as ``delivered`` does.
            sent = node.request(30, op="totals")["totals"].get("sent", 0) - sent_before
            r["node_sent_delta"] = sent
            if sent != r["delivered"]:
                self.fail(f"node sent counter grew by {sent}, clients got {r['delivered']}")
            mem = node.request(10, op="mem")
            r["node_rss_end_kib"], r["node_peak_rss_kib"] = mem["rss_kib"], mem["hwm_kib"]

    def node_extras(self, node: Child, same: list[dict]) -> None:
        """Same-socket floor and in-hub fan-out figures (the node host's measuring tools)."""
        r = self.result
        hub = node.request(30, op="hub_timings")["broadcasts"]
        if hub:
            subs = hub[0]["subscribers"] or 1
            r["hub_fanout_ms"] = round(_mean([h["span_s"] for h in hub]) * 1e3, 3)
            r["hub_fanout_median_ms"] = round(_median([h["span_s"] for h in hub]) * 1e3, 3)
            r["hub_fanout_per_subscriber_us"] = round(_mean([h["span_s"] for h in hub]) / subs * 1e6, 3)
            r["hub_loops_ms"] = round(_mean([h["loops_s"] for h in hub]) * 1e3, 3)
            r["hub_hop_ms"] = round(_mean([h["hop_s"] for h in hub]) * 1e3, 3)
            r["hub_hop_max_ms"] = round(max(h["hop_s"] for h in hub) * 1e3, 3)
            r["hub_cpu_per_subscriber_us"] = round(_mean([h["cpu_s"] for h in hub]) / subs * 1e6, 3)
            r["hub_runqueue_wait_ms"] = round(_mean([h["wait_s"] for h in hub]) * 1e3, 3)
        if not same:
            return
        subs = same[0]["subscribers"] or 1
        seconds = [p["seconds"] for p in same]
        r["same_socket_floor_total_ms"] = round(_mean(seconds) * 1e3, 3)
        r["same_socket_floor_total_median_ms"] = round(_median(seconds) * 1e3, 3)
        r["same_socket_floor_per_subscriber_us"] = round(_mean(seconds) / subs * 1e6, 3)
        r["same_socket_floor_cpu_per_subscriber_us"] = round(_mean([p["cpu_s"] for p in same]) / subs * 1e6, 3)
        r["same_socket_floor_runqueue_wait_ms"] = round(_mean([p["wait_s"] for p in same]) * 1e3, 3)
        r["same_socket_floor_frame_bytes"] = same[0]["frame_bytes"]
        if same[0]["frame_bytes"] != same[0]["event_frame_bytes"]:
            r["same_socket_floor_note"] = f"floor frame {same[0]['frame_bytes']} B vs event {same[0]['event_frame_bytes']} B"
        stray = sum(p["blocked"] + p["queued"] for p in same)
        if stray:
            self.fail(f"same-socket floor: {stray} sends blocked or queued (pacing failed; sent counter may be off)")
        want = self.n * len(same)
        if r.get("same_floor_delivered") != want:
            self.fail(f"same-socket floor delivered {r.get('same_floor_delivered')} != {want}")

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
                if not self.pace(seq):
                    break
            r.update(self.collect("floor_"))
            if r["floor_delivered"] != self.n * len(passes):
                self.fail(f"floor delivered {r['floor_delivered']} != {self.n * len(passes)}")
            seconds = sum(p["seconds"] for p in passes) / len(passes)
            r["frame_bytes"] = passes[0]["frame_bytes"]
            r["floor_blocked_sends"] = sum(p["blocked"] for p in passes)
            r["floor_cpu_per_subscriber_us"] = round(_mean([p["cpu_s"] for p in passes]) / self.n * 1e6, 3)
            r["floor_runqueue_wait_ms"] = round(_mean([p["wait_s"] for p in passes]) * 1e3, 3)
            r["floor_total_ms"] = round(seconds * 1e3, 3)
            r["floor_per_subscriber_us"] = round(seconds / self.n * 1e6, 3)
            passes.sort(key=lambda p: p["seconds"])
            r["floor_total_min_ms"] = round(passes[0]["seconds"] * 1e3, 3)
            r["floor_total_median_ms"] = round(passes[len(passes) // 2]["seconds"] * 1e3, 3)
        finally:
            floor.kill()

    def derive(self) -> dict[str, Any]:
        r = self.result
        if r.get("fanout_per_subscriber_us") and r.get("floor_per_subscriber_us"):
            r["ratio_to_floor"] = round(r["fanout_per_subscriber_us"] / r["floor_per_subscriber_us"], 2)
        if r.get("fanout_median_ms") and r.get("floor_total_median_ms"):
            r["ratio_to_floor_median"] = round(r["fanout_median_ms"] / r["floor_total_median_ms"], 2)
        if r.get("latency_p99_ms") is not None and r.get("floor_total_ms"):
            r["p99_over_floor_total"] = round(r["latency_p99_ms"] / r["floor_total_ms"], 2)
        same = r.get("same_socket_floor_per_subscriber_us")
        if same:
            if r.get("fanout_per_subscriber_us"):
                r["ratio_to_same_socket_floor"] = round(r["fanout_per_subscriber_us"] / same, 2)
            if r.get("hub_fanout_per_subscriber_us"):  # both timed inside the hub: like for like
                r["hub_ratio_to_same_socket_floor"] = round(r["hub_fanout_per_subscriber_us"] / same, 2)
            if r.get("hub_cpu_per_subscriber_us") and r.get("same_socket_floor_cpu_per_subscriber_us"):
                r["cpu_ratio_to_same_socket_floor"] = round(
                    r["hub_cpu_per_subscriber_us"] / r["same_socket_floor_cpu_per_subscriber_us"], 2)
            if r.get("latency_p99_ms") is not None:
                r["p99_over_same_socket_floor_total"] = round(r["latency_p99_ms"] / r["same_socket_floor_total_ms"], 2)
        return r


def run_layout(opts: Any, channels: int, clients: list[Child]) -> dict[str, Any]:
    """Node phase then floor phase for one channel layout; returns its figures."""
    layout = Layout(opts, channels, clients)
    node = None
    try:
        if opts.url:
            port, metrics_url, trigger = opts.port, opts.metrics_url, opts.trigger
        else:
            node = spawn("node-host", "perf._node_host", "--key", opts.key, "--secret", opts.secret)
            started = wait_events([node], lambda c, e: e["ev"] == "started", 60)[0][1]
            port, metrics_url = started["port"], f"http://{opts.host}:{started['metrics_port']}/metrics"
            layout.result["node_pid"] = started["pid"]
            trigger = opts.make_trigger(port) if opts.via == "http" else None
            if trigger is not None:
                trigger.probe()
        layout.run_node(node, port, metrics_url, trigger)
        if node is not None:
            node.send(op="stop")
            try:
                stop = wait_events([node], lambda c, e: e["ev"] == "stop", 30)[0][1]
                layout.result["node_stop_seconds"] = round(stop["seconds"], 2)
            except ChildError as exc:
                layout.fail(f"node did not stop cleanly: {exc}")
            node.kill(grace=5)
            node = None
        layout.run_floor()
    finally:
        if node is not None:
            node.kill()
    return layout.derive()

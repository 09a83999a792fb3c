"""The phases of ``perf/connections.py``, all in one run against one node host.

Order (each phase only when asked for, or when a later one needs its clients):

1. floor: the storm client processes connect N clients to the connect floor
   (``perf._conn_floor``); its CPU over the storm (``/proc/PID/stat``), then
   the clients close (RST) and the floor exits.
2. storm: the same processes connect N clients to the node; node CPU over the
   storm, connects/s, per-connection connect -> ``subscription_succeeded``.
3. memory: node RSS before and after the storm.
4. first: fresh clients, each gets one broadcast right after subscribing;
   triggers over one kept-alive HTTP connection.
5. query: ``GET /apps/1/channels`` over the storm's channels while a ticker
   broadcasts to the survivors and the probe process connects and calls the API.
6. mass: SIGKILL of every storm process while the same ticker and probes run;
   the node host's census (read on the hub, no actor asked) tells when the
   cleanup is complete.

Latency figures come from clients (``time.monotonic()`` is one clock for all
processes); CPU and RSS from /proc. Every wait is bounded.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from typing import Any

from perf._http import ApiClient
from perf._proc import Child, ChildError, spawn, wait_events
from perf._trace import stop_tracers
from perf._stats import merge_hist, percentile, read_proc_cpu, read_proc_mem

__all__ = ["ConnRun", "quantile"]

LIVE, PROBE, FIRST, STORM = "live", "probe", "first-", "c-"
TRIGGER_EVENT = "perf-trigger"  # not the benchmark's event: survivors count it apart


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of raw samples."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 3)


class ConnRun:
    """One run: ``run()`` returns the whole report (a dict)."""

    def __init__(self, opts: Any) -> None:
        self.opts = opts
        self.n = opts.clients
        self.r: dict[str, Any] = {"failures": []}
        k = opts.storm_channels or self.n  # 0: a channel per client
        self.storm_names = [f"{STORM}{i % k}" for i in range(self.n)]
        self.storm_channel_count = min(k, self.n)
        self.node: Child | None = None
        self.storm: list[Child] = []
        self.live: Child | None = None
        self.probe: Child | None = None
        self.ticker_seq = 0

    def fail(self, why: str) -> None:
        self.r["failures"].append(why)

    # --- shared steps ------------------------------------------------------------

    def connect_storm(self, port: int, path: str) -> dict[str, Any]:
        """N clients over the storm processes; timings merged from all of them."""
        per = -(-self.n // len(self.storm))
        for p, child in enumerate(self.storm):
            child.send(op="connect", host="127.0.0.1", port=port, path=path, timeout=self.opts.connect_timeout,
                       channels=self.storm_names[p * per : (p + 1) * per], inflight=self.opts.inflight)
        events = wait_events(self.storm, lambda c, e: e["ev"] == "connect", self.opts.connect_timeout + 30)
        for child in self.storm:
            child.send(op="timings")
        timings = [e for _, e in wait_events(self.storm, lambda c, e: e["ev"] == "timings", 30)]
        ready = sum(e["ready"] for _, e in events)
        if ready != self.n:
            raise ChildError(f"only {ready}/{self.n} clients connected and subscribed: "
                             f"{[x for _, e in events for x in e['errors']][:5]}")
        hist: dict[int, int] = {}
        for t in timings:
            merge_hist(hist, t["hist"])
        span = max(t["last_ready"] for t in timings) - min(t["first_start"] for t in timings)
        return {"seconds": round(span, 3), "connects_per_s": round(self.n / span, 1) if span > 0 else None,
                "connect_p50_ms": _ms(percentile(hist, 0.5)), "connect_p99_ms": _ms(percentile(hist, 0.99)),
                "connect_max_ms": _ms(max(t["max_us"] for t in timings)), "retried": sum(t["retried"] for t in timings)}

    def close_storm(self) -> None:
        for child in self.storm:
            child.send(op="close")
        wait_events(self.storm, lambda c, e: e["ev"] == "close", 60)

    def spy(self, phase: str) -> list[subprocess.Popen]:
        """py-spy on the node host for one phase (``--spy PREFIX``): PREFIX.PHASE.txt."""
        if not self.opts.spy or not shutil.which("py-spy"):
            return []
        proc = subprocess.Popen(["py-spy", "record", "--pid", str(self.node.pid), "--rate", "250", "--format", "raw",
                                 "--threads", "--output", f"{self.opts.spy}.{phase}.txt"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy has no readiness signal; samples before it attached are simply missed
        return [proc]

    def census(self) -> dict[str, Any]:
        return self.node.request(60, op="census")

    def ticker(self, action: str) -> dict[str, Any]:
        out = self.node.request(10, op="ticker", action=action, channel=LIVE, interval=self.opts.tick_interval,
                                payload_bytes=100, seq=self.ticker_seq)
        if "late_max_ms" in out:  # a ticker exists (else the answer is just seq 0)
            self.ticker_seq = out["seq"]
        return out

    def api(self) -> ApiClient:
        return ApiClient("127.0.0.1", self.port, "1", self.opts.key, self.opts.secret, timeout=self.opts.http_timeout)

    def drain_got(self) -> None:
        """Survivors report every tick (``got``): read them off the pipe so it never fills."""
        if self.live is not None:
            self.live._pump()
            self.live.events = [e for e in self.live.events if e.get("ev") != "got"]

    def start_window(self) -> None:
        """Ticker on, survivors' stats reset, probes running."""
        if self.ticker("status").get("late_max_ms") is None:
            self.ticker("start")
        self.drain_got()
        self.live.request(10, op="reset")
        self.probe.send(op="probe_start", host="127.0.0.1", port=self.port, path=self.path, channel=PROBE,
                        ws_interval=self.opts.probe_interval, api_interval=self.opts.probe_interval, timeout=10.0,
                        api_target={"app_id": "1", "key": self.opts.key, "secret": self.opts.secret,
                                    "what": f"channels/{PROBE}"})
        wait_events([self.probe], lambda c, e: e["ev"] == "probe_start", 10)

    def end_window(self) -> dict[str, Any]:
        """Stop the probes, wait until the survivors have the last tick, merge what both saw."""
        samples = self.probe.request(30, op="probe_stop")["samples"]
        status = self.ticker("status")
        last = status["seq"]
        try:
            wait_events([self.live], lambda c, e: e["ev"] == "got" and e["seq"] >= last, 15)
        except ChildError as exc:
            self.fail(f"survivors did not get tick {last}: {exc}")
        self.drain_got()
        live = self.live.request(30, op="report")
        out: dict[str, Any] = {"samples": samples}
        for kind in ("ws", "api"):
            ms = [s[2] for s in samples if s[0] == kind]
            bad = [s for s in samples if s[0] == kind and s[3] != "ok"]
            out[f"probe_{kind}_count"], out[f"probe_{kind}_failed"] = len(ms), len(bad)
            out[f"probe_{kind}_worst_ms"] = max(ms) if ms else None
            out[f"probe_{kind}_p50_ms"] = quantile(ms, 0.5)
            if bad:
                out[f"probe_{kind}_failures"] = sorted({s[3] for s in bad})[:5]
        # The ticker's own worst lateness (GIL, scheduling): a tick sent late is timed from when it went.
        out["ticker_late_max_ms"] = status.get("late_max_ms")
        out["survivor_worst_ms"] = _ms(live["max_us"])
        out["survivor_p99_ms"] = _ms(percentile({int(k): v for k, v in live["hist"].items()}, 0.99))
        out["survivor_received"] = live["received"]
        out["survivor_gaps"] = live["out_of_order"] + live["dups"]
        out["survivor_lost_connections"] = live["server_closed"]
        if live["server_closed"] or out["survivor_gaps"] or not live["received"]:
            self.fail(f"survivors: {live['received']} received, {out['survivor_gaps']} gaps/duplicates, "
                      f"{live['server_closed']} connections lost")
        return out

    # --- phases --------------------------------------------------------------------

    def phase_floor(self) -> None:
        floor = spawn("connect-floor", "perf._conn_floor")
        try:
            port = wait_events([floor], lambda c, e: e["ev"] == "started", 30)[0][1]["port"]
            cpu0 = read_proc_cpu(floor.pid)
            figures = self.connect_storm(port, "/floor")
            cpu1 = read_proc_cpu(floor.pid)
            count = floor.request(30, op="count")
            if count["subscribers"] != self.n or count["refused"]:
                self.fail(f"floor: {count['subscribers']} subscribed, {count['refused']} refused; want {self.n}")
            self.close_storm()
        finally:
            floor.kill()
        self.r["floor"] = {**figures, **self._cpu(cpu0, cpu1)}

    def _cpu(self, before: dict, after: dict) -> dict[str, Any]:
        stat, sched = after["stat_s"] - before["stat_s"], after["sched_s"] - before["sched_s"]
        return {"cpu_s": round(stat, 3), "cpu_sched_s": round(sched, 3),
                "cpu_per_connection_ms": round(stat / self.n * 1e3, 4),
                "cpu_sched_per_connection_ms": round(sched / self.n * 1e3, 4)}

    def phase_storm(self) -> None:
        mem0 = read_proc_mem(self.node.pid)
        tracers = self.spy("storm")
        cpu0 = read_proc_cpu(self.node.pid)
        figures = self.connect_storm(self.port, self.path)
        cpu1 = read_proc_cpu(self.node.pid)
        stop_tracers(tracers)
        census = self.census()
        mem1 = read_proc_mem(self.node.pid)
        if census["connections"] != self.n or census["channels"] != self.storm_channel_count:
            self.fail(f"after the storm the node has {census['connections']} connections and {census['channels']} "
                      f"channels; want {self.n} and {self.storm_channel_count}")
        storm = {"channels": self.storm_channel_count, **figures, **self._cpu(cpu0, cpu1)}
        floor = self.r.get("floor")
        if floor and floor["cpu_sched_per_connection_ms"]:
            storm["floor_cpu_per_connection_ms"] = floor["cpu_per_connection_ms"]
            storm["connect_ratio_to_floor_sched"] = round(
                storm["cpu_sched_per_connection_ms"] / floor["cpu_sched_per_connection_ms"], 2)
            # /proc/PID/stat counts 10 ms ticks: below 0.2 s of floor CPU (small N) the
            # threads' schedstat (ns) is the honest reading, and the source says so.
            if floor["cpu_s"] >= 0.2:
                ratio, source = storm["cpu_per_connection_ms"] / floor["cpu_per_connection_ms"], "stat"
            else:
                ratio, source = storm["connect_ratio_to_floor_sched"], "schedstat"
            storm["connect_ratio_to_floor"], storm["connect_ratio_source"] = round(ratio, 2), source
        self.r["storm"] = storm
        self.r["memory"] = {"rss_before_kib": mem0["rss_kib"], "rss_after_kib": mem1["rss_kib"],
                            "peak_rss_kib": mem1["hwm_kib"],
                            "rss_per_connection_kib": round((mem1["rss_kib"] - mem0["rss_kib"]) / self.n, 2)}

    def connect_survivors(self) -> None:
        self.live.send(op="connect", host="127.0.0.1", port=self.port, path=self.path, channels=[LIVE] * self.opts.survivors,
                       timeout=30, inflight=64)
        event = wait_events([self.live], lambda c, e: e["ev"] == "connect", 60)[0][1]
        if event["ready"] != self.opts.survivors:
            raise ChildError(f"only {event['ready']}/{self.opts.survivors} survivors connected: {event['errors'][:3]}")

    def phase_first(self) -> None:
        opts = self.opts
        self.probe.send(op="first", host="127.0.0.1", port=self.port, path=self.path, count=opts.first_clients,
                        prefix=FIRST, timeout=10.0)
        latencies, connects, errors = [], [], []
        for k in range(1, opts.first_clients + 1):
            step = lambda c, e: e.get("k") == k and e["ev"] in ("subscribed", "first_got")  # noqa: E731
            event = wait_events([self.probe], step, 20)[0][1]
            if event["ev"] == "subscribed":
                self.node.request(10, op="broadcast", seq=k, channels=[event["channel"]], payload_bytes=100)
                event = wait_events([self.probe], lambda c, e: e["ev"] == "first_got" and e["k"] == k, 20)[0][1]
            if event["status"] == "ok":
                latencies.append(event["us"] / 1000)
                connects.append(event["connect_ms"])
            else:
                errors.append(event["status"])
        wait_events([self.probe], lambda c, e: e["ev"] == "first_done", 20)
        if errors:
            self.fail(f"first message: {len(errors)} of {opts.first_clients} clients failed: {errors[:3]}")
        api = self.api()
        try:
            api.trigger(opts.trigger_channel, TRIGGER_EVENT, "{}")  # opens the kept-alive connection (not timed)
            triggers = []
            for _ in range(opts.triggers):
                # Paced: each trigger's fan-out is done before the next goes out, so this
                # is the latency of one call, not the queue of a back-to-back burst.
                time.sleep(opts.trigger_interval)
                status, body, seconds = api.trigger(opts.trigger_channel, TRIGGER_EVENT, '{"perf":1}')
                if status != 200:
                    self.fail(f"trigger answered {status}: {body[:100]!r}")
                triggers.append(seconds * 1e3)
        finally:
            api.close()
        self.r["first_message"] = {
            "clients": len(latencies), "broadcast_p50_ms": _round(quantile(latencies, 0.5)),
            "broadcast_p99_ms": _round(quantile(latencies, 0.99)), "broadcast_max_ms": _round(max(latencies, default=None)),
            "connect_to_message_p50_ms": quantile(connects, 0.5),
            "triggers": len(triggers), "trigger_p50_ms": _round(quantile(triggers, 0.5)),
            "trigger_p99_ms": _round(quantile(triggers, 0.99)), "trigger_max_ms": _round(max(triggers, default=None)),
        }

    def phase_query(self) -> None:
        self.start_window()
        time.sleep(self.opts.window_margin)  # a measuring window before the query, not a synchronisation
        api = self.api()
        times, listed = [], None
        tracers = self.spy("query")
        try:
            for _ in range(self.opts.query_repeat):
                status, body, seconds = api.call("GET", "channels")
                times.append(round(seconds * 1e3, 3))
                if status != 200:
                    self.fail(f"GET /channels answered {status}: {body[:100]!r}")
                    continue
                names = json.loads(body)["channels"]
                listed = sum(name.startswith(STORM) for name in names)
                if listed != self.storm_channel_count or LIVE not in names:
                    self.fail(f"GET /channels listed {listed} storm channels (want {self.storm_channel_count}), "
                              f"live channel {'present' if LIVE in names else 'missing'}")
        finally:
            api.close()
            stop_tracers(tracers)
        time.sleep(self.opts.window_margin)
        window = self.end_window()
        del window["samples"]
        self.r["query"] = {"channels": self.storm_channel_count, "listed": listed, "query_ms": times,
                           "query_first_ms": times[0] if times else None, "query_max_ms": max(times, default=None),
                           **window}

    def phase_mass(self) -> None:
        opts = self.opts
        self.start_window()
        time.sleep(opts.window_margin * 2)  # probes and ticks before the kill: the baseline
        tracers = self.spy("mass")
        before = self.census()
        t_kill = time.monotonic()
        for child in self.storm:
            child.proc.send_signal(signal.SIGKILL)
        for child in self.storm:
            child.proc.wait(30)
            child.kill()
        self.storm = []
        trail, complete = [], None
        deadline = t_kill + opts.cleanup_timeout
        while time.monotonic() < deadline:
            c = self.census()
            self.drain_got()
            trail.append([round(c["t"] - t_kill, 3), c["connections"], c["channels"], c["sockets"]])
            # Probes come and go (each lives a few ms): allow two of them, and the probe channel.
            if c["channels"] <= 2 and c["connections"] <= opts.survivors + 2:
                complete = c["t"] - t_kill
                break
            time.sleep(opts.census_interval)
        if complete is None:
            self.fail(f"cleanup not complete {opts.cleanup_timeout:.0f}s after the kill: {trail[-1]}")
        time.sleep(opts.window_margin * 2)  # keep probing after the cleanup: is the node prompt again?
        stop_tracers(tracers)
        window = self.end_window()
        final = self.census_until(opts.survivors, 1, 30)
        samples = window.pop("samples")
        late = [s for s in samples if s[1] + s[2] / 1e3 > t_kill and (s[2] > opts.prompt_ms or s[3] != "ok")]
        self.r["mass_disconnect"] = {
            "killed": self.n, "killed_channels": self.storm_channel_count, "survivors": opts.survivors,
            "node_before": before, "cleanup_s": None if complete is None else round(complete, 3),
            "final_census": final,
            "prompt_again_s": round(max((s[1] + s[2] / 1e3 for s in late), default=t_kill) - t_kill, 3),
            "baseline_ws_worst_ms": max((s[2] for s in samples if s[0] == "ws" and s[1] < t_kill), default=None),
            "baseline_api_worst_ms": max((s[2] for s in samples if s[0] == "api" and s[1] < t_kill), default=None),
            **window, "census_trail": trail[:: max(1, len(trail) // 40)],
        }

    def census_until(self, connections: int, channels: int, timeout: float) -> dict[str, Any]:
        """Poll (probes stopped) until the node holds exactly these counts; a failure if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.census()
            if c["connections"] == connections and c["channels"] == channels or time.monotonic() > deadline:
                break
            time.sleep(self.opts.census_interval)
        if c["connections"] != connections or c["channels"] != channels:
            self.fail(f"node left with {c['connections']} connections, {c['channels']} channels; "
                      f"want {connections}, {channels}")
        return {k: c[k] for k in ("connections", "channels", "sockets", "names") if k in c}

    # --- the run -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        opts, phases = self.opts, self.opts.phases
        self.node = spawn("node-host", "perf._node_host", "--key", opts.key, "--secret", opts.secret)
        self.port = wait_events([self.node], lambda c, e: e["ev"] == "started", 60)[0][1]["port"]
        self.path = f"/app/{opts.key}?protocol=7&client=perf&version=1"
        self.r["node_pid"] = self.node.pid
        need_storm = bool(phases & {"storm", "memory", "query", "mass"})
        if need_storm:
            self.storm = [spawn(f"storm-{i}", "perf._conn_clients") for i in range(opts.client_procs)]
        if phases & {"first", "query", "mass"}:
            self.live = spawn("survivors", "perf._clients")
            self.probe = spawn("probe", "perf._conn_probe")
        if "storm" in phases:
            self.phase_floor()
        if need_storm:
            self.phase_storm()
        if self.live is not None:
            self.connect_survivors()
        if "first" in phases:
            self.phase_first()
        if "query" in phases:
            self.phase_query()
        if "mass" in phases:
            self.phase_mass()
        if self.ticker_seq:
            self.ticker("stop")
        for key in ("storm", "memory"):
            if key not in phases:
                self.r.pop(key, None)
        self.node.send(op="stop")
        wait_events([self.node], lambda c, e: e["ev"] == "stop", 30)
        return self.r


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

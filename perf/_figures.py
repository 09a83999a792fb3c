"""Figures of one layout from what the node hosts and clients measured (pure arithmetic).

* :func:`wall_figures`: per broadcast, the clients' first and last receipt
  (``got`` carries each client process's first and last latency of a seq):
  the fan-out wall time is the broadcast call -> the last client's receipt.
* :func:`hub_figures`: each host's ``hub_timings`` (first channel loop start,
  last send, hub CPU), matched to the broadcasts by order; for a group, the
  call -> each host's first loop and last send, against the call's time.
* :func:`same_floor_figures`, :func:`derive`: the floors and the ratios.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["CpuMeter", "derive", "hub_figures", "merge_same_floor", "same_floor_figures", "wall_figures"]


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def wall_figures(r: dict[str, Any], walls: list[float], firsts: list[float]) -> None:
    """``walls``/``firsts``: per broadcast, the last / first receipt's latency (us)."""
    if not walls:
        return
    r["fanout_wall_ms"] = round(mean(walls) / 1e3, 3)
    r["fanout_wall_median_ms"] = round(median(walls) / 1e3, 3)
    r["fanout_wall_min_ms"] = round(min(walls) / 1e3, 3)
    r["fanout_wall_max_ms"] = round(max(walls) / 1e3, 3)
    r["first_receipt_median_ms"] = round(median(firsts) / 1e3, 3)
    r["first_receipt_min_ms"] = round(min(firsts) / 1e3, 3)


def hub_figures(r: dict[str, Any], timings: list[list[dict]], calls: list[float], hosts: list[dict]) -> None:
    """``timings``: each host's hub_timings; ``calls``: each broadcast's call time; ``hosts``: per-host dicts."""
    if len(timings) == 1 and timings[0]:  # one node: as before, all from its own hub
        hub = timings[0]
        subs = hub[0]["subscribers"] or 1
        spans = [h["span_s"] for h in hub]
        r["hub_fanout_ms"], r["hub_fanout_median_ms"] = _ms(mean(spans)), _ms(median(spans))
        r["hub_fanout_per_subscriber_us"] = round(mean(spans) / subs * 1e6, 3)
        r["hub_hop_ms"] = _ms(mean([h["hop_s"] for h in hub]))
        r["hub_hop_max_ms"] = _ms(max(h["hop_s"] for h in hub))
        r["hub_cpu_per_subscriber_us"] = round(mean([h["cpu_s"] for h in hub]) / subs * 1e6, 3)
        r["hub_runqueue_wait_ms"] = _ms(mean([h["wait_s"] for h in hub]))
    last_sends: list[list[float]] = [[] for _ in calls]
    for host, hub in zip(hosts, timings):
        if not hub:
            continue
        host["hub_broadcasts"] = len(hub)
        host["span_median_ms"] = _ms(median([h["span_s"] for h in hub]))
        host["cpu_per_subscriber_us"] = round(mean([h["cpu_s"] for h in hub]) / (hub[0]["subscribers"] or 1) * 1e6, 3)
        host["runqueue_wait_ms"] = _ms(mean([h["wait_s"] for h in hub]))
        if len(hub) != len(calls) or not calls:
            host["note"] = f"{len(hub)} fan-outs timed for {len(calls)} broadcasts: not matched to the calls"
            continue
        host["first_loop_median_ms"] = _ms(median([h["first_start"] - t for h, t in zip(hub, calls)]))
        host["last_send_median_ms"] = _ms(median([h["last_done"] - t for h, t in zip(hub, calls)]))
        for k, (h, t) in enumerate(zip(hub, calls)):
            last_sends[k].append(h["last_done"] - t)
    per = [max(x) for x in last_sends if x]
    if per and len(per) == len(calls):
        r["last_send_ms"], r["last_send_median_ms"] = _ms(mean(per)), _ms(median(per))


class CpuMeter:
    """CPU of the node's processes, the clients and the whole machine over the broadcasts only.

    Read (``/proc``, outside every timed span) before each broadcast call and
    after its last receipt: per broadcast, how much CPU each node process and
    the client processes used, and what the rest of the machine used meanwhile
    (other work on the shared cores shows up there).
    """

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = {role: pids for role, pids in roles.items() if pids}
        self.used = {role: [0.0] * len(pids) for role, pids in self.roles.items()}
        self.machine = self.wall = 0.0
        self.count = 0
        self._start: tuple | None = None

    def _read(self) -> tuple:
        from perf._stats import machine_busy_s, read_proc_cpu

        per = {role: [read_proc_cpu(pid)["sched_s"] for pid in pids] for role, pids in self.roles.items()}
        return time.monotonic(), machine_busy_s(), per

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        if self._start is None:
            return
        (t0, m0, p0), (t1, m1, p1) = self._start, self._read()
        self._start = None
        self.wall += t1 - t0
        self.machine += m1 - m0
        for role in self.used:
            self.used[role] = [u + b - a for u, a, b in zip(self.used[role], p0[role], p1[role])]
        self.count += 1

    def figures(self) -> dict[str, Any]:
        """Per broadcast (ms): each role's processes, ours together, the machine; cores busy meanwhile."""
        if not self.count:
            return {}
        ours = sum(sum(v) for v in self.used.values())
        out: dict[str, Any] = {f"{role}_ms": [_ms(u / self.count) for u in used] for role, used in self.used.items()}
        out.update(ours_ms=_ms(ours / self.count), machine_ms=_ms(self.machine / self.count),
                   others_ms=_ms(max(0.0, self.machine - ours) / self.count), wall_ms=_ms(self.wall / self.count),
                   cores_busy=round(self.machine / self.wall, 2) if self.wall else None)
        return out


def merge_same_floor(passes: list[dict]) -> dict:
    """One same-socket floor pass run on every host at once: the slowest loop is the pass."""
    first = passes[0]
    return {"seconds": max(p["seconds"] for p in passes), "subscribers": sum(p["subscribers"] for p in passes),
            "blocked": sum(p["blocked"] for p in passes), "queued": sum(p["queued"] for p in passes),
            "cpu_s": sum(p["cpu_s"] for p in passes), "wait_s": max(p["wait_s"] for p in passes),
            "frame_bytes": max(p["frame_bytes"] for p in passes), "event_frame_bytes": first["event_frame_bytes"]}


def same_floor_figures(r: dict[str, Any], same: list[dict], n: int) -> list[str]:
    """The same-socket floor's figures; returns failures."""
    if not same:
        return []
    subs = same[0]["subscribers"] or 1
    seconds = [p["seconds"] for p in same]
    r["same_socket_floor_total_ms"] = _ms(mean(seconds))
    r["same_socket_floor_total_median_ms"] = _ms(median(seconds))
    r["same_socket_floor_per_subscriber_us"] = round(mean(seconds) / subs * 1e6, 3)
    r["same_socket_floor_cpu_per_subscriber_us"] = round(mean([p["cpu_s"] for p in same]) / subs * 1e6, 3)
    r["same_socket_floor_runqueue_wait_ms"] = _ms(mean([p["wait_s"] for p in same]))
    r["same_socket_floor_frame_bytes"] = same[0]["frame_bytes"]
    if same[0]["frame_bytes"] != same[0]["event_frame_bytes"]:
        r["same_socket_floor_note"] = f"floor frame {same[0]['frame_bytes']} B vs event {same[0]['event_frame_bytes']} B"
    failures = []
    stray = sum(p["blocked"] + p["queued"] for p in same)
    if stray:
        failures.append(f"same-socket floor: {stray} sends blocked or queued (pacing failed; sent counter may be off)")
    if r.get("same_floor_delivered") != n * len(same):
        failures.append(f"same-socket floor delivered {r.get('same_floor_delivered')} != {n * len(same)}")
    return failures


def derive(r: dict[str, Any]) -> dict[str, Any]:
    """Ratios between the node's figures and the floors'."""
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
        if r.get("fanout_wall_ms"):
            r["wall_over_same_socket_floor_total"] = round(r["fanout_wall_ms"] / r["same_socket_floor_total_ms"], 2)
    return r

"""Small numeric and HTTP helpers: latency histograms, Prometheus scraping, RSS.

Latencies travel from client processes to the driver as sparse histograms
(bucket -> count) instead of raw samples: :func:`quantize_us` keeps two
significant digits (about 1% resolution), which is finer than the run-to-run
noise of a shared VM and keeps a 19,000 x 20 run's report a few KiB.
"""

from __future__ import annotations

import math
import os
import re
import urllib.error
import urllib.request

__all__ = ["machine_busy_s", "merge_hist", "percentile", "quantize_us", "read_proc_cpu", "read_proc_mem",
           "read_schedstat", "read_thread_cpu", "scrape"]


def quantize_us(us: float) -> int:
    """Round a latency in microseconds to two significant digits (>= 100 us)."""
    if us < 100:
        return int(us)
    scale = 10 ** (int(math.log10(us)) - 1)
    return int(round(us / scale)) * scale


def merge_hist(into: dict[int, int], hist: dict) -> None:
    """Add a histogram (keys may be JSON strings) into ``into``."""
    for key, count in hist.items():
        key = int(key)
        into[key] = into.get(key, 0) + count


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, nearest-rank, in its units."""
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for key in sorted(hist):
        seen += hist[key]
        if seen >= rank:
            return float(key)
    return float(max(hist))


_SAMPLE = re.compile(r'^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+|NaN)$')


def scrape(url: str, timeout: float = 10.0) -> dict[tuple[str, str], float]:
    """``{(metric name, app_id): value}`` from a Prometheus text endpoint."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            if "le" not in labels:
                out[match.group(1), labels.get("app_id", "")] = float(match.group(3))
    return out


def read_proc_mem(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB, from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":")
                out[name] = int(value.split()[0])
    return {"rss_kib": out.get("VmRSS", 0), "hwm_kib": out.get("VmHWM", 0)}


def read_proc_cpu(pid: int) -> dict[str, float]:
    """CPU seconds a process used so far, all its threads: two readings.

    ``stat_s``: utime + stime from ``/proc/PID/stat`` (clock ticks, 10 ms
    grain; includes threads that already exited). ``sched_s``: the sum of the
    live threads' ``schedstat`` run time (ns grain). Subtract two readings.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    ticks = os.sysconf("SC_CLK_TCK")
    sched = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        sched += read_schedstat(f"/proc/{pid}/task/{task}/schedstat")[0]
    # fields[0] is the state (field 3): utime and stime are fields 14 and 15
    return {"stat_s": (int(fields[11]) + int(fields[12])) / ticks, "sched_s": sched / 1e9}


def read_thread_cpu() -> dict[str, float]:
    """CPU seconds each live Python thread of this process ran so far (``schedstat``), by thread name."""
    import threading

    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            ran = read_schedstat(f"/proc/self/task/{thread.native_id}/schedstat")[0]
        except (OSError, TypeError):  # gone, or not started
            continue
        out[thread.name] = out.get(thread.name, 0.0) + ran / 1e9
    return out


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy so far, all cores (``/proc/stat``; 10 ms grain)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest time is inside user


def http_status(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """POST ``body`` to ``url``; (status, response body), HTTP errors included."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def read_schedstat(path: str = "/proc/thread-self/schedstat") -> tuple[int, int]:
    """(ns on CPU, ns runnable but waiting for a CPU) of a thread or process, from /proc.

    The second figure is what CPU contention costs: time the task was ready to
    send but another task (clients, neighbours) had the core. Zeros if unreadable.
    """
    try:
        with open(path) as f:
            run, wait, _ = f.read().split()
        return int(run), int(wait)
    except (OSError, ValueError):
        return 0, 0

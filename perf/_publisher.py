"""Publishes at a fixed rate, on a node's hub (the node host's ``rate`` command).

The cluster rate benchmark needs publishes that arrive at a steady rate
whatever the node is doing, like HTTP triggers from many publishers. A
greenlet on the node's hub publishes to its channels in turn, the k-th
publish due at ``start + k / rate``; when it wakes late it publishes every
publish already due, at once (the rate is kept; lateness is measured, not
hidden). Each publish goes the way an HTTP trigger's does once parsed
(``Node._publish`` on the hub, the event encoded once): onto the bus, and
delivered on every node, this one included, as the bus brings it back. There is no thread hop, so no GIL hand-over is measured: the
latency is the node's and the bus's, not this tool's.

Each channel has its own sequence (one publisher per channel in the
benchmark), kept across steps in ``seqs``; the data carries it and the
``time.monotonic()`` of the publish call, which is the latency's start.
"""

from __future__ import annotations

import os
import time
from typing import Any

from perf._stats import percentile, quantize_us, read_proc_cpu, read_thread_cpu
from perf._wire import EVENT, make_data

__all__ = ["run_rate", "summarize"]

#: Timer wake-ups shorter than this are not worth a sleep: publish now.
_MIN_SLEEP = 0.0002


def run_rate(node: Any, app_id: str, cmd: dict, seqs: dict[str, int]) -> dict:
    """On the hub: ``cmd['rate']`` publishes/s for ``cmd['seconds']`` over ``cmd['channels']``; stats."""
    import gevent

    from transport import protocol

    channels, rate, payload = cmd["channels"], float(cmd["rate"]), cmd["payload_bytes"]
    total = max(1, int(rate * cmd["seconds"]))
    late: dict[int, int] = {}
    acks: dict[int, int] = {}
    failed, linked = [0], [0]
    cpu0 = read_proc_cpu(os.getpid())
    threads0 = read_thread_cpu()

    def acked(result: Any, t: float) -> None:
        if result.successful():
            q = quantize_us((time.monotonic() - t) * 1e6)
            acks[q] = acks.get(q, 0) + 1
        else:
            failed[0] += 1

    start = time.monotonic()
    sent = 0
    while sent < total:
        now = time.monotonic()
        due = start + sent / rate
        if due - now > _MIN_SLEEP:
            gevent.sleep(due - now)
            continue
        while sent < total and start + sent / rate <= now + _MIN_SLEEP:
            channel = channels[sent % len(channels)]
            seq = seqs[channel] = seqs.get(channel, 0) + 1
            t = time.monotonic()
            q = quantize_us(max(0.0, t - (start + sent / rate)) * 1e6)
            late[q] = late.get(q, 0) + 1
            event = protocol.event_json(channel, EVENT, make_data(seq, t, payload))
            result = node._publish(app_id, ((channel, event),), None)  # noqa: SLF001 - the HTTP API's door
            if result is not None:
                result.rawlink(lambda r, t=t: acked(r, t))
                linked[0] += 1
            sent += 1
        gevent.sleep(0)  # let the actors deliver what was published
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 5  # the last few acknowledgements, bounded
    while sum(acks.values()) + failed[0] < linked[0] and time.monotonic() < deadline:
        gevent.sleep(0.005)
    span = elapsed + 1 / rate  # the last publish is due at (total - 1) / rate: one interval is still its own
    finals = {ch: seqs[ch] for ch in channels if ch in seqs}
    out = summarize(sent, span, finals, failed[0], cpu0, read_proc_cpu(os.getpid()), late, acks)
    threads1 = read_thread_cpu()
    out["thread_cpu_s"] = {name: ran - threads0.get(name, 0.0) for name, ran in threads1.items()}
    return out


def summarize(sent: int, span: float, finals: dict[str, int], failed: int, cpu0: dict, cpu1: dict,
              late: dict[int, int], acks: dict[int, int]) -> dict:
    """A step's ``rate`` event: what was published, how late, how fast the bus took it, the CPU spent."""
    out = {"published": sent, "seconds": span, "achieved_per_s": sent / span, "finals": finals, "bus_failed": failed,
           "cpu_s": cpu1["stat_s"] - cpu0["stat_s"], "sched_cpu_s": cpu1["sched_s"] - cpu0["sched_s"]}
    for name, hist in (("late", late), ("bus_ack", acks)):
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            value = percentile(hist, q)
            out[f"{name}_{label}_ms"] = None if value is None else round(value / 1000, 3)
        out[f"{name}_max_ms"] = round(max(hist) / 1000, 3) if hist else None
    return out

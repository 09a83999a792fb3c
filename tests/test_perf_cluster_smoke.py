"""The broadcast benchmark's cluster modes still run end to end (tiny runs; no timing asserted).

Speed is measured by ``perf/broadcast.py`` by hand (perf/README.md): these
only keep ``--workers N``, ``--adapter redis --nodes N``, the rate run and
``--lazy-clients`` from rotting as the node changes, and check the report has the fields the
README's tables are built from. The Redis runs start a private
``redis-server`` on a free loopback port (skipped where none is installed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def _bench(*args: str, timeout: float = 150) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "perf.broadcast", *args, "--json", "--timeout", str(int(timeout - 30))],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ok"] is True, report["failures"]
    return report


def test_two_workers_on_one_port_deliver_every_message_and_are_compared_with_one():
    report = _bench("--clients", "60", "--messages", "3", "--workers", "1,2", "--no-floor")
    single, workers = report["layouts"]
    assert (single["label"], workers["label"]) == ("1 node", "2 workers")
    for layout in (single, workers):
        assert layout["delivered"] == layout["expected"] == 60 * 3
        assert layout["node_sent_delta"] == layout["delivered"]
        assert layout["duplicates"] == layout["out_of_order"] == 0
        assert layout["fanout_wall_median_ms"] > 0 and layout["latency_p99_ms"] is not None
    split = [host["connections"] for host in workers["hosts"]]
    assert sum(split) == 60 and min(split) > 0  # the kernel spread the clients over both workers
    (comparison,) = report["comparisons"]
    assert comparison["group"] == "2 workers" and comparison["fanout_wall_median_ratio"] > 0


@needs_redis
def test_a_broadcast_crosses_redis_to_the_other_node_and_the_hop_is_reported():
    report = _bench("--clients", "20", "--messages", "3", "--adapter", "redis", "--nodes", "1,2", "--no-floor")
    single, pair = report["layouts"]
    assert pair["label"] == "2 nodes over Redis"
    assert [host["connections"] for host in pair["hosts"]] == [0, 20]  # every delivery crosses the bus
    assert pair["delivered"] == pair["expected"] == single["delivered"] == 20 * 3
    assert pair["latency_label1"]["n"] == 20 * 3
    assert report["comparisons"][0]["first_receipt_median_diff_ms"] is not None


@needs_redis
def test_three_nodes_over_redis_keep_a_fixed_publish_rate_and_deliver_everything():
    # --knee-ms: no timing is asserted, so a slow step on a busy machine must not end the run early.
    report = _bench("--clients", "54", "--channels", "6", "--adapter", "redis", "--nodes", "3", "--rates", "50,100",
                    "--step-seconds", "1", "--knee-ms", "60000", "--rate-floor")
    assert report["nodes"] == 3 and report["clients_per_node"] == [18, 18, 18]  # 9 per channel, 3 on each node
    floor = report["floor"]  # the same steps on the floor nodes (perf/_rate_floor.py), same clients
    assert floor["node"] == "floor" and floor["clients_per_node"] == [18, 18, 18]
    assert [step["rate"] for step in report["steps"]] == [step["rate"] for step in floor["steps"]] == [50, 100]
    for step in [*report["steps"], *floor["steps"]]:
        assert step["delivered"] == step["expected"] > 0
        assert step["duplicates"] == step["out_of_order"] == 0
        assert step["latency_label0"]["n"] + step["latency_label1"]["n"] == step["delivered"]
        assert len(step["cpu_cores"]["nodes"]) == 3


def test_lazy_clients_time_frames_by_the_kernel_and_still_get_every_message():
    report = _bench("--clients", "40", "--messages", "3", "--workers", "2", "--no-floor", "--lazy-clients", "50")
    (layout,) = report["layouts"]
    assert layout["delivered"] == layout["expected"] == 40 * 3
    assert layout["unstamped"] == 0  # every frame had its kernel arrival time
    # a kernel stamp is taken when the frame reaches the socket: after the call, before the 50 ms nap ends
    assert 0 < layout["first_receipt_min_ms"] <= layout["fanout_wall_max_ms"] < 50

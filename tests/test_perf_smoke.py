"""The benchmark tool itself still runs end to end (a tiny run; no timing asserted).

Speed is measured by ``perf/broadcast.py`` by hand, not here: this only keeps
the tool from rotting as the node changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_broadcast_benchmark_runs_and_every_subscriber_gets_every_message():
    result = subprocess.run(
        [sys.executable, "-m", "perf.broadcast", "--clients", "40", "--messages", "3", "--json", "--timeout", "120"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ok"] is True
    (layout,) = report["layouts"]
    assert layout["delivered"] == layout["expected"] == 40 * 3
    assert layout["node_sent_delta"] == layout["delivered"]
    assert layout["duplicates"] == layout["out_of_order"] == 0

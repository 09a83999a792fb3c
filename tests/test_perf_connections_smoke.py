"""The connections benchmark still runs end to end (a tiny run; no timing asserted).

Speed is measured by ``perf/connections.py`` by hand, not here: this only keeps
the tool from rotting as the node changes, and checks that its report has the
fields the README's table is built from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIELDS = {
    "floor": ["cpu_per_connection_ms", "connects_per_s"],
    "storm": ["cpu_per_connection_ms", "connects_per_s", "connect_p50_ms", "connect_p99_ms", "connect_ratio_to_floor"],
    "memory": ["rss_per_connection_kib"],
    "first_message": ["broadcast_p50_ms", "broadcast_p99_ms", "trigger_p50_ms", "trigger_p99_ms"],
    "query": ["query_ms", "query_max_ms", "listed", "survivor_worst_ms"],
    "mass_disconnect": ["probe_ws_worst_ms", "probe_api_worst_ms", "survivor_worst_ms", "cleanup_s", "final_census"],
}


def test_connections_benchmark_runs_every_phase_and_reports_its_figures():
    result = subprocess.run(
        [sys.executable, "-m", "perf.connections", "--quick", "--clients", "200", "--first-clients", "20",
         "--triggers", "20", "--query-repeat", "1", "--json", "--timeout", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ok"] is True, report["failures"]
    for section, fields in FIELDS.items():
        missing = [f for f in fields if report[section].get(f) is None]
        assert not missing, f"{section} lacks {missing}"
    assert report["query"]["listed"] == 200
    assert report["mass_disconnect"]["final_census"]["connections"] == report["survivors"]
    assert report["mass_disconnect"]["final_census"]["channels"] == 1
    assert report["first_message"]["clients"] == report["first_message"]["triggers"] == 20
    assert {t["what"] for t in report["targets"]}  # targets are reported next to the figures

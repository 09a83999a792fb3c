"""What ``actorcast serve`` prints: ``--log-format json`` line by line, and workers started from a config file."""

from __future__ import annotations

import json
import re
import signal
import socket

from tests.e2e import test_cli
from tests.e2e.test_cli import Serve, free_port
from tests.wsclient import PusherClient

serve = test_cli.serve  # the fixture: `python -m actors serve ...` processes, killed after the test

KEYS = {"time", "level", "logger", "message"}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WORKERS_LISTENING = re.compile(r'"message": "actorcast listening on ws://127\.0\.0\.1:(?P<port>\d+)/app/\{key\} '
                               r'\(metrics on (?P<metrics>[^)]+)\), 2 workers"')


def records(node: Serve) -> list[dict]:
    """Every line the process printed, each parsed as one JSON object with the four keys."""
    out = []
    for line in node.output:
        record = json.loads(line)
        assert KEYS <= set(record), line
        assert TIME.match(record["time"]), line
        out.append(record)
    return out


def stop_cleanly(node: Serve) -> None:
    node.proc.send_signal(signal.SIGTERM)
    assert node.finish(timeout=30) == 0


def test_json_log_format_is_one_object_per_line_for_everything_the_node_prints(serve):
    node = serve("--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1", "--log-format", "json",
                 env={"SOKETI_NODE_ID": "pod-1"})
    port = int(node.wait_ready()["port"])
    with PusherClient.connect(port) as client:
        client.subscribe("news")
    with PusherClient.connect(port, key="wrong", established=False) as refused:
        assert refused.expect_close()[0] == 4001
    stop_cleanly(node)
    found = records(node)
    (refusal,) = [r for r in found if r.get("kind") == "connection_refused"]  # the record's own fields
    assert (refusal["code"], refusal["remote"], refusal["level"]) == (4001, "127.0.0.1", "INFO")
    warning = [r for r in found if "SOKETI_NODE_ID" in r["message"]]
    assert len(warning) == 1 and warning[0]["level"] == "WARNING" and warning[0]["logger"] == "actorcast"
    assert any(r["message"].startswith("actorcast listening on ws://127.0.0.1:") for r in found)
    assert any(r["message"] == "shutting down" for r in found)
    assert not [r for r in found if r["level"] in ("ERROR", "CRITICAL")]


def test_a_failed_start_in_json_format_is_one_json_line(serve):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        node = serve("--host", "127.0.0.1", "--port", str(taken.getsockname()[1]), "--metrics-port", "-1",
                     "--log-format", "json")
        assert node.finish(timeout=30) == 2
    (record,) = records(node)
    assert "(the main port): address already in use" in record["message"]


def test_workers_start_from_a_config_file_and_log_json_with_their_number(serve, tmp_path):
    port = free_port()
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"host": "127.0.0.1", "port": port, "metrics_port": 0, "workers": 2,
                                  "log_format": "json", "apps": [{"id": "5", "key": "wk", "secret": "ws"}]}))
    node = serve("--config", str(config), env={"ACTORCAST_SHUTDOWN_GRACE": "3"})
    match = node.wait_for(WORKERS_LISTENING, timeout=60)
    assert int(match["port"]) == port
    clients = [PusherClient.connect(port, key="wk") for _ in range(4)]  # the workers read the config too
    for client in clients:
        client.subscribe("news")
        client.close()
    stop_cleanly(node)
    found = records(node)
    assert {r.get("worker") for r in found} >= {"1", "2"}  # each worker's lines say which it is
    assert not [r for r in found if r["level"] in ("ERROR", "CRITICAL")]


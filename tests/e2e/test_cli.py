"""``python -m actors serve``: start, log where it listens, serve, stop on signals."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.wsclient import PusherClient

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on ws://(?P<host>[\d.]+):(?P<port>\d+)/app/\S* \(metrics on (?P<metrics>\S+)\)")


def handlers_installed(pid: int, *signals: int) -> bool:
    """True once the process catches ``signals`` (Linux: the SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return all(mask & (1 << (sig - 1)) for sig in signals)


class Serve:
    """``python -m actors serve ...`` in a subprocess, its output read by threads (bounded waits)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCAST_")}
        full_env.update(env or {})
        full_env["PYTHONPATH"] = str(REPO)
        full_env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "actors", "serve", *args],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: re.Pattern, timeout: float = 15) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern.pattern!r} in {timeout} s: {self.output}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            match = pattern.search(line)
            if match:
                return match

    def wait_ready(self) -> re.Match:
        """The listening line; then (bounded) until SIGINT/SIGTERM handlers are in place."""
        match = self.wait_for(LISTENING)
        deadline = time.monotonic() + 10
        while not handlers_installed(self.proc.pid, signal.SIGINT, signal.SIGTERM):
            assert time.monotonic() < deadline, "signal handlers never installed"
            assert self.proc.poll() is None, self.output
            time.sleep(0.01)
        return match

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def serve():
    started: list[Serve] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Serve:
        process = Serve(*args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCAST_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "actors", "serve", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )


LOCAL = ("--host", "127.0.0.1", "--port", "0", "--metrics-port", "0")


def test_serve_logs_one_line_with_its_address_and_answers_websocket_connects(serve):
    node = serve(*LOCAL)
    match = node.wait_ready()
    port = int(match["port"])
    assert match["host"] == "127.0.0.1" and port > 0
    with PusherClient.connect(port) as client:
        client.subscribe("news")
        client.ping()
    with urllib.request.urlopen(match["metrics"], timeout=5) as response:
        assert response.status == 200
        assert b"actorcast_connections" in response.read()
    assert sum("listening" in line for line in node.output) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_node_cleanly_with_exit_code_0(serve, sig):
    node = serve(*LOCAL)
    port = int(node.wait_ready()["port"])
    client = PusherClient.connect(port)
    try:
        assert node.stop(sig) == 0
        code, _ = client.expect_close()
        assert code == 4200  # clients are told to reconnect elsewhere
    finally:
        client.close()
    assert not any("Traceback" in line for line in node.output), "".join(node.output)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_metrics_can_be_turned_off(serve):
    match = serve("--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1").wait_ready()
    assert match["metrics"] == "off"


def test_config_file_apps_are_served_instead_of_the_default(serve, tmp_path):
    config = tmp_path / "apps.json"
    config.write_text(json.dumps({"apps": [{"id": "7", "key": "cfg-key", "secret": "cfg-secret"}]}))
    port = int(serve(*LOCAL, "--config", str(config)).wait_ready()["port"])
    with PusherClient.connect(port, key="cfg-key") as client:
        client.subscribe("news")
    with PusherClient.connect(port, key="app-key", established=False) as client:
        code, _ = client.expect_close()
    assert code == 4001


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{not json", "not valid JSON"),
        ('{"apps": []}', "at least one app"),
        ('{"apps": [{"key": "k", "secret": "s", "colour": "red"}]}', "unknown app setting"),
        ('{"apps": [{"id": "1", "key": "a", "secret": "s"}, {"id": "1", "key": "b", "secret": "s"}]}', "duplicate app id"),
        (None, "cannot read config"),
    ],
    ids=["invalid-json", "no-apps", "unknown-setting", "duplicate-id", "missing-file"],
)
def test_a_bad_config_exits_with_code_2_and_says_why(tmp_path, content, complaint):
    config = tmp_path / "apps.json"
    if content is not None:
        config.write_text(content)
    result = run_cli(*LOCAL, "--config", str(config))
    assert result.returncode == 2
    assert "actorcast:" in result.stderr
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_exits_with_code_2_and_says_why():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1")
    assert result.returncode == 2
    assert "actorcast:" in result.stderr


def test_env_app_key_is_honoured(serve):
    port = int(serve(*LOCAL, env={"ACTORCAST_APP_KEY": "env-key"}).wait_ready()["port"])
    with PusherClient.connect(port, key="env-key") as client:
        client.subscribe("news")
    with PusherClient.connect(port, key="app-key", established=False) as client:
        code, _ = client.expect_close()
    assert code == 4001


def test_env_port_is_used_when_no_port_flag_is_given(serve):
    match = serve("--host", "127.0.0.1", "--metrics-port", "-1", env={"ACTORCAST_PORT": "0"}).wait_ready()
    port = int(match["port"])
    assert port not in (0, 6001)
    with PusherClient.connect(port):
        pass

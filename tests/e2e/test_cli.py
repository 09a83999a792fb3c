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
LISTENING = re.compile(r"listening on ws://(?P<host>[\d.]+):(?P<port>\d+)/app/\S* \(metrics (?:on )?(?P<metrics>\S+)\)")


def handlers_installed(pid: int, *signals: int) -> bool:
    """True once the process catches ``signals`` (Linux: the SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return all(mask & (1 << (sig - 1)) for sig in signals)


class Serve:
    """``python -m actors serve ...`` in a subprocess, its output read by threads (bounded waits)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, command: tuple[str, ...] = ("serve",)) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ACTORCAST_", "SOKETI_"))}
        full_env.update(env or {})
        full_env["PYTHONPATH"] = str(REPO)
        full_env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "actors", *command, *args],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._pumps = [threading.Thread(target=self._pump, args=(stream,), daemon=True)
                       for stream in (self.proc.stdout, self.proc.stderr)]
        for pump in self._pumps:
            pump.start()

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

    def finish(self, timeout: float = 15) -> int:
        """Wait (bounded) for the process to exit and its output to be read to the end; the exit code."""
        code = self.proc.wait(timeout=timeout)
        for pump in self._pumps:
            pump.join(timeout)
            assert not pump.is_alive(), "the output did not end"
        return code

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

    def start(*args: str, env: dict[str, str] | None = None, command: tuple[str, ...] = ("serve",)) -> Serve:
        process = Serve(*args, env=env, command=command)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m actors serve ARGS`` to its end."""
    return run_actorcast("serve", *args, env=env)


def run_actorcast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m actors ARGS`` to its end (bounded), in an environment without ACTORCAST_/SOKETI_ variables."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ACTORCAST_", "SOKETI_"))}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "actors", *args],
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
    node.wait_for(re.compile(r" WARNING actorcast: app 1 \(key app-key\) has the well-known secret 'app-secret'"))
    assert sum("listening" in line for line in node.output) == 1
    assert sum(" WARNING " in line for line in node.output) == 1  # the try-out app's public secret, once


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
    port = int(serve(*LOCAL, env={"ACTORCAST_APP_KEY": "env-key", "ACTORCAST_APP_SECRET": "env-secret"}).wait_ready()["port"])
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


# --- one parser, one line per mistake -------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``actorcast: ...`` line a failed start prints (exit code 2, nothing else, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("actorcast: ") and "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("serve", "--log-level", "verbose"), {}, '--log-level must be one of debug, info, warning, error, critical, not "verbose"'),
        (("--port", "99999", "serve"), {}, '--port must be an integer from 0 to 65535, not "99999"'),
        (("serve",), {"ACTORCAST_PORT": "abc"}, 'ACTORCAST_PORT must be an integer from 0 to 65535, not "abc"'),
        (("serve", "--bogus"), {}, "unrecognized arguments: --bogus"),
        (("serve", "--port"), {}, "argument --port: expected one argument"),
        (("frobnicate",), {}, "invalid choice: 'frobnicate'"),
        (("start", "--workers", "lots"), {}, "--workers must be a positive number or 'auto'"),
        (("serve",), {"SOKETI_DEFAULT_APP_MAX_CONNS": "many"}, "SOKETI_DEFAULT_APP_MAX_CONNS must be a positive integer"),
        (("serve",), {"ACTORCAST_APP_ENABLED": "nope"}, 'ACTORCAST_APP_ENABLED must be true, false, 1 or 0, not "nope"'),
        (("serve",), {"ACTORCAST_APP_KEY": "prod-key"}, "ACTORCAST_APP_KEY set but no secret"),
    ],
    ids=["log-level", "port-range", "env-port", "unknown-flag", "no-value", "unknown-command", "workers",
         "soketi", "env-switch", "env-app-without-secret"],
)
def test_each_mistake_is_one_line_with_exit_code_2(args, env, says):
    line = one_error_line(run_actorcast(*args, env=env))
    assert says in line, line


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read config {path}: No such file or directory"),
        ("{not json", "{path}: not valid JSON: Expecting property name enclosed in double quotes"),
        ('{"apps": [{"key": "k", "secret": "s", "enabled": "false"}]}',
         '{path}: apps[0].enabled must be true or false, not "false"'),
        ('{"apps": [{"key": "k"}]}', "{path}: apps[0].secret: missing"),
        ('{"prot": 7000}', "{path}: prot: unknown setting"),
    ],
    ids=["missing", "invalid-json", "string-false", "no-secret", "unknown-key"],
)
def test_a_bad_config_file_is_one_line_naming_the_file_and_key(tmp_path, content, says):
    config = tmp_path / "apps.json"
    if content is not None:
        config.write_text(content)
    line = one_error_line(run_cli("--config", str(config)))
    assert line.startswith("actorcast: " + says.format(path=config)), line


def test_every_mistake_is_reported_together_one_line_each(tmp_path):
    config = tmp_path / "apps.json"
    config.write_text('{"port": "1", "apps": [{"key": "k", "enabled": "false"}]}')
    result = run_cli("--config", str(config), "--log-level", "loud", env={"ACTORCAST_METRICS_PORT": "x"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 5 and all(line.startswith("actorcast: ") for line in lines), lines
    for part in ("ACTORCAST_METRICS_PORT", f"{config}: port", "apps[0].enabled", "apps[0].secret", "--log-level"):
        assert sum(part in line for line in lines) == 1, part


def test_a_clash_on_the_metrics_port_says_it_is_the_metrics_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(run_cli("--host", "127.0.0.1", "--port", "0", "--metrics-port", str(port)))
        assert line == f"actorcast: cannot listen on 127.0.0.1:{port} (the metrics port): address already in use"
        line = one_error_line(run_cli("--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1"))
        assert line == f"actorcast: cannot listen on 127.0.0.1:{port} (the main port): address already in use"


def test_version_is_the_package_s_and_setup_py_s():
    import actors

    result = run_actorcast("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"actorcast {actors.__version__}")
    built = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True, text=True,
                           timeout=60)
    assert built.stdout.strip().splitlines()[-1] == actors.__version__


@pytest.mark.parametrize(
    "where", [("--port", "{port}", "serve"), ("serve", "--port", "{port}"), ("start", "--port", "{port}")],
    ids=["before-serve", "after-serve", "start"],
)
def test_flags_work_before_or_after_the_command_and_start_is_serve(serve, where):
    port = free_port()
    args = [part.format(port=port) for part in where]
    node = serve("--host", "127.0.0.1", *args, "--metrics-port", "-1", command=())
    assert int(node.wait_ready()["port"]) == port
    with PusherClient.connect(port) as client:
        client.subscribe("news")


# --- settings reaching a running node --------------------------------------------------------


def test_soketi_variables_reach_the_node_and_an_unsupported_one_is_warned_about_once(serve):
    env = {"SOKETI_PORT": "0", "SOKETI_METRICS_ENABLED": "false", "SOKETI_DEFAULT_APP_ID": "42",
           "SOKETI_DEFAULT_APP_KEY": "soketi-key", "SOKETI_DEFAULT_APP_SECRET": "soketi-secret",
           "SOKETI_DEFAULT_APP_MAX_CONNS": "1", "SOKETI_NODE_ID": "pod-7"}
    node = serve("--host", "127.0.0.1", env=env)
    match = node.wait_ready()
    assert match["metrics"] == "off"
    port = int(match["port"])
    with PusherClient.connect(port, key="soketi-key") as client:
        client.subscribe("news")
        with PusherClient.connect(port, key="soketi-key", established=False) as second:
            code, _ = second.expect_close()
        assert code == 4004  # SOKETI_DEFAULT_APP_MAX_CONNS=1
    warned = [line for line in node.output if "SOKETI_NODE_ID" in line]
    assert len(warned) == 1 and " WARNING " in warned[0]


def test_actorcast_variables_win_over_soketi_s_and_reach_the_node(serve):
    port = free_port()
    env = {"SOKETI_PORT": "1", "ACTORCAST_PORT": str(port), "ACTORCAST_METRICS_PORT": "-1",
           "SOKETI_DEFAULT_APP_KEY": "soketi-key", "ACTORCAST_APP_KEY": "env-key", "ACTORCAST_APP_ENABLED": "0",
           "SOKETI_DEFAULT_APP_SECRET": "soketi-secret"}
    assert int(serve("--host", "127.0.0.1", env=env).wait_ready()["port"]) == port
    codes = []
    for key in ("env-key", "soketi-key"):
        with PusherClient.connect(port, key=key, established=False) as client:
            codes.append(client.expect_close()[0])
    assert codes == [4003, 4001]  # env-key is the app, and it is disabled; soketi's key lost


def test_config_file_node_keys_lose_to_flags_and_beat_the_environment(serve, tmp_path):
    flag_port, file_port = free_port(), free_port()
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"port": file_port, "metrics_port": -1, "host": "127.0.0.1",
                                  "apps": [{"id": "7", "key": "cfg-key", "secret": "cfg-secret"}]}))
    env = {"ACTORCAST_PORT": "1", "ACTORCAST_METRICS_PORT": "2"}
    match = serve("--config", str(config), "--port", str(flag_port), env=env).wait_ready()
    assert (int(match["port"]), match["metrics"]) == (flag_port, "off")
    with PusherClient.connect(flag_port, key="cfg-key"):
        pass


def test_config_check_prints_the_resolved_settings_with_secrets_masked(tmp_path):
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"port": 7010, "apps": [{"id": "7", "key": "cfg-key", "secret": "s3cret"}]}))
    result = run_actorcast("config", "check", str(config), "--log-format", "json",
                           env={"ACTORCAST_SHUTDOWN_GRACE": "9", "ACTORCAST_PORT": "1"})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["port"], shown["shutdown_grace"], shown["log_format"]) == (7010, 9.0, "json")
    assert shown["log_level"] == "info"  # as a config file would say it
    assert shown["apps"][0]["key"] == "cfg-key" and "s3cret" not in result.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"apps": [{"key": "k", "enabled": "false"}]}')
    result = run_actorcast("config", "check", str(bad))
    assert result.returncode == 2 and result.stdout == "" and len(result.stderr.splitlines()) == 2

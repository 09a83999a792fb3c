"""A real ``redis-server`` for tests: started on a free loopback port, stopped after.

``RedisServer()`` picks a port; ``start()`` runs ``/usr/bin/redis-server``
(Debian's package) on it with no persistence and waits (bounded) until it
answers PING; ``stop()``, ``start()`` again (the same port), ``restart()``,
and ``pause()`` / ``resume()`` (SIGSTOP / SIGCONT: a Redis that keeps its
connections open and answers nothing, as behind a half-open link) give the
fault tests their faults. ``--requirepass`` comes from ``password=``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["REDIS_SERVER", "RedisServer", "free_port", "missing_reason"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def missing_reason() -> str | None:
    """Why no Redis can run here (for ``pytest.skip``), or None when it can."""
    if os.access(REDIS_SERVER, os.X_OK):
        return None
    return (
        f"{REDIS_SERVER} not found: install Debian's redis-server "
        "(apt-get install -y redis-server; the README's test command does it)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (see the module docstring)."""

    def __init__(self, password: str | None = None, port: int | None = None) -> None:
        self.password = password
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="actorcast-redis-")
        self.log_path = os.path.join(self._dir, "redis.log")
        atexit.register(self.close)  # no server outlives the process, fixture or not

    def url(self, db: int = 0, password: str | None = None) -> str:
        """``redis://[:password@]127.0.0.1:port/db`` (this server's password unless given)."""
        secret = self.password if password is None else password
        auth = f":{secret}@" if secret else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RedisServer:
        """Run the server (again, on the same port) and wait until it answers PING."""
        if self.running:
            return self
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self._dir, "--logfile", self.log_path,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT} s: {self._log_tail()}")
            time.sleep(0.02)  # polling a bounded deadline
        return self

    def ping(self) -> bool:
        """True when the server answers PING (after AUTH, when it has a password)."""
        request = b"PING\r\n"
        if self.password:
            request = f"AUTH {self.password}\r\n".encode() + request
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(request)
                answer = b""
                while b"PONG" not in answer:
                    chunk = sock.recv(1024)
                    if not chunk:
                        return False
                    answer += chunk
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a bound); the port stays ours to reuse."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop and start again on the same port: every client's connection is closed."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered (a half-open link)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return " | ".join(log.read().splitlines()[-5:])
        except OSError:
            return "(no log)"

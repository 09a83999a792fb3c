"""``actorcast serve --workers N``: one parent supervising N worker processes.

::

    parent (this module)                     worker k (actors._worker)
    ├── holds the port (bound, not listening)  Node(port=P, reuse_port=True,
    ├── Relay on <tmp>/bus.sock  <-----------      bus=WorkerBus(<tmp>/bus.sock),
    ├── one /metrics (WorkerFilesCollector)        metrics_port=None)
    └── starts, watches, restarts, stops --->  writes its metrics to <tmp>/metrics

Each worker is a fresh ``python -m actors._worker`` (never a fork of a running
hub) with its own actor system, listening on the same host:port with
``SO_REUSEPORT``: the kernel spreads new connections over the workers and no
byte of client traffic passes through the parent. The parent holds the port
bound (``SO_REUSEPORT``, never listening, so it gets no connections): ``--port
0`` picks one port for all, and the port stays ours while a worker restarts.

* A worker that dies is restarted, with one WARNING line; one that keeps dying
  is restarted with a growing back-off.
* SIGTERM/SIGINT to the parent (``run`` returns when ``stop`` is set): every
  worker gets SIGTERM and drains under the node's shutdown rules
  (``Node.stop``); the parent waits the grace period plus a margin, kills any
  straggler, and returns 0.
* Metrics: prometheus-client's multiprocess mode. Each worker writes to a
  fresh ``PROMETHEUS_MULTIPROC_DIR``; the parent serves their sum on the
  metrics port. Workers flush their counts every 0.5 s, so a scrape may lag
  by that much (a single node flushes before each scrape).
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import mark_process_dead

from transport.config import ServerLimits
from transport.errors import ActorcastError, listen_error
from transport.metrics_endpoint import make_metrics_server
from transport.tls import tls_context

from .hub import HubThread
from .metrics import WorkerFilesCollector
from .worker_bus import Relay

__all__ = ["Supervisor", "WorkerStartError"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often the parent looks at its workers
READY_TIMEOUT = 30.0  # a worker that does not listen within this at start-up fails the start
STOP_MARGIN = 5.0  # on top of the shutdown grace, before a worker that did not stop is killed
STABLE_SECONDS = 10.0  # a worker that lived this long is restarted at once when it dies
RESTART_MIN = 0.5
RESTART_MAX = 30.0


class WorkerStartError(ActorcastError):
    """A worker exited before it listened (its own error is on stderr above)."""


class _Worker:
    """What the parent knows of one worker slot (its process changes on restart)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_fd: int | None = None
        self.ready = False
        self.started = 0.0
        self.restarts = 0
        self.delay = 0.0
        self.restart_at = 0.0


class Supervisor:
    """Starts ``count`` workers running ``argv`` (the ``actorcast`` flags) and keeps them running."""

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        *,
        host: str,
        port: int,
        metrics_host: str,
        metrics_port: int | None,
        limits: ServerLimits | None = None,
        env: dict[str, str] | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        metrics_tls: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.count = count
        self.host = host
        self.port = port
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port
        self.limits = limits or ServerLimits()
        self.env = dict(os.environ if env is None else env)
        # The workers read the TLS files themselves (they re-parse argv); the
        # parent reads them too, to fail once and clearly, and for /metrics.
        self.tls_files = (tls_cert, tls_key, metrics_tls)
        self._tls: ssl.SSLContext | None = None
        self.workers = [_Worker(n) for n in range(1, count + 1)]
        self.dir = ""
        self._hub = HubThread(name="actorcast-parent")
        self._relay: Relay | None = None
        self._metrics_server: Any = None
        self._reservation: socket.socket | None = None
        self._hub_up = False

    @property
    def bus_path(self) -> str:
        return os.path.join(self.dir, "bus.sock")

    @property
    def metrics_dir(self) -> str:
        return os.path.join(self.dir, "metrics")

    # --- start ---------------------------------------------------------------------

    def start(self) -> Supervisor:
        """Reserve the port, start the relay and /metrics, start every worker; return once all listen.

        Raises OSError (the port or the metrics port in use), ConfigError (a TLS
        file) or WorkerStartError, with everything started so far stopped again.
        """
        cert, key, metrics_tls = self.tls_files
        self._tls = tls_context(cert, key, metrics_tls=metrics_tls)
        self.dir = tempfile.mkdtemp(prefix="actorcast-")
        os.mkdir(self.metrics_dir)
        started = False
        try:
            self._reserve_port()
            self._hub.start(self._start_in_hub)
            self._hub_up = True
            for worker in self.workers:
                self._spawn(worker, peers=self.count - 1)
            self._wait_ready()
            started = True
        finally:
            if not started:  # a worker that cannot start, say: undo what started, let the error through
                self._stop_workers(grace=1.0)
                self._close()
        log.info("actorcast listening on ws%s://%s:%d/app/{key} (metrics %s), %d workers",
                 "s" if self._tls is not None else "", self.host, self.port,
                 f"on http{'s' if metrics_tls else ''}://{self.metrics_host}:{self.metrics_port}/metrics"
                 if self.metrics_port is not None else "off", self.count)
        return self

    def _reserve_port(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise listen_error("the main port", self.host, self.port, exc) from exc
        self._reservation = sock
        self.port = sock.getsockname()[1]

    def _start_in_hub(self) -> None:
        self._relay = Relay(self.bus_path)
        self._relay.start()
        if self.metrics_port is None:
            return
        registry = CollectorRegistry()
        WorkerFilesCollector(registry, path=self.metrics_dir)  # a worker's file being created is skipped
        # Nothing to flush here: the workers flush to their files on a timer.
        server = make_metrics_server((self.metrics_host, self.metrics_port), registry, lambda: None, self.limits,
                                     self._tls if self.tls_files[2] else None)
        try:
            server.start()
        except OSError as exc:  # the metrics port in use: undo the relay, say which port it was
            self._relay.stop()
            raise listen_error("the metrics port", self.metrics_host, self.metrics_port, exc) from exc
        self._metrics_server = server
        self.metrics_port = server.server_port

    def _spawn(self, worker: _Worker, peers: int) -> None:
        """Start ``worker``'s process; it listens once it has met ``peers`` other workers (bounded)."""
        read_fd, write_fd = os.pipe()
        env = dict(self.env)
        env.pop("ACTORCAST_WORKERS", None)
        env.update(
            ACTORCAST_WORKER_ID=str(worker.number),
            ACTORCAST_BUS_SOCKET=self.bus_path,
            ACTORCAST_READY_FD=str(write_fd),
            ACTORCAST_SUPERVISOR_PID=str(os.getpid()),
            ACTORCAST_WORKER_PEERS=str(peers),
        )
        if self.metrics_port is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        else:
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        # Flags given last win: every worker gets the resolved port and no metrics port of its own.
        command = [sys.executable, "-m", "actors._worker", *self.argv, "--port", str(self.port), "--metrics-port", "-1"]
        try:
            worker.proc = subprocess.Popen(command, env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        worker.ready_fd, worker.ready = read_fd, False
        worker.started = time.monotonic()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(worker.ready for worker in self.workers):
            for worker in self.workers:
                self._check_ready(worker)
                code = worker.proc.poll() if worker.proc is not None else None
                if code is not None and not worker.ready:
                    raise WorkerStartError(f"worker {worker.number} exited ({_how(code)}) before it listened")
            if time.monotonic() > deadline:
                raise WorkerStartError(f"the workers did not all listen within {READY_TIMEOUT:.0f} s")
            time.sleep(POLL_SECONDS / 5)

    def _check_ready(self, worker: _Worker) -> None:
        """Read the worker's ready pipe without waiting: it writes one line once it listens."""
        fd = worker.ready_fd
        if fd is None or not select.select([fd], [], [], 0)[0]:
            return
        said = os.read(fd, 64)
        os.close(fd)
        worker.ready_fd = None
        if said.startswith(b"ready") and worker.proc is not None:
            worker.ready = True
            log.info("worker %d %s (pid %d)", worker.number, "restarted" if worker.restarts else "started",
                     worker.proc.pid)

    # --- supervise -----------------------------------------------------------------

    def run(self, stop: Any) -> int:
        """Supervise until ``stop`` (an event) is set; then stop every worker and return 0."""
        while not stop.wait(POLL_SECONDS):
            self.poll()
        log.info("shutting down %d workers", self.count)
        self._stop_workers(grace=self.limits.shutdown_grace)
        self._close()
        return 0

    def poll(self) -> None:
        """Note workers that listen, restart workers that died (when their back-off is over)."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.proc is None:
                if now >= worker.restart_at:
                    self._restart(worker, now)
                continue
            self._check_ready(worker)
            code = worker.proc.poll()
            if code is not None:
                self._died(worker, code, now)

    def _restart(self, worker: _Worker, now: float) -> None:
        worker.restarts += 1
        # The others running now: the new one must know them before it answers anyone.
        peers = sum(1 for other in self.workers if other is not worker and other.proc is not None)
        try:
            self._spawn(worker, peers)
        except OSError as exc:  # out of processes or descriptors, say: try again later
            worker.delay = min(max(worker.delay * 2, RESTART_MIN), RESTART_MAX)
            worker.restart_at = now + worker.delay
            log.warning("worker %d could not be started (%s); trying again in %.1f s", worker.number, exc, worker.delay)

    def _died(self, worker: _Worker, code: int, now: float) -> None:
        pid = worker.proc.pid  # type: ignore[union-attr]
        lived = now - worker.started
        self._forget(worker)
        worker.delay = 0.0 if lived >= STABLE_SECONDS else min(max(worker.delay * 2, RESTART_MIN), RESTART_MAX)
        worker.restart_at = now + worker.delay
        log.warning("worker %d (pid %d) died (%s) after %.1f s; restarting it in %.1f s",
                    worker.number, pid, _how(code), lived, worker.delay)

    def _forget(self, worker: _Worker) -> None:
        """The worker's process ended: drop its pipe and its live gauges."""
        if worker.ready_fd is not None:
            os.close(worker.ready_fd)
            worker.ready_fd = None
        if worker.proc is not None:
            # Its counters stay (they count what happened); its live gauges go.
            mark_process_dead(worker.proc.pid, self.metrics_dir)
        worker.proc = None
        worker.ready = False

    # --- stop ----------------------------------------------------------------------

    def _stop_workers(self, grace: float) -> None:
        """SIGTERM every worker, wait ``grace`` + a margin, kill what is left."""
        running = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for worker in running:
            worker.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + grace + STOP_MARGIN
        for worker in running:
            proc = worker.proc
            assert proc is not None  # running workers have a process
            try:
                code = proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) did not stop within %.1f s; killed", worker.number, proc.pid,
                            grace + STOP_MARGIN)
                proc.kill()
                code = proc.wait()
            if code != 0:
                log.warning("worker %d (pid %d) stopped with %s", worker.number, proc.pid, _how(code))
        for worker in self.workers:
            if worker.proc is not None:
                worker.proc.wait()
            self._forget(worker)

    def _close(self) -> None:
        """Stop the relay and /metrics (after the workers: a draining worker still publishes)."""
        if self._hub_up:
            self._hub_up = False
            self._hub.call(self._close_in_hub, timeout=10)
            self._hub.stop()
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _close_in_hub(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.stop(timeout=1)
        if self._relay is not None:
            self._relay.stop()


def _how(code: int) -> str:
    """``"exit code 2"`` or ``"killed by SIGKILL"``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"

"""Child processes that speak JSON lines over their stdin/stdout pipes.

The driver starts every helper (node host, floor server, client processes)
with :func:`spawn`; each child prints one JSON object per line and reads
commands the same way. Waiting is always bounded: :func:`wait_events` polls
all children's pipes with a deadline, so a stuck or dead child turns into a
clear error instead of a hang.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Any, Callable

__all__ = ["Child", "ChildError", "die_with_parent", "emit", "spawn", "wait_events"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIVE: list["Child"] = []


class ChildError(RuntimeError):
    """A child died, answered with an error, or did not answer in time."""


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies.

    Called first thing in every child: if the driver is killed (Ctrl-C twice,
    OOM, the global timeout), no node host or client process outlives it.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the driver's finally-block still kills its children
    if os.getppid() == 1:  # parent already gone before prctl took effect
        os._exit(1)


def emit(obj: dict) -> None:
    """Child side: write one JSON line to the driver."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Child:
    """One helper process; ``send`` a command, read its events with ``wait_events``."""

    def __init__(self, name: str, module: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        env = dict(os.environ, **(env or {}), PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._buf = b""
        self.events: list[dict] = []  # parsed lines not yet consumed
        _LIVE.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, **cmd: Any) -> None:
        """Write one command line; a dead child raises ChildError."""
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ChildError(f"{self.name} (pid {self.pid}) is gone: {exc}") from exc

    def _pump(self) -> bool:
        """Move whatever the pipe holds into ``events``; False on EOF."""
        while True:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for line in lines:
                if line.strip():
                    event = json.loads(line)
                    if event.get("ev") == "error":
                        raise ChildError(f"{self.name}: {event.get('message')}")
                    self.events.append(event)

    def request(self, timeout: float, **cmd: Any) -> dict:
        """Send a command and wait for the reply event named ``cmd['op']``."""
        self.send(**cmd)
        return wait_events([self], lambda ch, ev: ev.get("ev") == cmd["op"], timeout, want=1)[0][1]

    def kill(self, grace: float = 0.0) -> None:
        """End the child: close its stdin (it exits on EOF), then SIGKILL after ``grace``."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self in _LIVE:
            _LIVE.remove(self)


def spawn(name: str, module: str, *args: str, env: dict[str, str] | None = None) -> Child:
    """Start ``python -m module args...`` as a JSON-lines child (``env``: extra variables)."""
    return Child(name, module, list(args), env)


def kill_all() -> None:
    """Kill every child still alive (the driver's finally-block and atexit)."""
    for child in list(_LIVE):
        child.kill()


def wait_events(
    children: list[Child],
    match: Callable[[Child, dict], bool],
    timeout: float,
    want: int | None = None,
) -> list[tuple[Child, dict]]:
    """Consume and return matching events until ``want`` arrived (default: one per child).

    Non-matching events stay queued for later waits. Raises ChildError on
    timeout or when a child exits first, naming who is missing.
    """
    want = len(children) if want is None else want
    got: list[tuple[Child, dict]] = []
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    for child in children:
        sel.register(child.proc.stdout, selectors.EVENT_READ, child)
    try:
        while True:
            for child in children:
                keep = []
                for event in child.events:
                    if len(got) < want and match(child, event):
                        got.append((child, event))
                    else:
                        keep.append(event)
                child.events = keep
            if len(got) >= want:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                have = sorted({c.name for c, _ in got})
                raise ChildError(f"timed out after {timeout:.0f}s waiting for {want} events (got {len(got)} from {have})")
            for key, _ in sel.select(min(left, 1.0)):
                child = key.data
                if not child._pump():
                    sel.unregister(child.proc.stdout)
                    child._pump_dead = True
            answered = {id(c) for c, _ in got}  # a child that gave its event and then exited owes nothing
            for child in children:
                if getattr(child, "_pump_dead", False) and not child.events and id(child) not in answered:
                    raise ChildError(f"{child.name} (pid {child.pid}) exited with {child.proc.wait()}")
    finally:
        sel.close()

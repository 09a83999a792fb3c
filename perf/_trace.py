"""py-spy and ``strace -c`` on node hosts, for the broadcast phase only."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any

from perf._proc import Child

__all__ = ["start_tracers", "stop_tracers"]


def start_tracers(opts: Any, hosts: list[tuple[Child, str]]) -> list[subprocess.Popen]:
    """Attach py-spy and/or strace -c to each (host, file suffix); e.g. ``PREFIX.c1.w2.txt``."""
    tracers = []
    for host, suffix in hosts:
        pid = str(host.pid)
        if opts.spy and shutil.which("py-spy"):
            # PERF_SPY_GIL=1: only samples of the thread holding the GIL (who runs Python, not who waits)
            gil = ["--gil"] if os.environ.get("PERF_SPY_GIL") else []
            tracers.append(subprocess.Popen(["py-spy", "record", "--pid", pid, "--rate", "250", "--format", "raw",
                                             "--threads", *gil, "--output", f"{opts.spy}.{suffix}.txt"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if opts.strace and shutil.which("strace"):
            tracers.append(subprocess.Popen(["strace", "-c", "-f", "-p", pid, "-o", f"{opts.strace}.{suffix}.txt"],
                                            stderr=subprocess.DEVNULL))
    if tracers:
        # Both tools need a moment to attach; broadcasting before that would go unseen.
        # py-spy and strace have no readiness signal, so this one wait is a bounded poll on /proc.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(_traced(str(h.pid), opts.strace) for h, _ in hosts):
            time.sleep(0.05)
        time.sleep(0.5)
    return tracers


def _traced(pid: str, strace: str) -> bool:
    if not strace:
        return True
    with open(f"/proc/{pid}/status") as status:
        return any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in status)


def stop_tracers(tracers: list[subprocess.Popen]) -> None:
    for proc in tracers:
        proc.send_signal(signal.SIGINT)  # both write their summary on SIGINT
    for proc in tracers:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

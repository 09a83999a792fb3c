"""Run a child process (``python -m MODULE``, ``node FILE``) and read its output with deadlines.

For the examples' and README's tests: one thread collects stdout and stderr
(merged) line by line, so :meth:`ChildProcess.wait_for` never blocks past
its timeout::

    with PythonProcess("examples.ticker", "--port", "0") as proc:
        port = int(proc.wait_for(re.compile(r"ws://127.0.0.1:(\\d+)"), 10).group(1))
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["REPO", "ChildProcess", "PythonProcess"]

REPO = Path(__file__).resolve().parent.parent


class ChildProcess:
    """A child with its merged output collected; :meth:`stop` is Ctrl-C, leaving the block kills it."""

    def __init__(self, argv: list[str], cwd: Path = REPO) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCAST_")}
        env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        self._more = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._more:
                self.output.append(line.rstrip("\n"))
                self._more.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first line so far or to come that matches ``pattern``; AssertionError after ``timeout``."""
        def found() -> re.Match[str] | None:
            return next((m for m in map(pattern.search, self.output) if m), None)

        with self._more:
            self._more.wait_for(lambda: found() is not None or self.proc.poll() is not None, timeout=timeout)
            match = found()
        if match is None:
            raise AssertionError(f"{self.proc.args} did not print {pattern.pattern!r} within {timeout} s "
                                 f"(exit code {self.proc.poll()}); its output:\n" + "\n".join(self.output[-30:]))
        return match

    def stop(self, timeout: float = 10.0) -> int:
        """Ctrl-C (SIGINT) and wait for the exit code; kill if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
                raise AssertionError(f"{self.proc.args} ignored Ctrl-C for {timeout} s") from None
        self._reader.join(timeout)
        return self.proc.returncode

    def text(self) -> str:
        """Everything printed so far."""
        with self._more:
            return "\n".join(self.output)

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(5)


class PythonProcess(ChildProcess):
    """``python -m MODULE ARGS`` from the repository root."""

    def __init__(self, module: str, *args: str) -> None:
        super().__init__([sys.executable, "-m", module, *args])

"""How a node's output looks: ``--log-format text`` (the default) or ``json``.

::

    configure_logging("INFO", "json")
    logging.getLogger("actors.node").info("client refused", extra={"app_id": "1", "code": 4001})
    # {"time": "2024-05-01T12:00:00.123Z", "level": "INFO", "logger": "actors.node",
    #  "message": "client refused", "app_id": "1", "code": 4001}

JSON is one object per line, with ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``message`` and the record's ``extra=`` fields (a traceback goes
in ``exception``, still on the one line), so a log collector never has to
guess where a record ends. Workers add ``worker`` (their number).

Other libraries' loggers (pykka, gevent, redis, urllib3, ...) are held at
WARNING unless the level is DEBUG: at INFO the log says what the node does,
not what its libraries chatter about.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

import gevent.hub

__all__ = ["JsonFormatter", "configure_logging"]

#: Our loggers: everything else is a library, held at WARNING below DEBUG.
OURS = ("actors", "transport", "actorcast", "examples", "perf", "__main__")

# What every LogRecord carries; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _ours(name: str) -> bool:
    return any(name == mine or name.startswith(mine + ".") for mine in OURS)


class _Libraries(logging.Filter):
    """Lets a library's record through only at WARNING or above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or _ours(record.name)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the extra fields (and ``worker``)."""

    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        # The four keys first (a reader scanning lines finds them in one place), then the record's own.
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update((key, value) for key, value in vars(record).items() if key not in _STANDARD and key not in out)
        if self.worker is not None:
            out["worker"] = self.worker
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text", *, worker: str | None = None,
                      stream: TextIO | None = None) -> None:
    """Send every record to ``stream`` (stderr) at ``level``, as ``fmt`` (``text`` or ``json``).

    Replaces whatever handlers the root logger had. ``worker``: this process
    is worker N of a supervisor (its lines say so).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        who = f"worker-{worker} " if worker is not None else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s"))
    numeric = logging.getLevelName(level.upper())
    if numeric != logging.DEBUG:
        handler.addFilter(_Libraries())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)  # warnings.warn(...) becomes a record (one line), not raw stderr
    if fmt == "json":
        # An exception nobody caught is logged as one record too, not printed as a raw traceback:
        # in the main thread, in other threads, and in a greenlet (gevent's hub prints those itself).
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_thread_uncaught
        gevent.hub.Hub.print_exception = _log_hub_error


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("actorcast").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_hub_error(hub: Any, context: Any, kind: Any, value: Any, tb: Any) -> None:
    """In place of gevent's ``Hub.print_exception``: a greenlet or callback that raised, as one ERROR record."""
    if context is None:
        where = "the gevent hub"
    elif isinstance(context, str):
        where = context
    else:
        try:
            where = hub.format_context(context)
        except Exception:  # naming the context must not hide the error itself
            where = repr(context)
    error = (kind, value, tb) if isinstance(value, BaseException) else None
    logging.getLogger("actorcast").error("%s failed with %s", where, getattr(kind, "__name__", kind), exc_info=error)


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)  # typeshed: the value may be None (logging copes)
    logging.getLogger("actorcast").critical("uncaught exception in thread %s", name, exc_info=exc_info)  # type: ignore[arg-type]

"""``actors.logs.configure_logging``: the text and JSON formats, and libraries held at WARNING."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import warnings

import gevent
import gevent.hub
import pytest

from actors.logs import configure_logging


@pytest.fixture
def stream():
    """Logging configured into a buffer for the test; the root logger restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.excepthook, threading.excepthook, gevent.hub.Hub.print_exception)
    buffer = io.StringIO()
    yield buffer
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    sys.excepthook, threading.excepthook, gevent.hub.Hub.print_exception = saved[2], saved[3], saved[4]
    logging.captureWarnings(False)


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_json_is_one_object_per_line_with_the_extra_fields(stream):
    configure_logging("INFO", "json", stream=stream)
    logging.getLogger("actors.node").info("refused %s", "a client", extra={"app_id": "1", "code": 4001})
    (line,) = lines(stream)
    record = json.loads(line)
    assert record["level"] == "INFO" and record["logger"] == "actors.node"
    assert record["message"] == "refused a client"
    assert (record["app_id"], record["code"]) == ("1", 4001)
    assert record["time"].endswith("Z") and "T" in record["time"]


def test_json_lines_start_with_time_level_logger_message_then_the_record_s_fields(stream):
    configure_logging("INFO", "json", stream=stream)
    logging.getLogger("actors.node").info("refused", extra={"code": 4001, "level": "not this one"})
    record = json.loads(lines(stream)[0])
    assert list(record) == ["time", "level", "logger", "message", "code"] and record["level"] == "INFO"


def test_a_greenlet_that_dies_of_a_bug_is_one_json_error_line(stream):
    configure_logging("INFO", "json", stream=stream)
    greenlet = gevent.spawn(lambda: 1 / 0)
    greenlet.join(timeout=5)
    (line,) = lines(stream)
    record = json.loads(line)
    assert record["level"] == "ERROR" and "failed with ZeroDivisionError" in record["message"]
    assert "ZeroDivisionError: division by zero" in record["exception"]


def test_a_traceback_stays_on_its_one_json_line(stream):
    configure_logging("INFO", "json", worker="2", stream=stream)
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("actorcast").exception("it broke")
    (line,) = lines(stream)
    record = json.loads(line)
    assert record["worker"] == "2" and "ValueError: boom" in record["exception"]


def test_libraries_are_held_at_warning_unless_debug(stream):
    configure_logging("INFO", "text", stream=stream)
    logging.getLogger("pykka").info("actor chatter")
    logging.getLogger("gevent.hub").info("hub chatter")
    logging.getLogger("redis.connection").warning("redis is away")
    logging.getLogger("actors.cluster").info("node joined")
    said = stream.getvalue()
    assert "chatter" not in said and "redis is away" in said and "node joined" in said
    configure_logging("DEBUG", "text", stream=stream)
    logging.getLogger("pykka").debug("actor detail")
    assert "actor detail" in stream.getvalue()


def test_text_lines_keep_their_shape_and_workers_say_their_number(stream):
    configure_logging("WARNING", "text", worker="3", stream=stream)
    logging.getLogger("actors.node").info("hidden")
    logging.getLogger("actors.node").warning("shown")
    (line,) = lines(stream)
    assert line.endswith(" WARNING worker-3 actors.node: shown")


def test_warnings_become_records(stream):
    configure_logging("INFO", "json", stream=stream)
    warnings.warn("old API", DeprecationWarning, stacklevel=1)
    (line,) = lines(stream)
    assert json.loads(line)["logger"] == "py.warnings" and "old API" in json.loads(line)["message"]

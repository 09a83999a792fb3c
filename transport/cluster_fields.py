"""Field checks of the cluster message decoder (``transport.cluster.decode``).

Pure code. A :class:`Checker` holds the checks for one message; each check
returns the value when it is of the declared type (valid Unicode, no NaN or
Infinity, ...) and raises :class:`~transport.errors.ProtocolError` otherwise.
:data:`FIELD_CHECKS` names the check of each field (plain strings otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import ProtocolError
from .text import has_lone_surrogate, json_problem
from .webhook_ledger import check_finished, check_queued

__all__ = ["FIELD_CHECKS", "Check", "Checker"]


class Checker:
    """Field checks for one message; ``escaped`` says whether deep Unicode checks are needed."""

    def __init__(self, kind: str, escaped: bool) -> None:
        self.kind = kind
        self.escaped = escaped

    def fail(self, name: str, what: str) -> ProtocolError:
        return ProtocolError(None, f"Cluster message {self.kind!r}: {name!r} {what}")

    def text(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(name, "must be a string")
        # Valid UTF-8 holds a lone surrogate only through a \u escape.
        if self.escaped and has_lone_surrogate(value):
            raise self.fail(name, "holds a lone surrogate")
        return value

    def origin(self, name: str, value: Any) -> str:
        if not self.text(name, value):
            raise self.fail(name, "must not be empty")
        return value

    def optional_text(self, name: str, value: Any) -> str | None:
        return None if value is None else self.text(name, value)

    def flag(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false")
        return value

    def integer(self, name: str, value: Any) -> int:
        # bool is an int in Python but not in the protocol.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(name, "must be an integer")
        return value

    def json(self, name: str, value: Any) -> Any:
        problem = json_problem(value, surrogates=self.escaped)
        if problem is not None:
            raise self.fail(name, f"holds {problem}")
        return value

    def obj(self, name: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(name, "must be an object")
        # Keys are strings (JSON allows nothing else); the check covers them too.
        return self.json(name, value)

    def frames(self, name: str, value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, list):
            raise self.fail(name, "must be a list of [channel, event] pairs")
        pairs = []
        for pair in value:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise self.fail(name, "must be a list of [channel, event] pairs")
            pairs.append((self.text(name, pair[0]), self.text(name, pair[1])))
        return tuple(pairs)

    def counts(self, name: str, value: Any) -> dict[str, int]:
        if not isinstance(value, dict):
            raise self.fail(name, "must be an object of channels")
        for channel, count in value.items():
            self.text(name, channel)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise self.fail(name, "must map each channel to a count (an integer >= 0)")
        return value

    def members(self, name: str, value: Any) -> dict[str, dict[str, Any]]:
        if not isinstance(value, dict):
            raise self.fail(name, "must be an object of channels")
        for users in value.values():
            if not isinstance(users, dict):
                raise self.fail(name, "must map each channel to an object of users")
        return self.json(name, value)


Check = Callable[[Checker, str, Any], Any]

#: Field name -> how to check it (fields not listed here are plain strings).
FIELD_CHECKS: dict[str, Check] = {
    "origin": Checker.origin,
    "frames": Checker.frames,
    "except_socket_id": Checker.optional_text,
    "user_info": Checker.json,
    "joined": Checker.flag,
    "occupied": Checker.flag,
    "snapshot": Checker.flag,
    "ask": Checker.flag,
    "counts": Checker.counts,
    "seq": Checker.integer,
    "members": Checker.members,
    "params": Checker.obj,
    "value": Checker.json,
    "queued": check_queued,
    "finished": check_finished,
}

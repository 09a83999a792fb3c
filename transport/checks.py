"""Setting checks: what a value may be, and what is wrong when it is not.

Pure code. A :class:`Rule` says what one setting accepts, as JSON (a config
file, ``App(...)``) and as text (a flag, an environment variable); a check
that fails gives a :class:`Problem`, which knows where it is (a key path)
and renders itself for whoever reported the value::

    >>> rule = switch()
    >>> rule.check(("apps", 0, "enabled"), "false").render("apps.json: ")
    'apps.json: apps[0].enabled must be true or false, not "false"'
    >>> rule.read(("ACTORCAST_APP_ENABLED",), "0")
    (False, None)

Problems are collected, never raised one by one, so a config with three
mistakes is reported with all three.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .text import has_lone_surrogate

__all__ = ["MISSING", "Path", "Problem", "Rule", "choice", "integer", "number", "shown", "string", "switch"]

#: A key path: ``("apps", 0, "enabled")`` is ``apps[0].enabled``.
Path = tuple[str | int, ...]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: No value (a problem about a key, not about what it holds).
MISSING: Any = _Missing()

_SHOWN_CHARS = 60  # a bad value is quoted up to this many characters


def dotted(path: Path) -> str:
    """``("apps", 0, "enabled")`` as ``apps[0].enabled``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def shown(value: Any) -> str:
    """A value as its JSON text (what a config file or a variable said), cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one setting: where it is, and what it may be (or a ``note``)."""

    path: Path
    allowed: str = ""
    value: Any = MISSING  # MISSING: the key is missing
    note: str = ""  # instead of "must be ...": e.g. "unknown app setting; known: ..."

    def under(self, *prefix: str | int) -> Problem:
        """The same problem one level deeper: ``under("apps", 0)``."""
        return Problem((*prefix, *self.path), self.allowed, self.value, self.note)

    def render(self, where: str = "") -> str:
        """The one line an operator reads: ``where`` names the file (``"apps.json: "``) if any."""
        if self.note:
            return f"{where}{dotted(self.path)}: {self.note}"
        if self.value is MISSING:
            return f"{where}{dotted(self.path)} is missing (it must be {self.allowed})"
        return f"{where}{dotted(self.path)} must be {self.allowed}, not {shown(self.value)}"

    def render_code(self) -> str:
        """As Python code hears it (``App(...)``): ``webhooks[0]: 'url' must be a non-empty string``."""
        cut = len(self.path)
        while cut > 1 and isinstance(self.path[cut - 1], int):
            cut -= 1  # the name with its indexes: 'webhooks[0]'
        head, leaf = self.path[: cut - 1], self.path[cut - 1 :]
        where = f"{dotted(head)}: " if head else ""
        if self.note:
            return f"{where}'{dotted(leaf)}': {self.note}"
        told = " (it is missing)" if self.value is MISSING else f", not {self.value!r}"
        return f"{where}'{dotted(leaf)}' must be {self.allowed}{told}"


def _no_text(text: str) -> Any:
    raise ValueError("this setting cannot be given as text")


@dataclass(frozen=True)
class Rule:
    """What one setting accepts: ``ok`` for a JSON value, ``parse`` for text (flags, environment).

    ``allowed`` finishes the sentence "... must be"; ``text_allowed`` does so
    for text when it differs (a switch says ``true, false, 1 or 0``).
    """

    allowed: str
    ok: Callable[[Any], bool]
    parse: Callable[[str], Any] = _no_text
    text_allowed: str = ""
    normal: Callable[[Any], Any] = field(default=lambda value: value)  # e.g. "INFO" for "info"

    def check(self, path: Path, value: Any) -> Problem | None:
        """None if ``value`` (from JSON or code) is acceptable, else the problem."""
        return None if self.ok(value) else Problem(path, self.allowed, value)

    def read(self, path: Path, text: str) -> tuple[Any, Problem | None]:
        """``(value, None)`` for text a flag or variable gave, or ``(MISSING, problem)``."""
        try:
            value = self.parse(text)
        except ValueError:
            value = MISSING
        if value is MISSING or not self.ok(value):
            return MISSING, Problem(path, self.text_allowed or self.allowed, text)
        return self.normal(value), None

    def value(self, value: Any) -> Any:
        """A checked value in its normal form."""
        return self.normal(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _clean(text: str) -> bool:
    # A lone surrogate ("\\ud800" in JSON) has no UTF-8 form: it would fail far from the config.
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) and not has_lone_surrogate(text)


def switch() -> Rule:
    """JSON ``true``/``false`` only (never the string ``"false"``); as text: true, false, 1 or 0."""

    def parse(text: str) -> bool:
        said = text.strip().lower()
        if said in ("true", "1"):
            return True
        if said in ("false", "0"):
            return False
        raise ValueError(text)

    return Rule("true or false", lambda v: isinstance(v, bool), parse, "true, false, 1 or 0")


def _range_words(low: float | None, high: float | None, kind: str) -> str:
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low == 1 and kind == "an integer":
        return "a positive integer"
    return f"{kind} of at least {low}" if low is not None else kind


def integer(low: int | None = 1, high: int | None = None, *, null: bool = False, allowed: str = "") -> Rule:
    """An integer in ``[low, high]`` (``null``: JSON null too, read as None)."""

    def ok(value: Any) -> bool:
        if value is None:
            return null
        return _is_int(value) and (low is None or value >= low) and (high is None or value <= high)

    words = allowed or _range_words(low, high, "an integer") + (" or null" if null else "")
    return Rule(words, ok, lambda text: int(text.strip(), 10), allowed or _range_words(low, high, "an integer"))


def number(low: float | None = None, high: float | None = None, *, positive: bool = False) -> Rule:
    """A finite number (integer or not) in ``[low, high]``, or above 0 when ``positive``."""

    def ok(value: Any) -> bool:
        if not _is_number(value):
            return False
        return (value > 0 if positive else True) and (low is None or value >= low) and (high is None or value <= high)

    def parse(text: str) -> float:
        value = float(text.strip())
        if not math.isfinite(value):
            raise ValueError(text)
        return value

    words = "a positive number" if positive and low is None and high is None else _range_words(low, high, "a number")
    return Rule(words, ok, parse)


def string(*, empty: bool = False, null: bool = False, allowed: str = "") -> Rule:
    """A string without control characters (non-empty unless ``empty``; ``null``: None too)."""

    def ok(value: Any) -> bool:
        if value is None:
            return null
        return isinstance(value, str) and (empty or bool(value)) and _clean(value)

    words = allowed or ("a string" if empty else "a non-empty string") + " without control characters"
    return Rule(words + (" or null" if null and not allowed else ""), ok, lambda text: text, words)


def choice(options: Iterable[str], *, upper: bool = False) -> Rule:
    """One of ``options`` (any case); kept in upper or lower case."""
    names = tuple(options)
    words = "one of " + ", ".join(names)

    def ok(value: Any) -> bool:
        return isinstance(value, str) and value.strip().lower() in names

    def normal(value: str) -> str:
        return value.strip().upper() if upper else value.strip().lower()

    return Rule(words, ok, lambda text: text, normal=normal)

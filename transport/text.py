"""Is this network text safe to carry on? Pure checks for strings and JSON values.

A JSON ``"\\ud800"`` escape is legal JSON, and ujson turns it into a Python
``str`` holding a *lone surrogate*: a code point that has no UTF-8 form, so
the first ``encode("utf-8")`` (an HMAC, a WebSocket frame) raises
``UnicodeEncodeError`` far from where the text came in. NaN and Infinity are
the other values ujson accepts that JSON cannot carry back out. The parsers
in ``transport/`` use these checks at the edge and turn a problem into the
error the protocol prescribes, so no actor ever holds such a value.

Keeping it cheap: text that arrived as valid UTF-8 can only hold a lone
surrogate if it went through a ``\\u`` escape, so :func:`has_unicode_escape`
on the raw text tells whether the (slower) deep checks are needed at all.
Valid surrogate *pairs* (``"\\ud83d\\ude00"``) are joined by ujson into one
code point and pass.

::

    >>> has_lone_surrogate("evt\\ud800")
    True
    >>> json_problem({"x": [1.5, float("nan")]})
    'NaN or Infinity'
    >>> printable("evt\\ud800")
    'evt\\\\ud800'
"""

from __future__ import annotations

import math
import re
from typing import Any

import ujson

__all__ = [
    "LONE_SURROGATE",
    "NOT_FINITE",
    "decode_utf8",
    "has_lone_surrogate",
    "has_unicode_escape",
    "json_problem",
    "printable",
]

# Text from UTF-8 or from JSON never holds a surrogate pair (ujson joins an
# escaped pair into one code point), so any code point in this range is lone.
_SURROGATE = re.compile(r"[\ud800-\udfff]")

#: What :func:`json_problem` answers for each kind of problem.
LONE_SURROGATE = "a lone surrogate (a \\ud800-\\udfff escape that is not half of a pair)"
NOT_FINITE = "NaN or Infinity"


def has_unicode_escape(raw: str | bytes) -> bool:
    """True if raw JSON text holds a ``\\u`` escape, the only way to a lone surrogate."""
    if isinstance(raw, (bytes, bytearray)):
        return b"\\u" in raw
    return "\\u" in raw


def has_lone_surrogate(text: str) -> bool:
    """True if ``text`` holds a code point UTF-8 cannot encode (U+D800 to U+DFFF)."""
    # ASCII text (most of it) is answered without a scan.
    return not text.isascii() and _SURROGATE.search(text) is not None


def decode_utf8(raw: bytes | bytearray) -> str | None:
    """``raw`` as text, or None when it is not valid UTF-8.

    Strict decoding also refuses UTF-8-like encodings of surrogates
    (``b"\\xed\\xa0\\x80"``), which ujson would otherwise accept from bytes.
    """
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def json_problem(value: Any, *, surrogates: bool = True) -> str | None:
    """Why ``value`` cannot be sent on as standard JSON text, or None if it can.

    Refuses NaN and Infinity anywhere in it and, when ``surrogates`` is true,
    lone surrogates in any string or key. Pass ``surrogates=False`` when the
    raw text had no ``\\u`` escape (see :func:`has_unicode_escape`).
    """
    if isinstance(value, str):
        return LONE_SURROGATE if surrogates and has_lone_surrogate(value) else None
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else NOT_FINITE
    try:
        # One encode in C walks every nested value faster than Python could.
        encoded = ujson.dumps(value, ensure_ascii=False, allow_nan=False)
    except OverflowError:
        return NOT_FINITE
    except (TypeError, ValueError):
        return "a value JSON cannot carry"
    return LONE_SURROGATE if surrogates and has_lone_surrogate(encoded) else None


def printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udXXX``, so it can be encoded.

    For error messages that quote what a client sent.
    """
    if not has_lone_surrogate(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")

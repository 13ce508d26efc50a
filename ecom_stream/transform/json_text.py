"""JSON text to Python values as the lake reads them: orjson first, the standard parser
(with hooks) for what orjson refuses; nesting depth and type names for error messages."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import orjson

__all__ = ["json_type", "loads", "nesting_depth", "too_deep"]

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def nesting_depth(data: bytes) -> int:
    """Deepest bracket nesting of valid JSON text, brackets inside strings not counted.

    Vectorised (a C-level translate keeps only quotes and brackets, a few per record): a
    per-record walk in Python costs more than parsing the file.
    """
    if b"\\" in data:
        # Drop escape pairs (\\ first, so the quote of \\" is kept): no quote is escaped after.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = np.frombuffer(data.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    quotes = kept == ord('"')
    outside = (np.cumsum(quotes) % 2 == 0) & ~quotes  # an odd count of quotes so far: in a string
    brackets = kept[outside]
    if not len(brackets):
        return 0
    opening = (brackets == ord("[")) | (brackets == ord("{"))
    return int(np.cumsum(np.where(opening, 1, -1), dtype=np.int64).max())


def loads(text: str) -> Any:
    """Parse with orjson (about twice as fast); only when it refuses the text, parse again
    with the standard parser, which accepts what orjson cannot hold (see ``_slow_loads``)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _slow_loads(text, exc.pos)


# A JSON string, or a bare NaN/Infinity token outside strings (group 1).
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)')


class _Constant(Exception):
    """A bare NaN/Infinity token: not JSON (raised from the standard parser's hook)."""


def _constant(token: str) -> Any:
    raise _Constant(token)


def _big_int(literal: str) -> int | float | str:
    """Integers as orjson reads them (int64 .. uint64 as int, beyond that a float), so a
    value reads the same whichever parser read its file; beyond double range the literal."""
    if len(literal) <= 20:
        value = int(literal)
        if -(2**63) <= value < 2**64:
            return value
    return _big_float(literal)


def _big_float(literal: str) -> float | str:
    """A float, or the literal's text when it is beyond double range (orjson refuses it):
    a plain-number string to the cleaning rules, so the row, not the file, is rejected."""
    value = float(literal)
    return value if math.isfinite(value) else literal


def _slow_loads(text: str, fast_pos: int = 0) -> Any:
    """The standard parser with hooks: numbers of any size parse (RFC 8259 sets no range),
    bare NaN/Infinity and lone surrogates are refused like orjson does, and every error
    names the real line and column (orjson's first error may be a number we accept)."""
    try:
        value = json.loads(
            text, parse_int=_big_int, parse_float=_big_float, parse_constant=_constant
        )
    except json.JSONDecodeError:
        raise
    except _Constant as exc:
        pos = next((m.start(1) for m in _TOKENS.finditer(text) if m.group(1)), 0)
        raise json.JSONDecodeError(
            f"NaN or Infinity is not valid JSON (found {exc.args[0]}; "
            "write null for a missing number)", text, pos,
        ) from None
    except RecursionError:
        # orjson stopped at its depth limit there, where the standard parser gave up too.
        raise json.JSONDecodeError("nested too deeply to parse", text, fast_pos) from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise json.JSONDecodeError(
            "a string holds a lone surrogate escape (\\ud800-\\udfff without its pair): "
            "not valid Unicode", text, _surrogate_position(text),
        ) from None
    return value


def _surrogate_position(text: str) -> int:
    """Start of the first string token holding a lone surrogate (0 if none is found)."""
    for m in _TOKENS.finditer(text):
        if m.group(1) is None:
            try:
                json.loads(m.group(0)).encode("utf-8")
            except UnicodeEncodeError:
                return m.start()
    return 0


def too_deep(value: Any, max_depth: int) -> bool:
    """Whether the value nests deeper than ``max_depth`` levels (an object of scalars: 1)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def json_type(value: Any) -> str:
    """The JSON type of a value with its article: 'an object', 'a number', 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"

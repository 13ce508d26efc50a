"""What a landing file's name says: ignore it, read it as a batch (which entity, which
format) or quarantine it, and how to show the name on one line."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "JSON_SUFFIXES",
    "LINES_SUFFIXES",
    "MAX_NAME_BYTES",
    "TEMP_SUFFIXES",
    "FileKind",
    "classify",
    "display_name",
    "name_problem",
]

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".swp", ".crdownload")
JSON_SUFFIXES = (".json",)
LINES_SUFFIXES = (".jsonl", ".ndjson")
# Longest file name taken in (bytes): the lake stores files under it with suffixes of up to
# about 40 bytes (".reason.json", a temporary ".<pid>.tmp", a batch id to tell copies apart),
# and a name may have at most 255 bytes.
MAX_NAME_BYTES = 200
# Characters that would split a log line or a listing: controls and line separators.
_LINE_BREAKING = ("Cc", "Zl", "Zp")


@dataclass(frozen=True)
class FileKind:
    """What a directory entry's name says about it."""

    action: Literal["ignore", "batch", "quarantine"]
    entity: str | None = None
    fmt: Literal["array", "lines"] | None = None
    reason: str | None = None


def name_problem(name: str) -> str | None:
    """Why the lake cannot keep and name a file by this name (None: it can)."""
    raw = os.fsencode(name)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"file name is not UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start})"
    if not name.isprintable() and any(
        unicodedata.category(c) in _LINE_BREAKING for c in name
    ):
        return "file name holds a control character (a line break, a tab, ...)"
    if len(raw) > MAX_NAME_BYTES:
        return f"file name is {len(raw)} bytes long, more than the {MAX_NAME_BYTES} allowed"
    return None


def display_name(name: str) -> str:
    """The name as valid UTF-8 on one line: undecodable bytes and control characters are
    written as escapes (``orders-\\xff.json``, ``orders-\\n.json``); other names unchanged."""
    if name.isascii() and name.isprintable():
        return name
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in _LINE_BREAKING
        else c
        for c in text
    )


def classify(name: str) -> FileKind:
    """Decide from the file name alone whether to ignore, read or quarantine it."""
    lower = name.lower()
    if name.startswith(".") or lower.endswith(TEMP_SUFFIXES) or lower.endswith("~"):
        return FileKind("ignore")
    if lower.endswith(".reason.json") or lower.endswith(".gx.json"):
        return FileKind("ignore")
    entity = (
        "products"
        if lower.startswith("products")
        else "orders"
        if lower.startswith("orders")
        else None
    )
    problem = name_problem(name)
    if problem is not None:
        return FileKind("quarantine", entity, reason=f"{problem}: rename the file")
    if entity is None:
        return FileKind(
            "quarantine",
            reason="unknown entity in the file name: it must start with 'products' or 'orders'",
        )
    if lower.endswith(JSON_SUFFIXES):
        return FileKind("batch", entity, "array")
    if lower.endswith(LINES_SUFFIXES):
        return FileKind("batch", entity, "lines")
    return FileKind(
        "quarantine",
        entity,
        reason="unsupported extension: use .json (an array of objects) "
        "or .jsonl/.ndjson (one object a line)",
    )

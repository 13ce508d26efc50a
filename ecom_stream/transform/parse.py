"""Turns one batch file into records and its batch id; ``BatchReadError`` says why it can't."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from ecom_stream.errors import BatchReadError

__all__ = [
    "FileKind",
    "RawBatch",
    "batch_id_of",
    "canonical_json",
    "classify",
    "display_name",
    "name_problem",
    "read_batch",
    "row_hash",
]

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".swp", ".crdownload")
JSON_SUFFIXES = (".json",)
LINES_SUFFIXES = (".jsonl", ".ndjson")
_BOM = b"\xef\xbb\xbf"
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


@dataclass
class RawBatch:
    """One readable batch file."""

    path: Path
    name: str
    entity: str
    batch_id: str
    size: int
    records: list[dict[str, Any]]


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


def batch_id_of(data: bytes) -> str:
    """A batch is identified by the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def canonical_json(record: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same record always gives the same bytes.

    orjson does this about five times faster than ``json.dumps(sort_keys=True)``, and hashing
    every row is on the hot path of a backfill.
    """
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits (the parser never makes one; a caller may)
        return json.dumps(
            record, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()


def row_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON (independent of file and arrival)."""
    return row_hashes([record])[0]


def row_hashes(records: Sequence[dict[str, Any]]) -> list[str]:
    """``row_hash`` of every record: SHA-256 of ``canonical_json``, inlined (no Python call
    per row: hashing every row is on the hot path of a backfill)."""
    dumps, sort_keys, sha256 = orjson.dumps, orjson.OPT_SORT_KEYS, hashlib.sha256
    try:
        return [sha256(dumps(r, option=sort_keys)).hexdigest() for r in records]
    except TypeError:
        return [sha256(canonical_json(r)).hexdigest() for r in records]


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; symlinks, non-regular files and oversized files raise (an empty file
    is read: its bytes, none, are quarantined like any unparseable content)."""
    try:
        return _read_bytes(path, max_bytes)
    except (FileNotFoundError, BatchReadError):
        raise
    except OSError as exc:
        raise BatchReadError(
            f"cannot read the file: {exc.strerror or exc}; check its permissions"
        ) from None


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise BatchReadError(
            "symbolic link: links are never followed; copy the file itself instead"
        )
    if not stat.S_ISREG(st.st_mode):
        what = (
            "a named pipe (FIFO)"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
        )
        raise BatchReadError(
            f"not a regular file but {what}: it is never opened; write the batch as a file"
        )
    if st.st_size > max_bytes:
        raise BatchReadError(
            f"file is {st.st_size:,} bytes, larger than the limit of {max_bytes:,} "
            "(ECOM_MAX_FILE_BYTES); split it into smaller batches"
        )
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BatchReadError(f"file grew past the limit of {max_bytes:,} bytes while being read")
    return data


def parse_records(data: bytes, fmt: str, max_depth: int) -> list[dict[str, Any]]:
    """Decode and parse the batch; every element must be a JSON object."""
    if not data:
        raise BatchReadError("empty file (0 bytes)")
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchReadError(
            f"not UTF-8: invalid byte 0x{data[exc.start]:02x} at offset {exc.start}; "
            "re-encode the file as UTF-8"
        ) from None
    if not text.strip():
        raise BatchReadError("empty file (only white space)")
    records = _parse_array(text) if fmt == "array" else _parse_lines(text)
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            raise BatchReadError(
                f"element {i} is {_json_type(rec)}, not an object: a batch is an array of objects"
            )
    # The file's nesting is the deepest record's (plus one for an array): only a file that
    # may hold a too deep record pays for the per-record walk that names it.
    if _nesting_depth(data) > max_depth:
        for i, rec in enumerate(records):
            if _too_deep(rec, max_depth):
                raise BatchReadError(f"element {i} is nested deeper than {max_depth} levels")
    return records


_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def _nesting_depth(data: bytes) -> int:
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


def read_batch(path: Path, kind: FileKind, *, max_bytes: int, max_depth: int) -> RawBatch:
    """Read and parse one batch file (``kind`` from :func:`classify`)."""
    data = read_bytes(path, max_bytes)
    records = parse_records(data, kind.fmt or "array", max_depth)
    return RawBatch(path, path.name, kind.entity or "", batch_id_of(data), len(data), records)


def _loads(text: str) -> Any:
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


def _parse_array(text: str) -> list[Any]:
    try:
        value = _loads(text)
    except json.JSONDecodeError as exc:
        raise BatchReadError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(value, list):
        raise BatchReadError(
            f"top level is {_json_type(value)}, not an array: write [ {{...}}, {{...}} ] "
            "or use .jsonl with one object a line"
        )
    return value


def line_chunks(data: bytes, max_rows: int) -> list[tuple[int, int, int]]:
    """A JSON Lines file's bytes cut at line ends into pieces of at most ``max_rows`` lines,
    as (start, end, first line number); one piece when the file has no more lines than that.
    The newlines are found in one vectorised scan (no per-line objects: memory)."""
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    cuts = [0, *(int(e) + 1 for e in ends[max_rows - 1 :: max_rows] if e + 1 < len(data))]
    bounds = [*cuts, len(data)]
    return [(bounds[i], bounds[i + 1], i * max_rows + 1) for i in range(len(cuts))]


# Bytes a JSON array's scan for element boundaries looks at a time (bounds its memory).
_SCAN_BLOCK = 8 * 1024 * 1024
_SCAN_TABLE = np.zeros(256, dtype=bool)
_SCAN_TABLE[list(b'[]{}",')] = True


def array_chunks(data: bytes, max_rows: int) -> list[tuple[int, int, int]] | None:
    """A JSON array's bytes cut between top-level elements into pieces of at most
    ``max_rows`` elements, as (start, end, first element number): each piece parses as
    ``b"[" + data[start:end] + b"]"``. None when the file holds no more elements than that
    or is not one well-formed array (it is then parsed whole, which names its error).

    The top-level commas are found by a vectorised scan of 8 MB blocks (quotes, brackets
    and commas; escape pairs blanked out at equal length), so no per-element object is made.
    """
    n = len(data)
    begin = len(_BOM) if data.startswith(_BOM) else 0
    if not data[begin : begin + 64].lstrip().startswith(b"[") or not data[-64:].rstrip(
    ).endswith(b"]"):
        return None
    commas: list[np.ndarray] = []
    inside, depth, pos = 0, 0, begin
    while pos < n:
        end = min(pos + _SCAN_BLOCK, n)
        while end < n and data[end - 1] == 0x5C:  # never split an escape pair
            end += 1
        block = data[pos:end]
        if b"\\" in block:
            block = block.replace(b"\\\\", b"__").replace(b'\\"', b"__")
        arr = np.frombuffer(block, dtype=np.uint8)
        idx = np.flatnonzero(_SCAN_TABLE[arr])
        chars = arr[idx]
        quotes = chars == 0x22
        parity = (np.cumsum(quotes) + inside) % 2
        if len(parity):
            inside = int(parity[-1])
        outside = (parity == 0) & ~quotes
        idx, chars = idx[outside], chars[outside]
        step = np.where((chars == 0x5B) | (chars == 0x7B), 1, 0) - np.where(
            (chars == 0x5D) | (chars == 0x7D), 1, 0
        )
        levels = np.cumsum(step) + depth
        closed = np.flatnonzero(levels <= 0)
        # Only the file's last bracket may close the array.
        if len(closed) and not (end >= n and closed.tolist() == [len(levels) - 1]):
            return None
        if len(levels):
            depth = int(levels[-1])
        commas.append(idx[(chars == 0x2C) & (levels == 1)] + pos)
        pos = end
    if depth != 0 or inside:
        return None
    cuts = np.concatenate(commas) if commas else np.empty(0, np.int64)
    if len(cuts) < max_rows:
        return None
    bounds = cuts[max_rows - 1 :: max_rows].tolist()
    starts = [data.index(b"[", begin) + 1, *(c + 1 for c in bounds)]
    ends = [*bounds, data.rindex(b"]")]
    return [(a, b, i * max_rows) for i, (a, b) in enumerate(zip(starts, ends, strict=True))]


def parse_array_piece(
    data: bytes, start: int, end: int, first_index: int, max_depth: int
) -> list[dict[str, Any]]:
    """Parse one piece of a JSON array (see ``array_chunks``) as ``parse_records`` parses
    the whole file; on an error the whole file is parsed, so that its message names the
    file's line and column."""
    piece = b"[" + data[start:end] + b"]"
    try:
        text = piece.decode("utf-8")
        records = _parse_array(text)
        _check_piece(records, piece, first_index, max_depth)
    except (UnicodeDecodeError, BatchReadError) as exc:
        del piece
        parse_records(data, "array", max_depth)  # raises with the file's own message
        raise BatchReadError(getattr(exc, "reason", str(exc))) from None
    return records


def parse_lines_piece(
    data: bytes, start: int, end: int, first_line: int, first_index: int, max_depth: int
) -> list[dict[str, Any]]:
    """Parse one piece of a JSON Lines file (see ``line_chunks``) as ``parse_records`` parses
    the whole file: errors name the file's line, byte offset and element number."""
    piece = data[start:end]
    if start == 0 and piece.startswith(_BOM):
        piece, start = piece[len(_BOM) :], len(_BOM)
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchReadError(
            f"not UTF-8: invalid byte 0x{piece[exc.start]:02x} at offset {start + exc.start}; "
            "re-encode the file as UTF-8"
        ) from None
    records = _parse_lines(text, first_line)
    _check_piece(records, piece, first_index, max_depth)
    return records


def _check_piece(records: list[Any], piece: bytes, first_index: int, max_depth: int) -> None:
    """Every element of a piece is an object nested at most ``max_depth`` levels."""
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            raise BatchReadError(
                f"element {first_index + i} is {_json_type(rec)}, not an object: "
                "a batch is an array of objects"
            )
    if _nesting_depth(piece) > max_depth:
        for i, rec in enumerate(records):
            if _too_deep(rec, max_depth):
                raise BatchReadError(
                    f"element {first_index + i} is nested deeper than {max_depth} levels"
                )


def _parse_lines(text: str, first_line: int = 1) -> list[Any]:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=first_line):
        if not line.strip():
            continue
        try:
            records.append(_loads(line))
        except json.JSONDecodeError as exc:
            raise BatchReadError(
                f"invalid JSON Lines at line {lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    return records


def _too_deep(value: Any, max_depth: int) -> bool:
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


def _json_type(value: Any) -> str:
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

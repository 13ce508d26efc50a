"""Turns one batch file into records and its batch id; ``BatchReadError`` says why it can't.

Big files are cut into pieces (``line_chunks``, ``array_chunks``) parsed one at a time. What
a file's name says lives in ``names`` and the JSON decoding in ``json_text``; the names of
``names`` are re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ecom_stream.errors import BatchReadError
from ecom_stream.transform.json_text import json_type, loads, nesting_depth, too_deep
from ecom_stream.transform.names import (
    LINES_SUFFIXES,
    FileKind,
    classify,
    display_name,
    name_problem,
)

__all__ = [
    "LINES_SUFFIXES",
    "FileKind",
    "RawBatch",
    "array_chunks",
    "batch_id_of",
    "canonical_json",
    "classify",
    "display_name",
    "line_chunks",
    "name_problem",
    "parse_array_piece",
    "parse_lines_piece",
    "parse_records",
    "read_batch",
    "read_bytes",
    "row_hash",
    "row_hashes",
]

_BOM = b"\xef\xbb\xbf"


@dataclass
class RawBatch:
    """One readable batch file."""

    path: Path
    name: str
    entity: str
    batch_id: str
    size: int
    records: list[dict[str, Any]]


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
                f"element {i} is {json_type(rec)}, not an object: a batch is an array of objects"
            )
    # The file's nesting is the deepest record's (plus one for an array): only a file that
    # may hold a too deep record pays for the per-record walk that names it.
    if nesting_depth(data) > max_depth:
        for i, rec in enumerate(records):
            if too_deep(rec, max_depth):
                raise BatchReadError(f"element {i} is nested deeper than {max_depth} levels")
    return records


def read_batch(path: Path, kind: FileKind, *, max_bytes: int, max_depth: int) -> RawBatch:
    """Read and parse one batch file (``kind`` from :func:`classify`)."""
    data = read_bytes(path, max_bytes)
    records = parse_records(data, kind.fmt or "array", max_depth)
    return RawBatch(path, path.name, kind.entity or "", batch_id_of(data), len(data), records)


def _parse_array(text: str) -> list[Any]:
    try:
        value = loads(text)
    except json.JSONDecodeError as exc:
        raise BatchReadError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(value, list):
        raise BatchReadError(
            f"top level is {json_type(value)}, not an array: write [ {{...}}, {{...}} ] "
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
                f"element {first_index + i} is {json_type(rec)}, not an object: "
                "a batch is an array of objects"
            )
    if nesting_depth(piece) > max_depth:
        for i, rec in enumerate(records):
            if too_deep(rec, max_depth):
                raise BatchReadError(
                    f"element {first_index + i} is nested deeper than {max_depth} levels"
                )


def _parse_lines(text: str, first_line: int = 1) -> list[Any]:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=first_line):
        if not line.strip():
            continue
        try:
            records.append(loads(line))
        except json.JSONDecodeError as exc:
            raise BatchReadError(
                f"invalid JSON Lines at line {lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    return records



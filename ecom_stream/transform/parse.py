"""Turns one batch file into records and its batch id; ``BatchReadError`` says why it can't.

Big files are cut into pieces (``cuts``: ``line_cuts``, ``array_cuts``) parsed one at a time. What
a file's name says lives in ``names`` and the JSON decoding in ``json_text``; the names of
``names`` are re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ecom_stream.errors import BatchReadError
from ecom_stream.transform.cuts import BOM as _BOM
from ecom_stream.transform.cuts import Reader, array_chunks, array_cuts, line_chunks, line_cuts
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
    "Reader",
    "array_chunks",
    "array_cuts",
    "batch_id_of",
    "canonical_json",
    "classify",
    "display_name",
    "line_chunks",
    "line_cuts",
    "name_problem",
    "parse_array_part",
    "parse_array_piece",
    "parse_lines_part",
    "parse_lines_piece",
    "parse_records",
    "row_hash",
    "row_hashes",
]



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


def parse_array_piece(
    data: bytes, start: int, end: int, first_index: int, max_depth: int
) -> list[dict[str, Any]]:
    """``parse_array_part`` of a piece of bytes in memory."""
    return parse_array_part(data[start:end], first_index, max_depth, lambda: data)


def parse_array_part(
    body: bytes, first_index: int, max_depth: int, whole: Callable[[], bytes]
) -> list[dict[str, Any]]:
    """Parse one piece of a JSON array, ``body`` its bytes between two cuts (see
    ``array_cuts``), as ``parse_records`` parses the whole file. On an error the whole file
    (``whole()``) is parsed, so that its message names the file's line and column: only this
    error path holds the whole file in memory."""
    piece = b"[" + body + b"]"
    try:
        text = piece.decode("utf-8")
        records = _parse_array(text)
        _check_piece(records, piece, first_index, max_depth)
    except (UnicodeDecodeError, BatchReadError) as exc:
        del piece
        parse_records(whole(), "array", max_depth)  # raises with the file's own message
        raise BatchReadError(getattr(exc, "reason", str(exc))) from None
    return records


def parse_lines_piece(
    data: bytes, start: int, end: int, first_line: int, first_index: int, max_depth: int
) -> list[dict[str, Any]]:
    """``parse_lines_part`` of a piece of bytes in memory."""
    return parse_lines_part(data[start:end], start, first_line, first_index, max_depth)


def parse_lines_part(
    piece: bytes, start: int, first_line: int, first_index: int, max_depth: int
) -> list[dict[str, Any]]:
    """Parse one piece of a JSON Lines file (see ``line_cuts``; ``start`` its offset in the
    file) as ``parse_records`` parses the whole file: errors name the file's line, byte
    offset and element number."""
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



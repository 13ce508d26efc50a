"""A landed file: its identity (batch and arrival ids), the hints of quarantine, its pieces,
and ``Intake``, which reads it into a parsed file to merge or a final outcome."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ecom_stream.config import Settings
from ecom_stream.errors import BatchError, BatchReadError
from ecom_stream.transform import bookkeeping
from ecom_stream.transform.bookkeeping import FileOutcome, ParsedFile
from ecom_stream.transform.parse import (
    FileKind,
    array_chunks,
    classify,
    display_name,
    line_chunks,
    parse_records,
    read_bytes,
)

if TYPE_CHECKING:  # they import this module's ids and hints
    from ecom_stream.engine.commit import Commits
    from ecom_stream.engine.quarantine import Quarantine
    from ecom_stream.engine.state import BatchState
    from ecom_stream.storage.lake import Lake


def file_stamp(path: Path) -> str:
    try:
        st = os.lstat(path)
    except OSError:
        return "gone"
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def arrival_id_of(batch_id: str, path: Path) -> str:
    """Identifies one arrival of a file (its bytes, name and inode), stable across restarts."""
    stamp = file_stamp(path)
    # fsencode: a name need not be valid UTF-8 (the same bytes as .encode() for one that is).
    key = f"{batch_id}:".encode() + os.fsencode(path.name) + f":{stamp}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


# What the reason file tells a person to do, by cause; each must be true (see requeue).
FIX_CONTENT = (
    "fix the file, then `ecom-stream requeue NAME` (or drop the fixed file into landing; "
    "the same bytes under any name are a duplicate until requeued)"
)
FIX_NAME = (
    "rename it: `ecom-stream requeue NAME --as NEW`, NEW starting with products or orders and "
    "ending in .json, .jsonl or .ndjson (or drop the file into landing under such a name)"
)
FIX_OUTSIDE = (
    "fix the cause the reason names (a setting, the permissions, a split), then "
    "`ecom-stream requeue NAME` (or drop the file into landing again)"
)
FIX_SPECIAL = (
    "only regular files are read: write the batch into landing as a regular file "
    "(`ecom-stream requeue NAME` would bring back the same entry, quarantined again)"
)
FIX_LINK = (
    "links are never followed: copy the file itself into landing "
    "(`ecom-stream requeue NAME` only removes the link)"
)


def unread_batch_id(data: bytes | None, path: Path, *extra: str) -> str:
    """The id of a batch recorded for its name or a cause outside its bytes: bytes and name
    (and ``extra``) together, so the same bytes under a fixed name are a new batch."""
    parts = [data or b"", os.fsencode(path.name), *(os.fsencode(e) for e in extra)]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def piece_arrival(arrival: str, k: int) -> str:
    """The arrival id under which piece ``k`` of a large file appends its rows."""
    return hashlib.sha256(f"{arrival}:piece:{k}".encode()).hexdigest()[:32]


def pieces_of(data: bytes, fmt: str, max_rows: int) -> list[tuple[int, int, int]] | None:
    """How to cut a file of more rows than a micro-batch holds (None: read it whole).
    A file of at most 40 bytes a row of the bound is read whole without a scan: its
    records are too small to weigh on memory whatever their count."""
    if len(data) <= max_rows * 40:
        return None
    if fmt == "lines":
        if data.count(b"\n") < max_rows:
            return None
        pieces = line_chunks(data, max_rows)
        return pieces if len(pieces) > 1 else None
    return array_chunks(data, max_rows)


class Intake:
    """Reads one landed file: skipped (None), a final outcome (duplicate, empty, quarantined)
    or a parsed file to merge; keeps its raw copy."""

    def __init__(
        self,
        settings: Settings,
        lake: Lake,
        state: BatchState,
        commits: Commits,
        quarantine: Quarantine,
        received_at: Callable[[Path], datetime | None] | None = None,
    ) -> None:
        self.settings = settings
        self.lake = lake
        self.state = state
        self.commits = commits
        self.quarantine = quarantine
        self._received_at = received_at

    def take(self, path: Path, seen: set[str]) -> ParsedFile | FileOutcome | None:
        """``path`` read; ``seen``: the batch ids taken by this run so far (updated)."""
        kind = classify(path.name)
        if kind.action == "ignore" or (path.is_dir() and not path.is_symlink()):
            return None
        started = time.perf_counter()
        received = (self._received_at(path) if self._received_at else None) or datetime.now(UTC)
        try:
            data = read_bytes(path, self.settings.max_file_bytes)
        except FileNotFoundError:
            return None  # moved away since it was listed
        except BatchError as exc:
            return self.quarantine.unreadable(path, kind, None, exc.reason, received)
        # A file quarantined for its name is recorded under its bytes and name together: the
        # same bytes under a fixed name are a new batch (content alone decides duplicates).
        if kind.action == "quarantine":
            batch_id = unread_batch_id(data, path)
        else:
            batch_id = hashlib.sha256(data).hexdigest()
        arrival = arrival_id_of(batch_id, path)
        if self.state.recorded(arrival):
            # Recorded before a crash or stop, but not yet removed from landing.
            self.commits.remove_source(path, batch_id, arrival)
            return None
        if batch_id in seen or self.state.already_done(batch_id):
            return FileOutcome(
                display_name(path.name),
                kind.entity,
                batch_id,
                arrival,
                "duplicate",
                reason="same bytes as a batch already processed",
                received_at=received,
                source=path,
            )
        seen.add(batch_id)
        if kind.action == "quarantine":
            return self.quarantine.unread(
                path, kind, data, batch_id, arrival, kind.reason or "", received, fix=FIX_NAME
            )
        return self._parse(path, kind, data, batch_id, arrival, received, started)

    def _parse(
        self,
        path: Path,
        kind: FileKind,
        data: bytes,
        batch_id: str,
        arrival: str,
        received: datetime,
        started: float,
    ) -> ParsedFile | FileOutcome:
        """A file to merge: whole, or cut into pieces when larger than a micro-batch."""
        meta = bookkeeping.raw_meta(path.name, kind, batch_id, received)
        pieces = pieces_of(data, kind.fmt or "array", self.settings.microbatch_max_rows)
        if pieces:
            self.lake.blobs.store_raw(batch_id, path.name, data, meta)
            return ParsedFile(
                path, path.name, kind.entity or "", batch_id, arrival, [], received,
                (time.perf_counter() - started) * 1000, data=data, pieces=pieces,
                piece_arrivals=[piece_arrival(arrival, k) for k in range(len(pieces))],
            )
        try:
            records = parse_records(data, kind.fmt or "array", self.settings.max_json_depth)
        except BatchReadError as exc:
            return self.quarantine.unread(
                path, kind, data, batch_id, arrival, exc.reason, received
            )
        self.lake.blobs.store_raw(batch_id, path.name, data, meta)
        read_ms = (time.perf_counter() - started) * 1000
        if not records:
            return FileOutcome(
                path.name,
                kind.entity,
                batch_id,
                arrival,
                "empty",
                received_at=received,
                timings={"read_ms": read_ms},
                source=path,
            )
        return ParsedFile(
            path, path.name, kind.entity or "", batch_id, arrival, records, received, read_ms
        )

"""A landed file: its identity (batch and arrival ids), the hints of quarantine, its pieces,
and ``Intake``, which reads it into a parsed file to merge or a final outcome."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ecom_stream.config import Settings
from ecom_stream.errors import BatchError, BatchReadError
from ecom_stream.sources.files import read_bytes
from ecom_stream.sources.landed import LandedFile, LargeFile
from ecom_stream.transform import bookkeeping
from ecom_stream.transform.bookkeeping import FileOutcome, ParsedFile
from ecom_stream.transform.parse import (
    FileKind,
    array_chunks,
    classify,
    display_name,
    line_chunks,
    name_problem,
    parse_records,
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


# A file of at most this many bytes a row of the micro-batch bound is never cut in pieces.
ROW_BYTES = 40


def pieces_of(data: bytes, fmt: str, max_rows: int) -> list[tuple[int, int, int]] | None:
    """How to cut a file of more rows than a micro-batch holds (None: read it whole).
    A file of at most ``ROW_BYTES`` a row of the bound is read whole without a scan: its
    records are too small to weigh on memory whatever their count."""
    if len(data) <= max_rows * ROW_BYTES:
        return None
    if fmt == "lines":
        if data.count(b"\n") < max_rows:
            return None
        pieces = line_chunks(data, max_rows)
        return pieces if len(pieces) > 1 else None
    return array_chunks(data, max_rows)


class Intake:
    """Reads one landed file: skipped (None), a final outcome (duplicate, empty, quarantined)
    or a parsed file to merge; keeps its raw copy. A file large enough to be cut in pieces is
    never read whole (``landed.LandedFile``): hashed, copied and cut by streaming."""

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
        landed = self._open_large(path)
        if landed is None:
            return self._take(path, kind, None, seen, received, started)
        try:
            item = self._take(path, kind, landed, seen, received, started)
        except BaseException:
            landed.close()
            raise
        if not isinstance(item, LargeFile):
            landed.close()  # the merge in pieces closes it when done
        return item

    def _open_large(self, path: Path) -> LandedFile | None:
        """The file opened to be read by streaming when it is large enough to be cut in
        pieces (None: it is read whole, which also names why it cannot be read)."""
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > self.settings.max_file_bytes:
                return None
            if st.st_size <= self.settings.microbatch_max_rows * ROW_BYTES:
                return None
            return LandedFile.open(path)
        except OSError:
            return None

    def _take(
        self,
        path: Path,
        kind: FileKind,
        landed: LandedFile | None,
        seen: set[str],
        received: datetime,
        started: float,
    ) -> ParsedFile | FileOutcome | None:
        """``take`` of a file read whole (``landed`` None) or by streaming."""
        data = None
        if landed is None:
            try:
                data = read_bytes(path, self.settings.max_file_bytes)
            except FileNotFoundError:
                return None  # moved away since it was listed
            except BatchError as exc:
                return self.quarantine.unreadable(path, kind, None, exc.reason, received)
        batch_id = self._batch_id(path, kind, data, landed)
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
            if landed is not None and name_problem(path.name) is None:
                self._store_large(path, kind, landed, batch_id, received)  # unread keeps none
            return self.quarantine.unread(
                path, kind, data, batch_id, arrival, kind.reason or "", received, fix=FIX_NAME
            )
        if landed is not None:
            large = self._large(path, kind, landed, batch_id, arrival, received, started)
            if large is not None:
                return large
            data = landed.whole()  # not cut in pieces: read whole like any file
        assert data is not None
        return self._parse(
            path, kind, data, batch_id, arrival, received, started, scanned=landed is not None
        )

    def _batch_id(
        self, path: Path, kind: FileKind, data: bytes | None, landed: LandedFile | None
    ) -> str:
        """The file's batch id: its bytes' SHA-256, or for a file quarantined for its name its
        bytes and name together (the same bytes under a fixed name are a new batch: content
        alone decides duplicates)."""
        name = kind.action == "quarantine"
        if landed is None:
            assert data is not None
            return unread_batch_id(data, path) if name else hashlib.sha256(data).hexdigest()
        batch_id = landed.digest(b"\0" + os.fsencode(path.name) if name else b"")
        landed.check_path()  # the arrival id, from the name's stamp, is the file hashed
        return batch_id

    def _large(
        self,
        path: Path,
        kind: FileKind,
        landed: LandedFile,
        batch_id: str,
        arrival: str,
        received: datetime,
        started: float,
    ) -> LargeFile | None:
        """A file of more rows than a micro-batch holds, to merge in pieces read as they are
        parsed (None: it is not cut, see ``LandedFile.cuts``)."""
        pieces = landed.cuts(kind.fmt or "array", self.settings.microbatch_max_rows)
        if not pieces:
            return None
        self._store_large(path, kind, landed, batch_id, received)
        return LargeFile(
            path, path.name, kind.entity or "", batch_id, arrival, [], received,
            (time.perf_counter() - started) * 1000, pieces=pieces,
            piece_arrivals=[piece_arrival(arrival, k) for k in range(len(pieces))],
            landed=landed,
        )

    def _store_large(
        self, path: Path, kind: FileKind, landed: LandedFile, batch_id: str, received: datetime
    ) -> None:
        """The raw copy of a large file, copied from its descriptor (checked unchanged)."""
        meta = bookkeeping.raw_meta(path.name, kind, batch_id, received)
        self.lake.blobs.store_raw_copy(
            batch_id, path.name, landed.fd, landed.size, meta, landed.check
        )

    def _parse(
        self,
        path: Path,
        kind: FileKind,
        data: bytes,
        batch_id: str,
        arrival: str,
        received: datetime,
        started: float,
        *,
        scanned: bool = False,
    ) -> ParsedFile | FileOutcome:
        """A file to merge: whole, or cut into pieces when larger than a micro-batch (not
        when ``scanned``: its cut points were looked for already)."""
        meta = bookkeeping.raw_meta(path.name, kind, batch_id, received)
        max_rows = self.settings.microbatch_max_rows
        pieces = None if scanned else pieces_of(data, kind.fmt or "array", max_rows)
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

"""``Lake``: the composition root of the storage parts, one per concern.

``layout`` (paths, table names), ``tables`` (Delta; with ``maintenance``, the only
``deltalake`` importer), ``blobs`` (raw and quarantine files), ``markers`` (marker files by
kind), ``queries`` (entity reads, gold watermark), ``integrity`` (damage checks),
``maintenance`` (compaction, checkpoints, vacuum). Callers use the parts directly; ``Lake``
itself only composes them, opens the tables and takes the writer lock. The names re-exported
here keep older imports working."""

from __future__ import annotations

from pathlib import Path

from ecom_stream.storage.blobs import Blobs, atomic_write, sync_filesystem
from ecom_stream.storage.integrity import Integrity
from ecom_stream.storage.layout import (
    ARRIVAL_TXN_RETENTION,
    BRONZE,
    GOLD_WATERMARK_APP,
    INCOMPLETE_REBUILD,
    LEGACY_ARRIVAL_TXN,
    LOG_RETENTION,
    MAX_STORED_NAME_BYTES,
    REBUILD_FIX,
    SILVER,
    TABLES,
    TEMP_NAME,
    Layout,
    TableSpec,
    incomplete_rebuild_fix,
    incomplete_rebuild_message,
)
from ecom_stream.storage.lock import LakeLock
from ecom_stream.storage.maintenance import Maintenance
from ecom_stream.storage.markers import Markers
from ecom_stream.storage.predicates import (
    MAX_KEY_RANGES,
    key_ranges,
    key_ranges_predicate,
    months_literal,
    ranges_predicate,
)
from ecom_stream.storage.queries import Queries
from ecom_stream.storage.tables import Tables

__all__ = [
    "ARRIVAL_TXN_RETENTION",
    "BRONZE",
    "GOLD_WATERMARK_APP",
    "INCOMPLETE_REBUILD",
    "LEGACY_ARRIVAL_TXN",
    "LOG_RETENTION",
    "MAX_KEY_RANGES",
    "MAX_STORED_NAME_BYTES",
    "REBUILD_FIX",
    "SILVER",
    "TABLES",
    "TEMP_NAME",
    "Lake",
    "TableSpec",
    "atomic_write",
    "incomplete_rebuild_fix",
    "incomplete_rebuild_message",
    "key_ranges",
    "key_ranges_predicate",
    "months_literal",
    "ranges_predicate",
]


class Lake:
    """One lake: its parts (callers use them directly), table set-up and the writer lock."""

    def __init__(
        self, root: Path, *, writer: bool = False, log_retention: str | None = None
    ) -> None:
        self.layout = Layout(root)
        self.root = self.layout.root
        self.writer = writer
        self.tables = Tables(self.layout, writer=writer, log_retention=log_retention)
        self.blobs = Blobs(self.layout)
        self.markers = Markers(self.layout)
        self.queries = Queries(self.tables)
        self.integrity = Integrity(self.layout, self.tables)
        self.maintenance = Maintenance(self.tables)

    def sync(self) -> None:
        """Make every file written under the lake durable with one filesystem sync."""
        sync_filesystem(self.root)

    def writer_lock(self, purpose: str) -> LakeLock:
        """The lake's one-writer lock (not taken yet: use it as a context manager)."""
        return LakeLock(self.layout.lock_path, purpose)

    def ensure_tables(self) -> None:
        """Open every table, refusing a damaged lake before anything is written, and create
        every missing table (empty, with its schema and partitioning)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.integrity.refuse_incomplete_rebuild()
        self.tables.open_existing()
        self.integrity.refuse_damage()
        self.tables.create_missing()

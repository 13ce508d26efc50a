"""``Lake``: the composition root of the storage parts, one per concern.

``layout`` (paths, table names), ``tables`` (Delta; with ``maintenance``, the only
``deltalake`` importer), ``blobs`` (raw and quarantine files), ``markers`` (marker files by
kind), ``queries`` (entity reads, gold watermark), ``integrity`` (damage checks),
``maintenance`` (compaction, checkpoints, vacuum). Callers use the parts; the delegations
left below go with their last callers. The names re-exported here keep older imports
working."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

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
    """One lake: its parts, and (until their last callers go) one-line delegations to them."""

    def __init__(self, root: Path, *, writer: bool = False) -> None:
        self.layout = Layout(root)
        self.root = self.layout.root
        self.writer = writer
        self.tables = Tables(self.layout, writer=writer)
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

    # -- kept until engine/ and service/daemon.py call the parts ------------------------
    # One-line delegations still called by ecom_stream/engine/ (not requeue.py),
    # ecom_stream/service/daemon.py, and the files converted with them (tools/demo.py,
    # tests/test_daemon.py). Nothing else calls them: new code calls the parts. Delete each
    # as its last caller goes; when none is left, delete this block.
    @property
    def raw_dir(self) -> Path:
        return self.layout.raw_dir

    @property
    def heartbeat_path(self) -> Path:
        return self.layout.heartbeat_path

    @property
    def lock_path(self) -> Path:
        return self.layout.lock_path

    @property
    def raw_tmp_dir(self) -> Path:
        return self.layout.raw_tmp_dir

    def raw_path(self, batch_id: str, name: str) -> Path:
        return self.layout.raw_path(batch_id, name)

    def exists(self) -> bool:
        return self.tables.exists()

    def version(self, name: str) -> int:
        return self.tables.version(name)

    def read(self, name: str, **kwargs: Any) -> pa.Table:
        return self.tables.read(name, **kwargs)

    def read_pandas(self, name: str, **kwargs: Any) -> pd.DataFrame:
        return self.tables.read_pandas(name, **kwargs)

    def append(self, name: str, data: pa.Table | pd.DataFrame, **kwargs: Any) -> None:
        self.tables.append(name, data, **kwargs)

    def replace_where(
        self, name: str, data: pa.Table | pd.DataFrame, predicate: str, **kwargs: Any
    ) -> None:
        self.tables.replace_where(name, data, predicate, **kwargs)

    def merge_upsert(self, name: str, data: pd.DataFrame | pa.Table, **kwargs: Any) -> dict:
        return self.tables.merge_upsert(name, data, **kwargs)

    def merge_lines(self, lines: pd.DataFrame, deletes: pd.DataFrame, **kwargs: Any) -> dict:
        return self.tables.merge_lines(lines, deletes, **kwargs)

    def commit_metadata_since(self, name: str, version: int) -> list[dict[str, Any]] | None:
        return self.tables.commit_metadata_since(name, version)

    def count(self, name: str) -> int:
        return self.queries.count(name)

    def arrival_column(self, name: str) -> str:
        return self.queries.arrival_column(name)

    def committed_arrivals(self, name: str, arrivals: Iterable[str]) -> set[str]:
        return self.queries.committed_arrivals(name, arrivals)

    def lookup(
        self, entity: str, keys: Sequence[int], columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        return self.queries.lookup(entity, keys, columns)

    def read_for_dates(
        self, name: str, dates: Iterable[date], columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        return self.queries.read_for_dates(name, dates, columns)

    def order_dates_of_products(self, product_ids: Sequence[int]) -> set[date]:
        return self.queries.order_dates_of_products(product_ids)

    def gold_watermark(self) -> dict[str, int | None]:
        return self.queries.gold_watermark()

    def watermark_txns(self, versions: Mapping[str, int]) -> list[str]:
        return self.queries.watermark_txns(versions)

    def rebuilding(self) -> AbstractContextManager[None]:
        return self.integrity.rebuilding()

    def note_versions(self) -> None:
        self.integrity.note_versions()

    def write_raw_file(self, batch_id: str, name: str, data: bytes) -> Path:
        return self.blobs.write_raw_file(batch_id, name, data)

    def store_raw(self, batch_id: str, name: str, data: bytes, meta: Mapping[str, Any]) -> Path:
        return self.blobs.store_raw(batch_id, name, data, meta)

    def raw_batches(self) -> list[tuple[Path, dict[str, Any]]]:
        return self.blobs.raw_batches()

    def store_quarantined(
        self, source: Path, data: bytes | None, name: str, reason: Mapping[str, Any]
    ) -> Path:
        return self.blobs.store_quarantined(source, data, name, reason)

    def left_in_landing(self, name: str, batch_id: str) -> bool:
        return self.blobs.left_in_landing(name, batch_id)

    def remove_stale_temp_files(self) -> int:
        return self.blobs.remove_stale_temp_files()

    def quarantined_files(self) -> list[Path]:
        return self.blobs.quarantined_files()

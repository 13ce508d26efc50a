"""The lake layout: the only module that knows paths and table names."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa

from ecom_stream.contract import schema as S

__all__ = ["BRONZE", "SILVER", "TABLES", "Layout", "TableSpec"]


@dataclass(frozen=True)
class TableSpec:
    """Where a Delta table lives and what it holds."""

    path: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    configuration: Mapping[str, str] | None = None
    arrival_column: str | None = None
    """Bookkeeping tables: the column naming the file arrival that wrote each row."""


# Bookkeeping rows name the file arrival that wrote them (``TableSpec.arrival_column``); after
# a crash the arrivals in flight are looked up there (Queries.committed_arrivals). Versions before
# that recorded one Delta app transaction per arrival instead (LEGACY_ARRIVAL_TXN): every
# checkpoint carried them all, so commits slowed as files accumulated. The retention expires
# those left in older tables; new appends carry none.
ARRIVAL_TXN_RETENTION = "interval 7 days"
LEGACY_ARRIVAL_TXN = "ecom-stream:arrival:{arrival}"
# Every commit lists the table's _delta_log folder, so its cost grows with the number of commit
# files kept: 7 ms at 100, 97 ms at 2,000 (measured). Delta keeps them 30 days by default: a
# daemon would slow down day after day. Kept 10 seconds instead, with a checkpoint every 10
# commits (files older than the last expired checkpoint are deleted on commit), so a folder
# holds a few dozen. Only gold's refresh reads commit history: right after the silver commits,
# at writer start-up and after compaction, which deletes no commit files (Maintenance.compact).
# The retention is a setting (Settings.log_retention, ECOM_LOG_RETENTION): a longer one keeps
# the history for audit (DESCRIBE HISTORY, time travel) at that cost (README, Table history).
LOG_RETENTION = "interval 10 seconds"
LOG_RETENTION_KEY = "delta.logRetentionDuration"
_ANY = {LOG_RETENTION_KEY: LOG_RETENTION, "delta.checkpointInterval": "10"}
_BOOKKEEPING = {**_ANY, "delta.setTransactionRetentionDuration": ARRIVAL_TXN_RETENTION}

TABLES: dict[str, TableSpec] = {
    "bronze_products": TableSpec(
        "bronze/products",
        S.bronze_schema("products"),
        configuration=_BOOKKEEPING,
        arrival_column="_arrival_id",
    ),
    "bronze_orders": TableSpec(
        "bronze/orders",
        S.bronze_schema("orders"),
        configuration=_BOOKKEEPING,
        arrival_column="_arrival_id",
    ),
    "silver_products": TableSpec("silver/products", S.SILVER_PRODUCTS_SCHEMA, configuration=_ANY),
    # Orders and their lines are partitioned by month: a batch touches the months of its
    # orders (and of the orders it updates), so a MERGE rewrites a few files, never the table;
    # and the number of partitions (which Delta's planning walks) grows by 12 a year, not 365.
    "silver_orders": TableSpec(
        "silver/orders", S.SILVER_ORDERS_SCHEMA, ("order_month",), configuration=_ANY
    ),
    "silver_order_lines": TableSpec(
        "silver/order_lines", S.ORDER_LINES_SCHEMA, ("order_month",), configuration=_ANY
    ),
    "rejected_rows": TableSpec(
        "rejected_rows", S.REJECTED_SCHEMA, configuration=_BOOKKEEPING, arrival_column="arrival_id"
    ),
    "quality_validations": TableSpec(
        "quality/validations",
        S.QUALITY_SCHEMA,
        configuration=_BOOKKEEPING,
        arrival_column="arrival_id",
    ),
    "quarantine_records": TableSpec(
        "quarantine/_records",
        S.QUARANTINE_SCHEMA,
        configuration=_BOOKKEEPING,
        arrival_column="arrival_id",
    ),
    "ledger": TableSpec("_ledger", S.LEDGER_SCHEMA, configuration=_ANY),
    "daily_revenue": TableSpec("gold/daily_revenue", S.DAILY_REVENUE_SCHEMA, configuration=_ANY),
    "revenue_anomalies": TableSpec(
        "gold/revenue_anomalies", S.ANOMALIES_SCHEMA, configuration=_ANY
    ),
    # Written by `ecom-stream pull`, never by the daemon; its cursors live beside it.
    "sources": TableSpec("_sources/pulls", S.SOURCES_SCHEMA, configuration=_ANY),
}


def table_configuration(
    spec: TableSpec, log_retention: str | None, current: Mapping[str, str]
) -> dict[str, str]:
    """The table properties a table should have: ``spec``'s, with ``log_retention`` (a Delta
    interval); None keeps the ``current`` one (``spec``'s for a new table)."""
    config = dict(spec.configuration or {})
    if log_retention is not None:
        config[LOG_RETENTION_KEY] = log_retention
    elif LOG_RETENTION_KEY in current:
        config[LOG_RETENTION_KEY] = current[LOG_RETENTION_KEY]
    return config


SILVER = {"products": "silver_products", "orders": "silver_orders"}
BRONZE = {"products": "bronze_products", "orders": "bronze_orders"}
GOLD_WATERMARK_APP = "ecom-stream:gold:{table}"
# atomic_write's temporary names: ``.<name>.<pid>.tmp``.
# Longest name a file is stored under in quarantine/ (bytes): suffixes of up to ~40 bytes
# (".reason.json", ".<pid>.tmp", a batch id) must still fit in 255.
MAX_STORED_NAME_BYTES = 200
TEMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$", re.DOTALL)
MAX_KEY_RANGES = 16
# The way out of a damaged lake: raw/ holds every file ever received, so a replay gives the
# tables back (the damaged lake stays as it is, for inspection).
REBUILD_FIX = (
    "stop writing to it and rebuild it from raw/ with `ecom-stream rebuild --into NEW` "
    "(NEW a new folder), then use NEW as the lake"
)

INCOMPLETE_REBUILD = "incomplete rebuild (`ecom-stream rebuild --into` did not finish)"


def incomplete_rebuild_fix(root: Path) -> str:
    return f"rerun `ecom-stream rebuild --into NEW` into a new folder, or remove {root}"


def incomplete_rebuild_message(root: Path) -> str:
    return f"{root} is an {INCOMPLETE_REBUILD}: {incomplete_rebuild_fix(root)}"


class Layout:
    """Where everything of the lake at ``root`` lives."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    def path(self, table: str) -> Path:
        return self.root / TABLES[table].path

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def daemon_dir(self) -> Path:
        return self.root / "_daemon"

    @property
    def heartbeat_path(self) -> Path:
        return self.daemon_dir / "heartbeat.json"

    @property
    def lock_path(self) -> Path:
        return self.daemon_dir / "lock"

    @property
    def inflight_path(self) -> Path:
        return self.daemon_dir / "inflight.json"

    @property
    def versions_path(self) -> Path:
        """The table versions a writer left after its last micro-batch (damage check)."""
        return self.daemon_dir / "versions.json"

    @property
    def rebuild_marker_path(self) -> Path:
        """Present while a rebuild fills this lake; left behind if it was killed."""
        return self.root / "_rebuild_incomplete.json"

    @property
    def lines_inflight_path(self) -> Path:
        """The order ids of an orders / order-lines merge pair in flight (see refresh.py)."""
        return self.daemon_dir / "lines_inflight.json"

    def cursor_path(self, source: str, endpoint: str) -> Path:
        """The persisted cursor of one endpoint of a REST source (``ecom-stream pull``)."""
        return self.root / "_sources" / "cursors" / source / f"{endpoint}.json"

    def raw_path(self, batch_id: str, name: str) -> Path:
        return self.raw_dir / batch_id[:2] / batch_id / name

    @property
    def raw_tmp_dir(self) -> Path:
        """Where raw files are written before their rename into place: one folder to clean
        after a crash, however many batches raw/ holds."""
        return self.raw_dir / ".tmp"

    def local_file(self, name: str, rel: str) -> str:
        if rel.startswith("file://"):
            return unquote(rel[len("file://") :])
        if os.path.isabs(rel):
            return rel
        return str(self.path(name) / unquote(rel))

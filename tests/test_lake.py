"""The lake module: upgrading tables written by an older ecom-stream."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ecom_stream.storage.lake import (
    ARRIVAL_TXN_RETENTION,
    LEGACY_ARRIVAL_TXN,
    LOG_RETENTION,
    TABLES,
    Lake,
)
from ecom_stream.transform.bookkeeping import FileOutcome, ledger_rows


def test_older_ledger_gains_new_columns_and_keeps_rows(tmp_path: Path) -> None:
    # A ledger as an older version wrote it: without the gold_committed_at column.
    lake = Lake(tmp_path / "lake", writer=True)
    path = lake.layout.path("ledger")
    path.mkdir(parents=True)
    old_schema = pa.schema([f for f in TABLES["ledger"].schema if f.name != "gold_committed_at"])
    old_row = ledger_rows([FileOutcome("a.json", "orders", "b1", "a1", "merged")], {}, 1)
    write_deltalake(str(path), pa.Table.from_pandas(old_row[old_schema.names], schema=old_schema))

    lake.ensure_tables()
    new = FileOutcome("b.json", "orders", "b2", "a2", "merged")
    lake.tables.append("ledger", ledger_rows([new], {}, 1))

    table = DeltaTable(str(path)).to_pyarrow_table()
    assert "gold_committed_at" in table.column_names
    rows = sorted(
        table.select(["file_name", "gold_committed_at"]).to_pylist(), key=lambda r: r["file_name"]
    )
    assert [r["file_name"] for r in rows] == ["a.json", "b.json"]
    assert rows[0]["gold_committed_at"] is None  # old rows: unknown


def test_bookkeeping_rows_name_their_arrival(tmp_path: Path) -> None:
    recording = {name for name, spec in TABLES.items() if spec.arrival_column}
    assert recording == {
        "bronze_products",
        "bronze_orders",
        "rejected_rows",
        "quality_validations",
        "quarantine_records",
    }
    for name in recording:
        assert TABLES[name].arrival_column in TABLES[name].schema.names

    lake = Lake(tmp_path / "lake", writer=True)
    lake.ensure_tables()
    schema = TABLES["quarantine_records"].schema
    rows = pa.Table.from_pylist([{"arrival_id": "a1"}, {"arrival_id": "a2"}], schema=schema)
    lake.tables.append("quarantine_records", rows)
    assert lake.queries.committed_arrivals("quarantine_records", ["a1", "a3"]) == {"a1"}
    assert lake.queries.committed_arrivals("quarantine_records", []) == set()
    # Older versions marked their appends with an app transaction instead of the column.
    legacy = LEGACY_ARRIVAL_TXN.format(arrival="a4")
    lake.tables.append("quarantine_records", schema.empty_table(), txns=[legacy])
    assert lake.queries.committed_arrivals("quarantine_records", ["a4", "a5"]) == {"a4"}
    with pytest.raises(ValueError, match="does not record file arrivals"):
        lake.queries.arrival_column("ledger")


def test_older_bronze_gains_the_arrival_column(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", writer=True)
    path = lake.layout.path("bronze_orders")
    path.mkdir(parents=True)
    old_schema = pa.schema([f for f in TABLES["bronze_orders"].schema if f.name != "_arrival_id"])
    DeltaTable.create(str(path), old_schema)
    lake.ensure_tables()
    assert "_arrival_id" in DeltaTable(str(path)).schema().to_arrow().names
    new_row = {name: None for name in TABLES["bronze_orders"].schema.names}
    new_row.update(_batch_id="b", _source_file="orders-1.json", _row_no=0, _row_hash="h",
                   _ingested_at=datetime(2026, 1, 1, tzinfo=UTC), _arrival_id="a1")
    schema = TABLES["bronze_orders"].schema
    lake.tables.append("bronze_orders", pa.Table.from_pylist([new_row], schema))
    assert lake.queries.committed_arrivals("bronze_orders", ["a1", "a2"]) == {"a1"}


def test_bookkeeping_tables_expire_arrival_transactions(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", writer=True)
    lake.ensure_tables()
    retention = "delta.setTransactionRetentionDuration"
    for name, spec in TABLES.items():
        configured = DeltaTable(str(lake.layout.path(name))).metadata().configuration.get(retention)
        assert configured == (spec.configuration or {}).get(retention)
    assert (TABLES["bronze_orders"].configuration or {})[retention] == ARRIVAL_TXN_RETENTION
    # Gold's watermark is a transaction too: it never expires.
    assert retention not in (TABLES["revenue_anomalies"].configuration or {})

    # Our transactions carry lastUpdated, so Delta expires them once past the retention.
    lake.tables.table("rejected_rows").alter.set_table_properties({retention: "interval 1 seconds"})
    rows = TABLES["rejected_rows"].schema.empty_table()
    lake.tables.append("rejected_rows", rows, txns=["ecom:arrival:old"])
    time.sleep(1.5)
    lake.tables.append("rejected_rows", rows, txns=["ecom:arrival:new"])
    reopened = Lake(tmp_path / "lake")
    assert not reopened.queries.has_txn("rejected_rows", "ecom:arrival:old")
    assert reopened.queries.has_txn("rejected_rows", "ecom:arrival:new")


def test_older_table_gains_the_retention_property(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", writer=True)
    path = lake.layout.path("quality_validations")
    path.mkdir(parents=True)
    DeltaTable.create(str(path), TABLES["quality_validations"].schema)  # no properties
    lake.ensure_tables()
    configuration = DeltaTable(str(path)).metadata().configuration
    assert configuration["delta.setTransactionRetentionDuration"] == ARRIVAL_TXN_RETENTION


def test_commit_files_are_deleted_once_past_the_retention(tmp_path: Path) -> None:
    """Every commit lists _delta_log: the folder must not keep growing with the lake's age."""
    lake = Lake(tmp_path / "lake", writer=True)
    lake.ensure_tables()
    for name, spec in TABLES.items():
        assert (spec.configuration or {})["delta.logRetentionDuration"] == LOG_RETENTION
        configured = DeltaTable(str(lake.layout.path(name))).metadata().configuration
        assert configured["delta.logRetentionDuration"] == LOG_RETENTION
    lake.tables.table("ledger").alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 1 seconds"}
    )
    rows = ledger_rows([FileOutcome("a.json", "orders", "b1", "a1", "merged")], {}, 1)
    for _ in range(60):
        lake.tables.append("ledger", rows)
    time.sleep(1.2)
    for _ in range(60):  # crosses checkpoints (every 10 commits): expired commits are deleted
        lake.tables.append("ledger", rows)
    commits = list((lake.layout.path("ledger") / "_delta_log").glob("*.json"))
    assert len(commits) <= 70
    assert Lake(tmp_path / "lake").queries.count("ledger") == 120  # the table itself is whole

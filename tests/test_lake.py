"""The lake module: upgrading tables written by an older ecom-stream."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from ecom_stream.lake import TABLES, Lake
from ecom_stream.pipeline import FileOutcome, ledger_rows


def test_older_ledger_gains_new_columns_and_keeps_rows(tmp_path: Path) -> None:
    # A ledger as an older version wrote it: without the gold_committed_at column.
    lake = Lake(tmp_path / "lake", writer=True)
    path = lake.path("ledger")
    path.mkdir(parents=True)
    old_schema = pa.schema([f for f in TABLES["ledger"].schema if f.name != "gold_committed_at"])
    old_row = ledger_rows([FileOutcome("a.json", "orders", "b1", "a1", "merged")], {}, 1)
    write_deltalake(str(path), pa.Table.from_pandas(old_row[old_schema.names], schema=old_schema))

    lake.ensure_tables()
    new = FileOutcome("b.json", "orders", "b2", "a2", "merged")
    lake.append("ledger", ledger_rows([new], {}, 1))

    table = DeltaTable(str(path)).to_pyarrow_table()
    assert "gold_committed_at" in table.column_names
    rows = sorted(
        table.select(["file_name", "gold_committed_at"]).to_pylist(), key=lambda r: r["file_name"]
    )
    assert [r["file_name"] for r in rows] == ["a.json", "b.json"]
    assert rows[0]["gold_committed_at"] is None  # old rows: unknown

"""Maintenance: compaction, checkpoints and vacuum leave every table reading back identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_same_tables, snapshot

from ecom_stream.cli.main import main
from ecom_stream.storage.lake import TABLES, Lake


def test_maintain_compacts_and_tables_read_back_identically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--lake", str(tmp_path / "lake"), "--landing", str(tmp_path / "landing")]
    assert (
        main([*base, "generate", "--batches", "30", "--orders-per-batch", "40", "--products", "30"])
        == 0
    )
    # Small micro-batches: many commits, many small files.
    for i in range(0, 31, 5):
        names = sorted(p.name for p in (tmp_path / "landing").iterdir())[:5]
        staged = tmp_path / f"stage{i}"
        staged.mkdir()
        for name in names:
            (tmp_path / "landing" / name).rename(staged / name)
        assert main([*base, "backfill", str(staged), "--no-progress"]) == 0
    lake = Lake(tmp_path / "lake")
    every = list(TABLES)
    before = snapshot(tmp_path / "lake", every)
    files_before = {name: lake.queries.file_count(name) for name in every}
    silver = ("silver_orders", "silver_products")
    files_before_versions = {t: lake.tables.version(t) for t in silver}
    assert files_before["bronze_orders"] > 1

    capsys.readouterr()
    assert main([*base, "maintain", "--retention-hours", "0"]) == 0
    out = capsys.readouterr().out
    assert "bronze/orders: files" in out and "vacuum deleted" in out

    after = snapshot(tmp_path / "lake", every)
    assert_same_tables(after, before)
    # Gold's watermark moved past the compaction commits, and the silver history since it
    # (vacuum's own commits) is still there for the next refresh: no full gold rebuild.
    maintained = Lake(tmp_path / "lake")
    for table, mark in maintained.queries.gold_watermark().items():
        assert mark is not None and mark >= files_before_versions[table]
        assert maintained.tables.commit_metadata_since(table, mark) is not None
    files_after = {name: Lake(tmp_path / "lake").queries.file_count(name) for name in every}
    assert files_after["bronze_orders"] == 1
    assert all(files_after[n] <= files_before[n] for n in every)
    # Unreferenced files are gone from disk: parquet files on disk == files referenced.
    on_disk = len(list((tmp_path / "lake" / "bronze" / "orders").glob("*.parquet")))
    assert on_disk == 1

    capsys.readouterr()
    assert main([*base, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["tables"]["bronze/orders"]["files"] == 1


def test_daemon_compaction_merges_small_files_and_leaves_large_ones(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa

    from ecom_stream.config import Settings
    from ecom_stream.service.maintain import DAEMON_TARGET_BYTES, compact_if_needed

    lake = Lake(tmp_path / "lake", writer=True)
    lake.ensure_tables()
    schema = TABLES["rejected_rows"].schema
    rng = np.random.default_rng(1)

    def rows(n: int) -> pa.Table:
        # Random text does not compress: a backfill-sized file above the daemon's target.
        data = {f.name: pa.nulls(n, f.type) for f in schema}
        data["entity"] = pa.array(["orders"] * n)
        data["batch_id"] = pa.array([f"{v:032x}" for v in rng.integers(0, 2**62, n)])
        data["source_file"] = pa.array(["f.json"] * n)
        data["row_no"] = pa.array(np.arange(n), pa.int64())
        data["reason"] = pa.array(["r"] * n)
        data["raw"] = pa.array([f"{v:032x}" for v in rng.integers(0, 2**62, n)])
        return pa.table(data, schema=schema)

    lake.tables.append("rejected_rows", rows(60_000))
    large = set(lake.tables.table("rejected_rows").file_uris())
    dt = lake.tables.table("rejected_rows")
    sizes = pa.table(dt.get_add_actions(flatten=True)).column("size_bytes").to_pylist()
    assert sizes[0] > DAEMON_TARGET_BYTES
    for _ in range(12):
        lake.tables.append("rejected_rows", rows(50))
    before = snapshot(tmp_path / "lake", ["rejected_rows"])

    done = compact_if_needed(lake, Settings(maintain_every_commits=10))

    assert any("rejected_rows" in line for line in done)
    after_files = set(lake.tables.table("rejected_rows").file_uris())
    assert large <= after_files  # the large file was not rewritten
    assert len(after_files) == 2  # the 12 small files became one
    assert_same_tables(snapshot(tmp_path / "lake", ["rejected_rows"]), before)

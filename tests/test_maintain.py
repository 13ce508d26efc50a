"""Maintenance: compaction, checkpoints and vacuum leave every table reading back identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_same_tables, snapshot

from ecom_stream.cli import main
from ecom_stream.lake import TABLES, Lake


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
    files_before = {name: lake.file_count(name) for name in every}
    assert files_before["bronze_orders"] > 1

    capsys.readouterr()
    assert main([*base, "maintain", "--retention-hours", "0"]) == 0
    out = capsys.readouterr().out
    assert "bronze/orders: files" in out and "vacuum deleted" in out

    after = snapshot(tmp_path / "lake", every)
    assert_same_tables(after, before)
    files_after = {name: Lake(tmp_path / "lake").file_count(name) for name in every}
    assert files_after["bronze_orders"] == 1
    assert all(files_after[n] <= files_before[n] for n in every)
    # Unreferenced files are gone from disk: parquet files on disk == files referenced.
    on_disk = len(list((tmp_path / "lake" / "bronze" / "orders").glob("*.parquet")))
    assert on_disk == 1

    capsys.readouterr()
    assert main([*base, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["tables"]["bronze/orders"]["files"] == 1

"""Recovery from a half-failed micro-batch: a merge that fails (permission denied, disk full)
after another of the same micro-batch committed is healed by the next start or micro-batch."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import COMPARED_TABLES, assert_same_tables, snapshot
from test_pipeline import order, product

from ecom_stream.config import Settings
from ecom_stream.engine.backfill import run_backfill
from ecom_stream.engine.refresh import GoldRefresher
from ecom_stream.storage.lake import Lake
from ecom_stream.storage.tables import Tables


def _first_files(write: Callable[..., Path], folder: Path) -> None:
    write("products-1.json", [product(1, price=10.0), product(2, price=4.0)], folder=folder)
    write(
        "orders-1.json",
        [order(1, pids=[1, 2, 2]), order(2, pids=[2], created="2026-01-20T08:00:00")],
        folder=folder,
    )
    # A new order, and order 1 updated: fewer lines, and moved to another month.
    write(
        "orders-2.json",
        [
            order(3, pids=[1, 2], created="2026-01-07T09:00:00"),
            order(1, pids=[2], status="shipped", created="2026-02-03T10:00:00",
                  updated="2026-02-04T00:00:00"),
        ],
        folder=folder,
    )


def _late_file(write: Callable[..., Path], folder: Path) -> None:
    # A price change lands before the failed file is retried: its gold refresh reads the
    # order lines of every day holding product 1 or 2.
    write(
        "products-2.json",
        [product(1, price=30.0, updated="2026-03-01T00:00:00"),
         product(2, price=1.0, updated="2026-03-01T00:00:00")],
        folder=folder,
    )


def _clean_run(tmp_path: Path, write: Callable[..., Path]) -> Path:
    s = Settings(landing_dir=tmp_path / "clean-landing", lake_dir=tmp_path / "clean-lake")
    s.landing_dir.mkdir()
    _first_files(write, s.landing_dir)
    _late_file(write, s.landing_dir)
    run_backfill(s.replace(microbatch_max_files=1), progress=False)
    return s.lake_dir


@pytest.mark.parametrize(
    ("method", "table", "call"),
    [
        ("merge_lines", "silver_order_lines", 2),
        ("merge_upsert", "silver_orders", 2),
        ("merge_upsert", "silver_orders", 1),
        ("merge_upsert", "silver_products", 1),
    ],
)
def test_a_failed_merge_is_healed_at_the_next_start(
    settings: Settings,
    write_batch: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    method: str,
    table: str,
    call: int,
) -> None:
    """One merge of a micro-batch fails once while the other commits; the next starts (a
    backfill with a newer file first, then rebuild-gold) succeed and give a clean run's tables."""
    expected = snapshot(_clean_run(tmp_path, write_batch))
    one_at_a_time = settings.replace(microbatch_max_files=1, backfill_retries=0)
    _first_files(write_batch, settings.landing_dir)
    original = getattr(Tables, method)
    calls = {"n": 0}

    def failing(self: Tables, *args: Any, **kwargs: Any) -> Any:
        name = "silver_order_lines" if method == "merge_lines" else args[0]
        if name == table:
            calls["n"] += 1
            if calls["n"] == call:
                raise PermissionError(13, "Permission denied (simulated)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Tables, method, failing)
    with pytest.raises(PermissionError):
        run_backfill(one_at_a_time, progress=False)
    monkeypatch.setattr(Tables, method, original)

    _late_file(write_batch, settings.landing_dir)
    run_backfill(one_at_a_time, progress=False)
    assert not list(settings.landing_dir.iterdir())
    assert_same_tables(snapshot(settings.lake_dir), expected)
    # rebuild-gold (a full recompute with every consistency check) agrees.
    lake = Lake(settings.lake_dir, writer=True)
    GoldRefresher(lake, settings).rebuild()
    assert_same_tables(snapshot(settings.lake_dir), expected)


def _mount_tmpfs(target: Path, size_kb: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(target)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs for the disk-full test (needs root): {exc}")


def _remount(target: Path, size_kb: int) -> None:
    subprocess.run(
        ["mount", "-o", f"remount,size={size_kb}k", str(target)],
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.mark.slow
def test_a_full_disk_is_healed_once_space_is_freed(
    settings: Settings, write_batch: Callable[..., Path], tmp_path: Path
) -> None:
    """The lake lives on a small tmpfs that fills up mid-backfill; once it has room again, the
    next backfill (with a newer file landed meanwhile) ends in a clean run's state. Sizes grow
    until the backfill fits, so the disk fills at many points (raw copies, bookkeeping, each
    silver merge, gold); at least one of them must be a silver merge."""
    expected = snapshot(
        _clean_run(tmp_path, write_batch),
        [*COMPARED_TABLES, "bronze_orders", "bronze_products", "rejected_rows"],
    )
    mount = tmp_path / "small"
    _mount_tmpfs(mount, 64)
    failures: list[str] = []
    try:
        for size_kb in range(168, 1024, 24):
            _remount(mount, size_kb)
            s = settings.replace(
                lake_dir=mount / "lake", microbatch_max_files=1, backfill_retries=0
            )
            _first_files(write_batch, s.landing_dir)
            try:
                run_backfill(s, progress=False)
            except Exception as exc:  # whatever a full disk raises
                failures.append(str(exc))
            else:
                break
            finally:
                _remount(mount, 64 * 1024)
            _late_file(write_batch, s.landing_dir)
            run_backfill(s, progress=False)
            assert not list(s.landing_dir.iterdir())
            assert_same_tables(snapshot(s.lake_dir, list(expected)), expected)
            shutil.rmtree(s.lake_dir)
        assert any("merge into" in f and "silver" in f for f in failures), failures
    finally:
        shutil.rmtree(mount / "lake", ignore_errors=True)
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=30)

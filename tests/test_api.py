"""The public API (ecom_stream.api) and the pytest plugin's fixtures, over real temporary lakes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

import ecom_stream
from ecom_stream import (
    ConfigError,
    EcomStreamError,
    LockError,
    Settings,
    backfill,
    open_lake,
    process_files,
    read_table,
)
from ecom_stream.api import PUBLIC_TABLES
from ecom_stream.storage.lake import TABLES
from ecom_stream.storage.lock import LakeLock


def product(pid: int) -> dict[str, Any]:
    return {
        "product_id": pid,
        "name": f"acme item {pid}",
        "category": "Books",
        "price": 10.0,
        "rating": 4.0,
        "stock": 3,
        "created_at": "2026-01-01T00:00:00",
        "updated_at": "2026-01-01T00:00:00",
    }


def order(oid: int) -> dict[str, Any]:
    return {
        "order_id": oid,
        "customer_id": 5,
        "product_ids": [1],
        "quantities": [2],
        "total": 20.0,
        "status": "pending",
        "payment_method": "paypal",
        "shipping_city": "Chicago",
        "created_at": "2026-01-02T00:00:00",
        "updated_at": "2026-01-02T00:00:00",
    }


def test_the_package_exports_the_api() -> None:
    for name in ecom_stream.__all__:
        assert hasattr(ecom_stream, name), name
    assert issubclass(LockError, EcomStreamError)


def test_public_table_names_cover_every_table() -> None:
    assert sorted(PUBLIC_TABLES.values()) == sorted(TABLES)


def test_open_lake_creates_an_empty_lake(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    assert lake.tables.exists()
    assert read_table(lake, "silver.orders").empty


def test_open_lake_refuses_a_file_or_a_foreign_folder(tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(EcomStreamError, match="is a file"):
        open_lake(file)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("x")
    with pytest.raises(EcomStreamError, match="not an ecom-stream lake"):
        open_lake(tmp_path / "docs")


def test_process_files_returns_per_file_outcomes(
    ecom_settings: Settings, drop_batch: Callable[..., Path]
) -> None:
    products = drop_batch("products-1.json", [product(1)])
    orders = drop_batch("orders-1.json", [order(1), order(2)])
    broken = ecom_settings.landing_dir / "orders-2.json"
    broken.write_text("[{")
    summary = process_files(ecom_settings.lake_dir, [orders, products, broken], ecom_settings)
    assert summary.by_name() == {
        "products-1.json": "merged",
        "orders-1.json": "merged",
        "orders-2.json": "quarantined",
    }
    assert summary.counts["merged"] == 2
    assert sorted(read_table(ecom_settings.lake_dir, "silver.orders")["order_id"]) == [1, 2]
    gold = read_table(ecom_settings.lake_dir, "gold.daily_revenue", columns=["category"])
    assert list(gold.columns) == ["category"]
    assert "Books" in set(gold["category"])
    # The same bytes again are a duplicate and change nothing.
    again = drop_batch("orders-1.json", [order(1), order(2)])
    assert process_files(ecom_settings.lake_dir, [again], ecom_settings).by_name() == {
        "orders-1.json": "duplicate"
    }


def test_process_files_takes_the_writer_lock(
    ecom_lake: Any, ecom_settings: Settings, drop_batch: Callable[..., Path]
) -> None:
    path = drop_batch("orders", [order(1)])
    with LakeLock(ecom_lake.layout.lock_path, "someone else"), pytest.raises(LockError):
        process_files(ecom_lake, [path], ecom_settings)
    assert path.exists()


def test_process_files_refuses_a_missing_file(ecom_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="no such batch file"):
        process_files(ecom_settings.lake_dir, [ecom_settings.landing_dir / "nope.json"])


def test_backfill_processes_a_folder(
    ecom_settings: Settings, drop_batch: Callable[..., Path]
) -> None:
    drop_batch("products", [product(1)])
    drop_batch("orders", [order(1)])
    summary = backfill(ecom_settings.landing_dir, ecom_settings.lake_dir, ecom_settings)
    assert summary.outcomes == {"merged": 2}
    with pytest.raises(ConfigError, match="does not exist"):
        backfill(ecom_settings.landing_dir / "missing", ecom_settings.lake_dir)


def test_read_table_filters_by_partition(
    ecom_settings: Settings, drop_batch: Callable[..., Path], run_pipeline: Callable[..., Any]
) -> None:
    drop_batch("orders", [order(1)])
    run_pipeline()
    assert (
        len(read_table(ecom_settings.lake_dir, "silver.orders", filters="order_month = '2026-01'"))
        == 1
    )


def test_read_table_lists_the_known_names(ecom_lake: Any) -> None:
    with pytest.raises(ConfigError, match=r"unknown table 'orders'.*silver\.orders"):
        read_table(ecom_lake, "orders")


def test_read_table_refuses_a_missing_lake(tmp_path: Path) -> None:
    with pytest.raises(EcomStreamError, match="no lake"):
        read_table(tmp_path / "nowhere", "silver.orders")


def test_run_pipeline_and_drop_batch_fixtures(
    ecom_settings: Settings, drop_batch: Callable[..., Path], run_pipeline: Callable[..., Any]
) -> None:
    first = drop_batch("orders", [order(1)])
    second = drop_batch("orders", [order(2)], lines=True)
    assert (first.name, second.name) == ("orders-0001.json", "orders-0002.jsonl")
    assert not [p for p in ecom_settings.landing_dir.iterdir() if p.name.startswith(".")]
    summary = run_pipeline()
    assert summary.counts == {"merged": 2}
    assert not first.exists()


def test_run_daemon_stops_on_its_event(ecom_settings: Settings) -> None:
    from ecom_stream.service.daemon import run_daemon as service_run_daemon

    # The API's run_daemon blocks until a signal: checked here through the same service call
    # with a stop event, after the API's own folder checks.
    with pytest.raises(ConfigError, match="does not exist"):
        ecom_stream.run_daemon(ecom_settings.replace(landing_dir=ecom_settings.landing_dir / "x"))
    stop = threading.Event()
    ready = threading.Event()
    worker = threading.Thread(
        target=service_run_daemon, args=(ecom_settings, stop, ready.set), daemon=True
    )
    worker.start()
    assert ready.wait(120)
    stop.set()
    worker.join(60)
    assert not worker.is_alive()


@pytest.mark.slow
def test_the_wheel_registers_the_pytest_plugin(tmp_path: Path) -> None:
    # Built from a copy: an in-tree build leaves an egg-info whose entry points pytest loads.
    src = tmp_path / "src"
    shutil.copytree(REPO / "ecom_stream", src / "ecom_stream")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("ecom_stream-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith("entry_points.txt")]
        text = zf.read(name).decode()
        assert "ecom_stream/testing/plugin.py" in zf.namelist()
    assert "[pytest11]\necom_stream = ecom_stream.testing.plugin" in text


@pytest.mark.skipif(
    bool(entry_points(group="pytest11", name="ecom_stream")),
    reason="the entry point is installed: -p would load the plugin a second time (pytest's rule)",
)
def test_the_plugin_loads_once_with_dash_p() -> None:
    """-p (the way to load it without installing the package) plus our conftest: loaded once."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "ecom_stream.testing.plugin",
            "tests/test_api.py",
            "-k",
            "exports_the_api",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

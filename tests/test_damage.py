"""A damaged lake is detected, named and never written over; an unfinished rebuild is marked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli
from deltalake import DeltaTable

from ecom_stream.config import Settings
from ecom_stream.engine.backfill import run_backfill
from ecom_stream.engine.commit import Commits
from ecom_stream.engine.rebuild import rebuild
from ecom_stream.errors import ConfigError, LakeDamagedError
from ecom_stream.service.daemon import Daemon
from ecom_stream.service.report import build_report
from ecom_stream.service.status import lake_status
from ecom_stream.storage.lake import Lake

FIX = "rebuild --into"


def product(pid: int, price: float = 10.0) -> dict[str, Any]:
    return {
        "product_id": pid,
        "name": f"item {pid}",
        "category": "Books",
        "price": price,
        "created_at": "2026-01-01T00:00:00",
    }


def order(
    oid: int, status: str = "pending", updated: str = "2026-01-02T00:00:00"
) -> dict[str, Any]:
    return {
        "order_id": oid,
        "customer_id": 5,
        "product_ids": [1],
        "quantities": [1],
        "total": 20.0,
        "status": status,
        "created_at": "2026-01-02T00:00:00",
        "updated_at": updated,
    }


@pytest.fixture
def filled(settings: Settings, write_batch: Callable[..., Path]) -> Settings:
    """A lake after three backfills (so every table has a few versions)."""
    write_batch("products-1.json", [product(i) for i in range(1, 6)])
    run_backfill(settings, progress=False)
    write_batch("orders-1.json", [order(1), order(2)])
    run_backfill(settings, progress=False)
    write_batch("orders-2.json", [order(3), order(1, "shipped", "2026-01-03T00:00:00")])
    run_backfill(settings, progress=False)
    return settings


def commit_file(lake: Lake, name: str, version: int) -> Path:
    return lake.layout.path(name) / "_delta_log" / f"{version:020d}.json"


def drop_newest_commit(lake: Lake, name: str) -> int:
    """Delete a table's newest commit file; returns the version it held."""
    version = DeltaTable(str(lake.layout.path(name))).version()
    newest = commit_file(lake, name, version)
    checkpoint = newest.with_suffix(".checkpoint.parquet")
    assert not checkpoint.exists(), "pick a version between checkpoints"
    newest.unlink()
    assert DeltaTable(str(lake.layout.path(name))).version() == version - 1
    return version


def data_files(lake: Lake, name: str) -> list[Path]:
    actions = DeltaTable(str(lake.layout.path(name))).get_add_actions(flatten=True)
    return [lake.layout.path(name) / p for p in actions.column("path").to_pylist()]


def one_line_error(stderr: str) -> str:
    """The command's error line (log lines aside), which must be the only one."""
    lines = [line for line in stderr.splitlines() if line.startswith("ecom-stream ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- a table log that went backwards ----------------------------------------------------------
@pytest.mark.parametrize("table", ["silver_orders", "daily_revenue"])
def test_a_rolled_back_table_log_stops_the_writer_before_it_writes(
    filled: Settings, write_batch: Callable[..., Path], table: str
) -> None:
    lake = Lake(filled.lake_dir)
    lost = drop_newest_commit(lake, table)
    rows_before = Lake(filled.lake_dir).queries.count("ledger")
    new = write_batch("orders-3.json", [order(4)])

    with pytest.raises(LakeDamagedError) as info:
        run_backfill(filled, progress=False)
    message = str(info.value)
    assert str(lake.layout.path(table)) in message and FIX in message
    assert f"version {lost - 1}" in message and f"version {lost}" in message
    # Nothing more was written: the lost version was not written again, the file waits.
    assert not commit_file(lake, table, lost).exists()
    assert Lake(filled.lake_dir).queries.count("ledger") == rows_before
    assert new.exists()


def test_a_rolled_back_ledger_is_detected_through_the_writers_marker(
    filled: Settings, write_batch: Callable[..., Path]
) -> None:
    lake = Lake(filled.lake_dir)
    lost = drop_newest_commit(lake, "ledger")
    write_batch("orders-3.json", [order(4)])
    with pytest.raises(LakeDamagedError, match=r"_ledger.*rebuild --into"):
        run_backfill(filled, progress=False)
    assert not commit_file(lake, "ledger", lost).exists()
    assert any(p["table"] == "_ledger" for p in lake_status(filled)["damage"])


def test_a_gap_in_a_table_log_is_damage(filled: Settings) -> None:
    lake = Lake(filled.lake_dir)
    version = DeltaTable(str(lake.layout.path("silver_orders"))).version()
    commit_file(lake, "silver_orders", version - 1).unlink()
    with pytest.raises(LakeDamagedError, match=r"silver/orders.*rebuild --into"):
        run_backfill(filled, progress=False)
    assert [p["table"] for p in lake_status(filled)["damage"]] == ["silver/orders"]


def test_status_reports_a_rolled_back_log_and_exits_non_zero(filled: Settings) -> None:
    assert lake_status(filled)["damage"] == []
    ok = run_cli("--landing", str(filled.landing_dir), "--lake", str(filled.lake_dir), "status")
    assert ok.returncode == 0, ok.stderr

    drop_newest_commit(Lake(filled.lake_dir), "silver_products")
    damage = lake_status(filled)["damage"]
    assert [d["table"] for d in damage] == ["silver/products"]
    assert FIX in damage[0]["fix"]
    result = run_cli("--landing", str(filled.landing_dir), "--lake", str(filled.lake_dir), "status")
    assert result.returncode == 1
    assert "silver/products" in result.stdout and "damaged" in result.stdout
    line = one_line_error(result.stderr)
    assert "damaged" in line and FIX in line


def test_commit_files_expiring_under_the_retention_are_not_damage(
    filled: Settings, write_batch: Callable[..., Path]
) -> None:
    """Delta deletes commit files older than a checkpoint: only a newest version below the
    recorded one is damage."""
    lake = Lake(filled.lake_dir)
    lake.ensure_tables()
    for name in ("silver_orders", "silver_products", "ledger"):
        dt = lake.tables.table(name)
        dt.create_checkpoint()
        for version in range(dt.version()):
            commit_file(lake, name, version).unlink(missing_ok=True)
    assert lake_status(filled)["damage"] == []
    write_batch("orders-3.json", [order(4)])
    summary = run_backfill(filled, progress=False)
    assert summary.outcomes == {"merged": 1}
    assert lake_status(filled)["damage"] == []


# -- data files that cannot be read -----------------------------------------------------------
def test_a_missing_data_file_stops_backfill_with_one_line(
    filled: Settings, write_batch: Callable[..., Path]
) -> None:
    lake = Lake(filled.lake_dir)
    for path in data_files(lake, "silver_orders"):
        path.unlink()
    write_batch("orders-3.json", [order(2, "shipped", "2026-01-05T00:00:00")])
    args = ["--landing", str(filled.landing_dir), "--lake", str(filled.lake_dir)]
    result = run_cli(*args, "backfill", "--no-progress")
    assert result.returncode == 1, result.stderr
    line = one_line_error(result.stderr)
    assert "silver/orders" in line and "missing" in line and FIX in line
    assert (filled.landing_dir / "orders-3.json").exists()

    status = run_cli(*args, "status", "--json")
    assert status.returncode == 1
    assert "silver/orders" in status.stdout and "missing" in status.stdout


def test_a_truncated_data_file_gives_one_line_in_report(filled: Settings) -> None:
    lake = Lake(filled.lake_dir)
    (target,) = data_files(lake, "silver_products")
    size = target.stat().st_size
    with open(target, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(LakeDamagedError, match=r"silver/products.*rebuild --into"):
        build_report(filled)
    result = run_cli("--lake", str(filled.lake_dir), "report")
    assert result.returncode == 1
    line = one_line_error(result.stderr)
    assert "silver/products" in line and FIX in line


def test_status_checks_every_data_file_exists_with_its_size(filled: Settings) -> None:
    lake = Lake(filled.lake_dir)
    # Bronze is never read on the per-batch path: only status can notice.
    data_files(lake, "bronze_orders")[0].unlink()
    quality = data_files(lake, "quality_validations")[0]
    with open(quality, "ab") as fh:
        fh.write(b"junk")
    damage = {d["table"]: d["problem"] for d in lake_status(filled)["damage"]}
    assert set(damage) == {"bronze/orders", "quality/validations"}
    assert "missing" in damage["bronze/orders"]
    assert "size" in damage["quality/validations"]


# -- an unfinished rebuild --------------------------------------------------------------------
def test_an_interrupted_rebuild_is_marked_incomplete_and_refused(
    filled: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "rebuilt"
    commit = Commits.microbatch
    calls = {"n": 0}

    def dies_on_the_second(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as good as a kill: the rebuild stops half-way
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(Commits, "microbatch", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        rebuild(filled.replace(microbatch_max_files=1), target)
    monkeypatch.undo()

    partial = filled.replace(lake_dir=target)
    damage = lake_status(partial)["damage"]
    assert len(damage) == 1 and "incomplete rebuild" in damage[0]["problem"]
    assert FIX in damage[0]["fix"] and "remove" in damage[0]["fix"]
    result = run_cli("--lake", str(target), "status")
    assert result.returncode == 1 and "incomplete rebuild" in result.stdout

    with pytest.raises(LakeDamagedError, match=r"incomplete rebuild.*rebuild --into.*remove"):
        run_backfill(partial, progress=False)
    with pytest.raises(LakeDamagedError, match="incomplete rebuild"):
        Daemon(partial).open()
    watch = run_cli("--landing", str(filled.landing_dir), "--lake", str(target), "watch")
    assert watch.returncode == 1
    assert "incomplete rebuild" in one_line_error(watch.stderr)
    with pytest.raises(ConfigError, match="not empty"):
        rebuild(filled, target)

    fresh = tmp_path / "rebuilt-2"
    rebuild(filled, fresh)
    assert lake_status(filled.replace(lake_dir=fresh))["damage"] == []
    assert not any(p.name.startswith("_rebuild") for p in fresh.iterdir())


def test_the_daemon_stops_on_damage_and_quarantines_nothing(tmp_path: Path) -> None:
    """Retrying, then quarantining the files, would write on top of a damaged lake."""

    class DamagedLake:
        lake = None
        calls = 0

        def process(self, paths: Any, **kwargs: Any) -> list[Any]:
            DamagedLake.calls += 1
            raise LakeDamagedError("table silver/orders is damaged: a data file is missing")

        def quarantine_path(self, path: Path, reason: str) -> None:
            raise AssertionError(f"quarantined {path.name} because of the lake's damage")

    landing = tmp_path / "landing"
    landing.mkdir()
    waiting = landing / "orders-1.json"
    waiting.write_text("[]")
    settings = Settings(
        landing_dir=landing, lake_dir=tmp_path / "lake", quiet_seconds=0.1, batch_retries=2
    )
    daemon = Daemon(settings, pipeline_factory=DamagedLake)
    daemon.open()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        daemon.stop()
        thread.join(60)
        pytest.fail("the daemon kept running on a damaged lake")
    assert len(raised) == 1 and isinstance(raised[0], LakeDamagedError), raised
    assert "silver/orders" in str(raised[0])
    assert DamagedLake.calls == 1 and waiting.exists()


@pytest.mark.slow
def test_a_rebuild_killed_by_sigkill_is_reported_incomplete(
    settings: Settings, write_batch: Callable[..., Path], tmp_path: Path
) -> None:
    write_batch("products-1.json", [product(i) for i in range(1, 6)])
    for i in range(30):
        write_batch(f"orders-{i:03d}.json", [order(10 * i + k) for k in range(10)])
    run_backfill(settings, progress=False)
    target = tmp_path / "rebuilt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ECOM_MICROBATCH_MAX_FILES": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecom_stream", "--lake", str(settings.lake_dir),
         "rebuild", "--into", str(target)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ledger_log = target / "_ledger" / "_delta_log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger_log.exists() and len(list(ledger_log.glob("*.json"))) > 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the rebuild finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    result = run_cli("--lake", str(target), "status")
    assert result.returncode == 1 and "incomplete rebuild" in result.stdout
    backfill = run_cli("--lake", str(target), "backfill", "--no-progress")
    assert backfill.returncode == 1
    assert "incomplete rebuild" in one_line_error(backfill.stderr)

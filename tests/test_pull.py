"""``ecom-stream pull``: a REST API into landing, against real HTTP servers on 127.0.0.1.

The simulated source (``serve-api``) and a scripted test server that injects faults; the lake
built from the pulled files equals the lake built from the same records dropped as files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, assert_same_tables, run_cli, snapshot

from ecom_stream.config import Settings
from ecom_stream.engine.backfill import run_backfill
from ecom_stream.service.pull import pull_once
from ecom_stream.sources.pager import source_id
from ecom_stream.sources.rest import ApiContract
from ecom_stream.storage.cursors import Cursors
from ecom_stream.storage.lake import Lake
from ecom_stream.tools.generate import GenerateOptions, generate
from ecom_stream.tools.serve_api import SimulatedApi, serving

OPTIONS = dict(batches=4, orders_per_batch=150, products=80, product_batches=2, seed=7)


def _settings(tmp_path: Path, name: str, **changes: Any) -> Settings:
    landing, lake = tmp_path / name / "landing", tmp_path / name / "lake"
    landing.mkdir(parents=True)
    base = Settings(landing_dir=landing, lake_dir=lake, pull_backoff_seconds=0.01)
    return base.replace(**changes)


def _pull(settings: Settings, url: str) -> list[Any]:
    lake = Lake(settings.lake_dir)
    lake.ensure_tables()
    return pull_once(settings, ApiContract.from_settings(settings, url), lake)


def _files_lake(tmp_path: Path, **options: Any) -> Path:
    """The lake built from the simulated source's files (the reference)."""
    settings = _settings(tmp_path, "files")
    generate(GenerateOptions(out=settings.landing_dir, **{**OPTIONS, **options}))
    run_backfill(settings, progress=False)
    return settings.lake_dir


def test_a_pull_lands_the_api_and_the_lake_equals_the_files_lake(tmp_path: Path) -> None:
    api = SimulatedApi(GenerateOptions(out=tmp_path, **OPTIONS))
    settings = _settings(tmp_path, "api", pull_page_size=200)
    with serving(api) as url:
        results = _pull(settings, url)
    products, orders = results
    assert products.reported_total == products.records_landed == 80
    assert orders.reported_total == orders.records_landed == orders.pages * 200 - 200 + len(
        json.loads((settings.landing_dir / orders.files[-1]).read_text())
    )
    names = sorted(p.name for p in settings.landing_dir.iterdir())
    assert names == sorted(products.files + orders.files)
    assert all(n.startswith(("products-api-", "orders-api-")) for n in names)
    run_backfill(settings, progress=False)
    assert_same_tables(snapshot(settings.lake_dir), snapshot(_files_lake(tmp_path)))


def test_the_cursor_makes_the_next_pull_incremental(tmp_path: Path) -> None:
    api = SimulatedApi(GenerateOptions(out=tmp_path, **{**OPTIONS, "batches": 3}))
    settings = _settings(tmp_path, "api", pull_page_size=500)
    # The simulated source sends a few orders up to 3 days late: a 3-day lag picks them up.
    lagged = settings.replace(pull_lag_seconds=3 * 86400)
    with serving(api) as url:
        _pull(settings, url)
        idle = _pull(settings, url)
        assert [r.records_landed for r in idle] == [0, 0]  # nothing new: nothing lands
        assert [r.records_skipped for r in idle] == [1, 1]  # the newest instant, served again
        _pull(lagged, url)  # only sets the next pull's start 3 days back
        api.add_day()
        products, orders = _pull(lagged, url)
        cursor = Cursors(Lake(settings.lake_dir).layout).read(source_id(url), "orders")
    assert products.records_landed == products.reported_total < 80  # the last 3 days only
    assert orders.records_landed == orders.reported_total > 150  # the last 3 days and the new
    assert cursor["since"].startswith("2026-01-01")  # the newest update (Jan 4) minus 3 days
    run_backfill(settings, progress=False)
    assert_same_tables(snapshot(settings.lake_dir), snapshot(_files_lake(tmp_path, batches=4)))


def test_a_lag_reads_recent_updates_again(tmp_path: Path) -> None:
    api = SimulatedApi(GenerateOptions(out=tmp_path, **{**OPTIONS, "batches": 2}))
    settings = _settings(tmp_path, "api", pull_lag_seconds=6 * 3600)
    with serving(api) as url:
        _pull(settings, url)
        again = _pull(settings, url)
    assert again[1].records_landed > 1 and again[1].records_skipped == 0


@pytest.mark.slow
def test_serve_api_and_pull_once_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, "-m", "ecom_stream", "serve-api", "--port", "0", "--batches", "2",
         "--orders-per-batch", "100", "--products", "50"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        landing, lake = tmp_path / "landing", tmp_path / "lake"
        done = run_cli("--landing", str(landing), "--lake", str(lake), "pull", "--url", url,
                       "--once", "--create", "--page-size", "60")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "pull: 240 records in 5 files" in done.stdout
        status = run_cli("--landing", str(landing), "--lake", str(lake), "status", "--json")
        assert status.returncode == 0, status.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0

"""``ecom-stream pull``: a REST API into landing, against real HTTP servers on 127.0.0.1.

The simulated source (``serve-api``) and a scripted test server that injects faults; the lake
built from the pulled files equals the lake built from the same records dropped as files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, assert_same_tables, run_cli, snapshot
from pull_servers import fault_server, offset_api

from ecom_stream.cli.main import main
from ecom_stream.config import Settings
from ecom_stream.engine.backfill import run_backfill
from ecom_stream.service.pull import pull_once
from ecom_stream.service.status import lake_status
from ecom_stream.sources.pager import source_id
from ecom_stream.sources.rest import ApiContract, PullError
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
    waiting = lake_status(settings)["sources"]["endpoints"]
    assert [e["files_waiting"] for e in waiting] == [len(orders.files), len(products.files)]
    run_backfill(settings, progress=False)
    assert_same_tables(snapshot(settings.lake_dir), snapshot(_files_lake(tmp_path)))
    sources = lake_status(settings)["sources"]
    assert sources["pulls"] == 1 and sources["failed"] == 0
    by_endpoint = {e["endpoint"]: e for e in sources["endpoints"]}
    assert by_endpoint["products"]["reported_total"] == 80
    for e, result in ((by_endpoint["products"], products), (by_endpoint["orders"], orders)):
        assert e["balanced"] is True and e["overlap"] == 0 and e["files_waiting"] == 0
        assert e["records_landed"] == e["rows_in"] == result.records_landed
        assert 0 < e["rows_merged"] <= e["rows_in"]
    json.dumps(sources)  # status --json prints it


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
        status = run_cli("--landing", str(landing), "--lake", str(lake), "status")
        assert status.returncode == 0, status.stderr
        assert "source reported 190, landed 190 (0 overlap), merged 0 (4 files waiting)" in (
            status.stdout
        )
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0


FAULTY = ["500", "ok", "429", "overlap", "slow", "ok", "truncated", "cut", "html503", "overlap"]


def test_faults_are_retried_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    api = SimulatedApi(GenerateOptions(out=tmp_path, **OPTIONS))
    settings = _settings(tmp_path, "api", pull_page_size=100, pull_timeout_seconds=0.5)
    waits: list[float] = []
    with fault_server(api, {"orders": FAULTY}) as (url, _script):
        lake = Lake(settings.lake_dir)
        lake.ensure_tables()
        contract = ApiContract.from_settings(settings, url)
        _products, orders = pull_once(settings, contract, lake, sleep=waits.append)
    assert 7.0 in waits  # the 429's Retry-After, honoured
    assert len(waits) == 6  # 500, 429, slow, truncated, cut, html503: one retry each
    assert orders.outcome == "ok" and len(orders.files) == orders.pages
    assert orders.records_landed == orders.reported_total + 50  # two overlapping pages
    assert len(orders.keys) == orders.reported_total  # ... but no record is missing
    for name in orders.files:  # every landed file is whole JSON
        json.loads((settings.landing_dir / name).read_text())
    run_backfill(settings, progress=False)
    assert_same_tables(snapshot(settings.lake_dir), snapshot(_files_lake(tmp_path)))
    shown = {e["endpoint"]: e for e in lake_status(settings)["sources"]["endpoints"]}
    assert shown["orders"]["overlap"] == 50 and shown["orders"]["balanced"] is True


def test_a_page_that_keeps_failing_stops_the_pull_with_its_cursor_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = SimulatedApi(GenerateOptions(out=tmp_path, **OPTIONS))
    settings = _settings(tmp_path, "api")
    with fault_server(api, {"orders": ["ok", "ok", "down"]}) as (url, script):
        env = {"ECOM_PULL_RETRIES": "2", "ECOM_PULL_BACKOFF_SECONDS": "0.01"}
        argv = ["--landing", str(settings.landing_dir), "--lake", str(settings.lake_dir),
                "pull", "--url", url, "--once", "--page-size", "100"]  # fmt: skip
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            code = main(argv)
        failing = script.requests["orders"][2]
        err = [line for line in capsys.readouterr().err.splitlines() if "WARNING" not in line]
        assert code == 1
        assert len(err) == 1 and "keeps failing (HTTP 500; 3 attempts)" in err[0], err
        assert err[0].startswith("ecom-stream pull: error: ")
        cursor = Cursors(Lake(settings.lake_dir).layout).read(source_id(url), "orders")
        assert cursor["next"] == failing["cursor"]  # the failing page is the next one asked
        assert len(list(settings.landing_dir.glob("orders-*"))) == 2
        rows = Lake(settings.lake_dir).tables.read("sources").to_pylist()
        assert [(r["endpoint"], r["outcome"]) for r in rows] == [
            ("products", "ok"), ("orders", "failed")
        ]
        assert rows[1]["records_landed"] == 200 and "keeps failing" in rows[1]["error"]
        # Once the API answers again, the pull resumes at that page: nothing is missing.
        script.faults = {}
        lake = Lake(settings.lake_dir)
        products, orders = pull_once(settings, ApiContract.from_settings(settings, url), lake)
        assert script.requests["orders"][3]["cursor"] == failing["cursor"]
    assert (products.records_landed, products.records_skipped) == (0, 1)  # nothing new
    assert orders.resumed and orders.records_landed == orders.reported_total - 200
    run_backfill(settings, progress=False)
    assert_same_tables(snapshot(settings.lake_dir), snapshot(_files_lake(tmp_path)))


def test_a_refusal_is_not_retried(tmp_path: Path) -> None:
    api = SimulatedApi(GenerateOptions(out=tmp_path, **OPTIONS))
    settings = _settings(tmp_path, "api", pull_token="wrong")
    with serving(api, token="right") as url, pytest.raises(PullError, match="HTTP 401"):
        _pull(settings, url)


def _wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_pull_polls_every_n_seconds_until_sigterm(tmp_path: Path) -> None:
    api = SimulatedApi(GenerateOptions(out=tmp_path, **{**OPTIONS, "batches": 1}))
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    with serving(api) as url:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        pull = subprocess.Popen(
            [sys.executable, "-m", "ecom_stream", "--landing", str(landing), "--lake", str(lake),
             "pull", "--url", url, "--every", "0.3", "--create"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            _wait_for(lambda: len(list(landing.glob("orders-api-*"))) == 1, 60, "the first pull")
            api.add_day()  # the next poll picks the new day up
            _wait_for(lambda: len(list(landing.glob("orders-api-*"))) == 2, 30, "a later poll")
            pull.send_signal(signal.SIGTERM)
            out, err = pull.communicate(timeout=30)
        finally:
            if pull.poll() is None:
                pull.kill()
    assert pull.returncode == 0, err
    assert out.count("pull: ") >= 2
    rows = Lake(lake).tables.read("sources").to_pylist()
    assert {r["outcome"] for r in rows} == {"ok"}


@pytest.mark.slow
def test_demo_with_the_api_source_pulls_into_the_daemon(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "ecom_stream", "demo", "--landing", str(tmp_path / "landing"),
           "--lake", str(tmp_path / "lake"), "--port", str(port), "--interval", "1",
           "--orders-per-batch", "20", "--history-batches", "4", "--source", "api"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "ECOM_QUIET_SECONDS": "0.3"}
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        def pulled_and_merged() -> bool:
            assert demo.poll() is None, log.read_text()
            if not Lake(tmp_path / "lake").tables.exists():
                return False
            status = lake_status(Settings(lake_dir=tmp_path / "lake"))
            ends = status["sources"]["endpoints"]
            return len(ends) == 2 and all(e["files_processed"] > 0 for e in ends)

        _wait_for(pulled_and_merged, 120, "pulled files to be merged")
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0, log.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
    assert "pulled from the API" in log.read_text()


def test_offset_paging_and_other_names_are_settings(tmp_path: Path) -> None:
    api = SimulatedApi(GenerateOptions(out=tmp_path, **{**OPTIONS, "batches": 1}))
    records = api.page("orders", None, 10_000, None)["data"]
    settings = _settings(
        tmp_path, "api", pull_paging="offset", pull_page_size=40, pull_param_limit="per_page",
        pull_param_cursor="offset", pull_field_data="items", pull_field_total="count",
        pull_orders_path="/v2/orders", pull_products_path="/v2/products",
    )  # fmt: skip
    with offset_api(records) as url:
        products, orders = _pull(settings, url)
    assert products.records_landed == 0 and products.reported_total == 0
    assert orders.records_landed == orders.reported_total == len(records) == len(orders.keys)
    assert orders.pages == len(records) // 40 + 1


def test_the_pull_compacts_its_sources_table(tmp_path: Path) -> None:
    api = SimulatedApi(GenerateOptions(out=tmp_path, **{**OPTIONS, "batches": 1}))
    settings = _settings(tmp_path, "api", maintain_every_commits=3)
    with serving(api) as url:
        for _ in range(4):
            _pull(settings, url)
    lake = Lake(settings.lake_dir)
    assert lake.queries.file_count("sources") < 3
    assert lake.tables.read("sources").num_rows == 8  # 4 pulls x 2 endpoints


@pytest.mark.slow
def test_sigterm_during_a_retry_wait_stops_the_pull_at_once(tmp_path: Path) -> None:
    api = SimulatedApi(GenerateOptions(out=tmp_path, **{**OPTIONS, "batches": 1}))
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    # Every orders request answers 429 with Retry-After: 7; the wait is cut short.
    with fault_server(api, {"orders": ["429"] * 50}) as (url, script):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        pull = subprocess.Popen(
            [sys.executable, "-m", "ecom_stream", "--landing", str(landing), "--lake", str(lake),
             "pull", "--url", url, "--once", "--create"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            _wait_for(lambda: len(script.requests["orders"]) == 1, 60, "the first 429")
            time.sleep(0.5)
            pull.send_signal(signal.SIGTERM)
            _out, err = pull.communicate(timeout=30)
        finally:
            if pull.poll() is None:
                pull.kill()
    assert pull.returncode == 0, err
    assert len(script.requests["orders"]) == 1  # it stopped inside the wait, not after it
    rows = Lake(lake).tables.read("sources").to_pylist()
    outcomes = [(r["endpoint"], r["outcome"]) for r in rows]
    assert outcomes == [("products", "ok"), ("orders", "stopped")]


def test_pulled_file_names_do_not_number_the_demo_series(tmp_path: Path) -> None:
    from ecom_stream.tools.demo import start_up

    settings = _settings(tmp_path, "demo")
    (settings.landing_dir / "orders-api-20261208T002108512155-000001.json").write_text("[]")
    (settings.landing_dir / "orders-000004.json").write_text("[]")
    assert start_up(settings, 0, 10, say=lambda _line: None).start == 5

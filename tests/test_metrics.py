"""The daemon's metrics and health endpoints: a real daemon in-process on a tmp_path lake,
scraped over HTTP on an ephemeral port, its counts checked against the ledger; ``/ready``
turning 503 when the worker thread dies. Nothing asserts speed."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import QUIET, FakePipeline, wait_until
from test_pipeline import order, product

from ecom_stream.config import Settings
from ecom_stream.service.daemon import Daemon
from ecom_stream.service.metrics import STAGES, StreamMetrics
from ecom_stream.transform.bookkeeping import FileOutcome

Started = Callable[..., Daemon]


@pytest.fixture
def start_daemon() -> Iterator[Started]:
    """``start_daemon(settings, factory=None) -> Daemon``: open and run a daemon on a thread;
    stopped (and checked to exit 0) after the test."""
    running: list[tuple[Daemon, threading.Thread, list[int]]] = []

    def start(settings: Settings, factory: Callable[[], Any] | None = None) -> Daemon:
        daemon = Daemon(settings, pipeline_factory=factory)
        daemon.open()
        ready = threading.Event()
        codes: list[int] = []
        thread = threading.Thread(target=lambda: codes.append(daemon.run(ready.set)))
        thread.start()
        assert ready.wait(60)
        running.append((daemon, thread, codes))
        return daemon

    yield start
    for daemon, thread, codes in running:
        daemon.stop()
        thread.join(60)
        assert codes == [0]


def get(daemon: Daemon, path: str) -> tuple[int, str]:
    """(status, body) of a GET on the daemon's metrics port."""
    assert daemon.watch.server is not None
    try:
        with urllib.request.urlopen(daemon.watch.server.url + path, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(daemon: Daemon) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, keyed by (name, labels)."""
    status, text = get(daemon, "/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def files_seen(daemon: Daemon) -> float:
    return sum(v for (n, _), v in scrape(daemon).items() if n == "ecomstream_files_total")


def test_scraped_counts_match_the_ledger_during_a_stream(
    ecom_settings: Settings, drop_batch: Callable[..., Path], start_daemon: Started
) -> None:
    settings = ecom_settings.replace(metrics_port=0, quiet_seconds=QUIET)
    drop_batch("products-1.json", [product(1), product(2, price=-1), product(3, price=5.0)])
    drop_batch("orders-1.json", [order(1), order(2, pids=[3])])
    daemon = start_daemon(settings)
    assert get(daemon, "/healthz") == (200, '{"alive": true}')
    wait_until(lambda: files_seen(daemon) == 2, 60, "the first two files in the metrics")
    # While it runs: a file quarantined by the missing-total gate, then a merged one.
    drop_batch("orders-2.json", [order(3), order(4, total=None)])
    wait_until(lambda: files_seen(daemon) == 3, 60, "the quarantined file")
    drop_batch("orders-3.json", [order(5, pids=[1, 3])])
    wait_until(lambda: files_seen(daemon) == 4, 60, "the fourth file")

    samples = scrape(daemon)
    ledger = daemon.lake.tables.read_pandas("ledger")
    for (entity, outcome), n in ledger.groupby(["entity", "outcome"]).size().items():
        assert sample(samples, "ecomstream_files_total", entity=entity, outcome=outcome) == n
    assert sample(samples, "ecomstream_files_total", entity="orders", outcome="quarantined") == 1
    for entity, rows in ledger.groupby("entity"):
        for column in ("rows_merged", "rows_rejected", "rows_rescued"):
            got = sample(samples, f"ecomstream_{column}_total", entity=entity)
            assert got == rows[column].sum(), (entity, column)
    merged = int((ledger["outcome"] == "merged").sum())
    assert sample(samples, "ecomstream_drop_to_gold_seconds_count") == merged
    assert sample(samples, "ecomstream_stage_duration_seconds_count", stage="read") == len(ledger)
    for stage in STAGES[1:]:
        assert sample(samples, "ecomstream_stage_duration_seconds_count", stage=stage) >= 1
    assert sample(samples, "ecomstream_expectations_failed_total",
                  rule="orders_total_missing_share") == 1  # fmt: skip
    assert sample(samples, "ecomstream_expectations_failed_total",
                  rule="products_price_positive") == 1  # fmt: skip
    assert sample(samples, "ecomstream_last_commit_timestamp_seconds") > 0
    assert sample(samples, "ecomstream_up") == 1
    assert sample(samples, "ecomstream_landing_backlog_files") == 0
    assert sample(samples, "ecomstream_landing_backlog_bytes") == 0
    assert sample(samples, "ecomstream_commit_conflicts_total") == 0
    # No file name is ever a label value.
    names = set(ledger["file_name"])
    assert not {v for (_, labels), _ in samples.items() for _, v in labels} & names

    status, body = get(daemon, "/ready")
    assert status == 200 and json.loads(body)["ready"] is True


class Fatal(BaseException):
    """Not an ``Exception``: the worker's loop does not catch it, so the thread dies."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_ready_turns_503_when_the_worker_dies(
    tmp_path: Path, start_daemon: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The supervisor would restart the dead worker at its next beat: not during this test.
    monkeypatch.setattr("ecom_stream.service.daemon.HEARTBEAT_SECONDS", 3600.0)
    (tmp_path / "landing").mkdir()
    settings = Settings(landing_dir=tmp_path / "landing", lake_dir=tmp_path / "lake",
                        quiet_seconds=QUIET, metrics_port=0)  # fmt: skip
    fake = FakePipeline(poison={"orders_1.json"}, poison_error=Fatal)
    daemon = start_daemon(settings, fake.factory)
    _, body = wait_until(lambda: (r := get(daemon, "/ready"))[0] == 200 and r, 30, "ready")
    assert json.loads(body)["checks"] == {
        "running": True, "lake_open": True, "worker_alive": True, "heartbeat_fresh": True
    }
    (tmp_path / "landing" / "orders_1.json").write_text("[]")
    _, body = wait_until(lambda: (r := get(daemon, "/ready"))[0] == 503 and r, 30, "503")
    answer = json.loads(body)
    assert answer["ready"] is False and answer["checks"]["worker_alive"] is False
    assert answer["reason"] == "the worker thread is dead"
    assert get(daemon, "/healthz")[0] == 200  # the process itself is alive
    assert get(daemon, "/nowhere")[0] == 404


def test_metrics_are_off_unless_asked_and_registries_are_private(tmp_path: Path) -> None:
    settings = Settings(landing_dir=tmp_path, lake_dir=tmp_path / "lake")
    a, b = Daemon(settings), Daemon(settings)
    assert a.watch.metrics.registry is not b.watch.metrics.registry
    a.watch.outcome(FileOutcome("orders_1.json", "orders", "b", "a", "merged", rows_merged=3))
    assert a.watch.metrics.values()['ecomstream_rows_merged_total{entity="orders"}'] == 3
    assert 'ecomstream_rows_merged_total{entity="orders"}' not in b.watch.metrics.values()
    a.watch.start()
    try:
        assert a.watch.server is None  # no port asked for: nothing listens
    finally:
        a.watch.stop()


def test_metric_names_follow_prometheus_conventions(tmp_path: Path) -> None:
    metrics = StreamMetrics(tmp_path, lambda: None)
    for family in metrics.registry.collect():
        assert family.name.startswith("ecomstream_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        assert labels <= {"entity", "outcome", "stage", "rule", "event", "result", "kind"}


def test_a_commit_conflict_is_counted(tmp_path: Path) -> None:
    from ecom_stream.errors import LakeCommitError, LakeError

    metrics = StreamMetrics(tmp_path, lambda: None)
    try:
        raise LakeError("merge failed") from LakeCommitError("conflict")
    except LakeError as exc:
        metrics.error(exc)
    metrics.error(RuntimeError("a bug"))
    values = metrics.values()
    assert values["ecomstream_commit_conflicts_total"] == 1
    assert values['ecomstream_processing_errors_total{kind="transient"}'] == 1
    assert values['ecomstream_processing_errors_total{kind="terminal"}'] == 1


def test_a_taken_metrics_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    from ecom_stream.errors import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(landing_dir=tmp_path, lake_dir=tmp_path / "lake", metrics_port=port)
        daemon = Daemon(settings)
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            daemon.watch.start()
        daemon.watch.stop()


def test_metrics_and_alert_settings_from_the_environment() -> None:
    from ecom_stream.errors import ConfigError

    s = Settings.from_sources({"ECOM_METRICS_PORT": "9108", "ECOM_ALERT_URL": "http://h/x"})
    assert (s.metrics_port, s.metrics_host, s.alert_url) == (9108, "127.0.0.1", "http://h/x")
    assert Settings.from_sources({"ECOM_METRICS_PORT": "off"}).metrics_port is None
    assert Settings.from_sources({}).metrics_port is None  # off unless asked
    with pytest.raises(ConfigError, match="ECOM_METRICS_PORT='x': not a valid value"):
        Settings.from_sources({"ECOM_METRICS_PORT": "x"})
    with pytest.raises(ConfigError, match=r"out of range: use 0 to 65535 \(--metrics-port"):
        Settings.from_sources({"ECOM_METRICS_PORT": "70000"})
    with pytest.raises(ConfigError, match="is not an http"):
        Settings.from_sources({}, {"alert_url": "ftp://h"})

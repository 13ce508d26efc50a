"""Alerts: received by a local webhook (a stdlib HTTP server on 127.0.0.1:0) from a real
daemon; a webhook that is down or hangs never blocks or fails a batch; the rules (gate
streaks, stale heartbeat) and the sender's retries and bounded queue. Nothing asserts speed."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_daemon import QUIET, FakePipeline, wait_until
from test_metrics import Started, sample, scrape, start_daemon
from test_pipeline import order, product

from ecom_stream.config import Settings
from ecom_stream.service import alerts as alerts_module
from ecom_stream.service.alerts import AlertRules, AlertSender, StaleWatch
from ecom_stream.transform.bookkeeping import FileOutcome

__all__ = ["start_daemon"]  # the fixture, used by name


class Webhook:
    """A local webhook: keeps every JSON body; answers 500 to the first ``fail_first``
    requests, or holds every request until :meth:`close` when ``hang``."""

    def __init__(self, fail_first: int = 0, hang: bool = False) -> None:
        self.received: list[dict[str, Any]] = []
        self.requests = 0
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests += 1
                if hang:
                    hook.release.wait(60)
                if hook.requests <= fail_first:
                    self.send_response(500)
                else:
                    hook.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, event: str) -> list[dict[str, Any]]:
        return [a for a in self.received if a["event"] == event]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Callable[..., Webhook]]:
    made: list[Webhook] = []

    def make(**kw: Any) -> Webhook:
        made.append(Webhook(**kw))
        return made[-1]

    yield make
    for hook in made:
        hook.close()


def test_a_real_daemon_alerts_on_a_quarantined_batch_and_a_new_anomaly_day(
    ecom_settings: Settings, drop_batch: Callable[..., Path], start_daemon: Started,
    webhook: Callable[..., Webhook],
) -> None:
    hook = webhook()
    settings = ecom_settings.replace(alert_url=hook.url, quiet_seconds=QUIET, metrics_port=0)
    drop_batch("products-1.json", [product(1)])
    # Ten quiet days of history: revenue 10, 20, 10, 20, ...
    history = [order(d, created=f"2026-01-{d:02d}T10:00:00", updated=f"2026-01-{d:02d}T10:00:00",
                     total=10.0 * (1 + d % 2)) for d in range(1, 11)]  # fmt: skip
    drop_batch("orders-1.json", history)
    daemon = start_daemon(settings)
    wait_until(lambda: sample(scrape(daemon), "ecomstream_files_total", entity="orders",
                              outcome="merged") == 1, 60, "the history")  # fmt: skip
    assert hook.events("anomaly") == []

    drop_batch("orders-2.json", [order(20), order(21, total=None)])  # fails the total gate
    alert = wait_until(lambda: hook.events("quarantined") or None, 60, "the quarantine alert")[0]
    assert alert["file"] == "orders-2.json" and alert["entity"] == "orders"
    assert "orders_total_missing_share" in alert["failed_rules"]
    assert alert["reason"] and alert["summary"].startswith("orders-2.json was quarantined")
    assert alert["lake"] == str(daemon.lake.layout.root)
    assert {"time", "host", "pid", "batch_id"} <= set(alert)

    spike = order(11, created="2026-01-11T10:00:00", updated="2026-01-11T10:00:00", total=900.0)
    drop_batch("orders-3.json", [spike])
    alert = wait_until(lambda: hook.events("anomaly") or None, 60, "the anomaly alert")[0]
    assert {a["date"] for a in alert["anomalies"]} == {"2026-01-11"}
    assert "Books" in {a["category"] for a in alert["anomalies"]}
    samples = scrape(daemon)
    assert sample(samples, "ecomstream_new_anomalies_total") == len(alert["anomalies"])
    assert sample(samples, "ecomstream_alerts_total", event="quarantined", result="sent") == 1


def test_a_hanging_webhook_never_blocks_or_fails_a_batch(
    tmp_path: Path, start_daemon: Started, webhook: Callable[..., Webhook]
) -> None:
    hook = webhook(hang=True)
    landing = tmp_path / "landing"
    landing.mkdir()
    settings = Settings(landing_dir=landing, lake_dir=tmp_path / "lake", quiet_seconds=QUIET,
                        batch_retries=0, alert_url=hook.url, alert_timeout_seconds=60)  # fmt: skip
    poison = {f"orders_{i}.json" for i in range(3)}
    fake = FakePipeline(poison=poison)
    start_daemon(settings, fake.factory)
    for name in sorted(poison):
        (landing / name).write_text("[]")
    wait_until(lambda: set(fake.quarantined) == poison, 30, "three quarantines")
    (landing / "orders_ok.json").write_text("[]")
    wait_until(lambda: "orders_ok.json" in fake.done(), 30, "the next file, alerts hanging")
    assert hook.requests >= 1 and hook.received == []  # the first POST still hangs


def test_the_daemons_watchdog_alerts_on_a_stale_heartbeat(
    tmp_path: Path, start_daemon: Started, webhook: Callable[..., Webhook],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from test_metrics import get

    # The supervisor stops beating (as if stuck): only the start's heartbeat is ever written.
    monkeypatch.setattr("ecom_stream.service.daemon.HEARTBEAT_SECONDS", 3600.0)
    hook = webhook()
    (tmp_path / "landing").mkdir()
    settings = Settings(landing_dir=tmp_path / "landing", lake_dir=tmp_path / "lake",
                        quiet_seconds=QUIET, heartbeat_stale_seconds=0.5, alert_url=hook.url,
                        metrics_port=0)  # fmt: skip
    daemon = start_daemon(settings, FakePipeline().factory)
    alert = wait_until(lambda: hook.events("stale") or None, 30, "the stale alert")[0]
    assert alert["age_seconds"] >= 0.5 and "stale after 0.5 s" in alert["summary"]
    status, body = get(daemon, "/ready")
    assert status == 503 and json.loads(body)["reason"] == "the heartbeat is stale or missing"
    assert len(hook.events("stale")) == 1  # once, however long it stays stale


def test_a_webhook_that_is_down_is_retried_then_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    results: list[tuple[str, str]] = []
    sender = AlertSender(url, lake="lake", retries=2, timeout=5, backoff=0.01,
                         counted=lambda e, r: results.append((e, r)))  # fmt: skip
    sender.start()
    sender.send("quarantined", "x was quarantined")
    wait_until(lambda: results or None, 30, "the give-up")
    sender.stop()
    assert results == [("quarantined", "failed")]
    assert any("cannot send the quarantined alert" in r.getMessage() for r in caplog.records)


def test_a_failing_webhook_is_retried_until_it_answers(webhook: Callable[..., Webhook]) -> None:
    hook = webhook(fail_first=2)
    results: list[tuple[str, str]] = []
    sender = AlertSender(hook.url, lake="lake", retries=3, backoff=0.01,
                         counted=lambda e, r: results.append((e, r)))  # fmt: skip
    sender.start()
    sender.send("stale", "old heartbeat", age_seconds=99.0)
    wait_until(lambda: results or None, 30, "the delivery")
    sender.stop()
    assert results == [("stale", "sent")] and hook.requests == 3
    assert hook.received[0]["age_seconds"] == 99.0


def test_a_full_queue_drops_alerts_with_a_warning(
    webhook: Callable[..., Webhook], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=alerts_module.__name__)
    monkeypatch.setattr(alerts_module, "QUEUE_SIZE", 2)
    hook = webhook(hang=True)
    results: list[tuple[str, str]] = []
    sender = AlertSender(hook.url, lake="lake", retries=0, timeout=60,
                         counted=lambda e, r: results.append((e, r)))  # fmt: skip
    sender.start()
    for i in range(6):
        sender.send("quarantined", f"file {i}")  # returns at once, the webhook hanging
    dropped = [r for r in results if r[1] == "dropped"]
    assert 3 <= len(dropped) <= 4  # 2 queued, maybe 1 taken by the sender
    assert sum("alert queue full" in r.getMessage() for r in caplog.records) == len(dropped)
    hook.release.set()
    sender.stop()


def quarantined(name: str, rules: list[str], entity: str = "orders") -> FileOutcome:
    return FileOutcome(name, entity, "b", "a", "quarantined", reason="r", failed_rules=rules)


def test_a_gate_failing_files_in_a_row_alerts_once_per_streak() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    policies = {"orders_total_missing_share": "quarantine-batch", "orders_status_known": "warn",
                "products_price_missing_share": "quarantine-batch"}  # fmt: skip
    rules = AlertRules(lambda event, summary, **f: sent.append((event, f)), policies, repeats=3)
    gate = "orders_total_missing_share"
    for i in range(2):
        rules.outcome(quarantined(f"o{i}", [gate, "orders_status_known"]))
    rules.outcome(quarantined("p0", ["products_price_missing_share"], "products"))  # other entity
    rules.outcome(quarantined("o2", [gate]))
    rules.outcome(quarantined("o3", [gate]))  # the streak goes on: no second alert
    gates = [f for e, f in sent if e == "gate_failing"]
    assert gates == [{"rule": gate, "entity": "orders", "consecutive": 3, "last_file": "o2"}]
    rules.outcome(FileOutcome("o4", "orders", "b", "a", "merged"))  # passes: the streak ends
    for i in range(5, 8):
        rules.outcome(quarantined(f"o{i}", [gate]))
    assert len([e for e, _ in sent if e == "gate_failing"]) == 2
    assert len([e for e, _ in sent if e == "quarantined"]) == 8


def test_a_stale_heartbeat_alerts_once_until_fresh_again() -> None:
    sent: list[dict[str, Any]] = []
    beat = {"time": 1000.0}
    watch = StaleWatch(lambda event, summary, **f: sent.append({"event": event, **f}),
                       lambda: beat["time"], stale_after=60)  # fmt: skip
    watch.check(now=1030.0)
    assert sent == []
    watch.check(now=1100.0)
    watch.check(now=1200.0)
    assert sent == [{"event": "stale", "age_seconds": 100.0}]
    beat["time"] = 1190.0
    watch.check(now=1200.0)  # fresh again: re-armed
    watch.check(now=1300.0)
    assert [a["event"] for a in sent] == ["stale", "stale"]

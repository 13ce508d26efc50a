"""Everything that watches a running daemon: its metrics, its health endpoints, its alerts.

``DaemonWatch`` is the engine's :class:`~ecom_stream.engine.observer.Observer` (micro-batch
timings, new anomalies) and takes the daemon's own events (each file's outcome, errors,
retries). It serves ``/metrics``, ``/healthz`` and ``/ready`` when ``metrics_port`` is set,
and posts alerts when ``alert_url`` is: a quarantined file, a new anomaly day, a gate failing
files in a row, and a stale heartbeat. The stale heartbeat is seen by a watchdog thread of
the daemon itself: it catches a stuck supervisor or heartbeat writes that fail (a full disk),
not a dead process, which cannot report itself (``/ready`` or ``status`` from outside do).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ecom_stream.engine.observer import Anomaly, Observer
from ecom_stream.service.alerts import AlertRules, AlertSender, StaleWatch
from ecom_stream.service.health import HealthServer
from ecom_stream.service.metrics import StreamMetrics
from ecom_stream.transform.bookkeeping import FileOutcome

if TYPE_CHECKING:
    from ecom_stream.service.daemon import Daemon

__all__ = ["DaemonWatch"]

# Why /ready says no, per failed check.
NOT_READY = {
    "running": "the daemon is stopping",
    "lake_open": "the lake is damaged or gone",
    "worker_alive": "the worker thread is dead",
    "heartbeat_fresh": "the heartbeat is stale or missing",
}


class DaemonWatch(Observer):
    """Metrics, health endpoints and alerts of one daemon (each part only when configured)."""

    watches_anomalies = True

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        s = daemon.settings
        self.metrics = StreamMetrics(daemon.landing, self._beat_time)
        self.server: HealthServer | None = None
        self.alerts: AlertSender | None = None
        self.rules: AlertRules | None = None
        self._stale: StaleWatch | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        if s.alert_url:
            self.alerts = AlertSender(
                s.alert_url, lake=str(daemon.lake.layout.root), retries=s.alert_retries,
                timeout=s.alert_timeout_seconds, backoff=s.retry_backoff_seconds,
                counted=lambda event, result: self.metrics.alerts.labels(event, result).inc(),
            )  # fmt: skip
            self.rules = AlertRules(self.alerts.send, s.policies, s.alert_gate_repeats)
            self._stale = StaleWatch(self.alerts.send, self._beat_time, s.heartbeat_stale_seconds)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the endpoints (a ``ConfigError`` if the port is taken) and start the threads."""
        s = self.daemon.settings
        if s.metrics_port is not None:
            self.server = HealthServer(s.metrics_host, s.metrics_port, self.metrics.registry,
                                       self.readiness)
            self.server.start()
        if self.alerts is not None:
            self.alerts.start()
            self._watchdog = threading.Thread(target=self._watch, name="ecom-stream-watchdog",
                                              daemon=True)
            self._watchdog.start()
        self.metrics.up.set(1)

    def stop(self) -> None:
        """Stop the threads and the endpoints (queued alerts get a short grace)."""
        self.metrics.up.set(0)
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(5)
        if self.alerts is not None:
            self.alerts.stop()
        if self.server is not None:
            self.server.stop()

    def _watch(self) -> None:
        assert self._stale is not None
        interval = min(5.0, self._stale.stale_after / 4)
        while not self._stop.wait(interval):
            self._stale.check(time.time())

    # -- the daemon's events ------------------------------------------------------------------
    def outcome(self, o: FileOutcome) -> None:
        """A file's outcome, recorded in the ledger."""
        self.metrics.outcome(o)
        if self.rules is not None:
            self.rules.outcome(o)

    def error(self, exc: BaseException) -> None:
        self.metrics.error(exc)

    def retried(self) -> None:
        self.metrics.retries.inc()

    def worker_restarted(self) -> None:
        self.metrics.worker_restarts.inc()

    # -- the engine's hooks -------------------------------------------------------------------
    def microbatch(self, outcomes: Sequence[FileOutcome]) -> None:
        self.metrics.microbatch(outcomes)

    def new_anomalies(self, found: Sequence[Anomaly]) -> None:
        self.metrics.anomalies.inc(len(found))
        if self.rules is not None:
            self.rules.new_anomalies(found)

    # -- health -------------------------------------------------------------------------------
    def readiness(self) -> dict[str, Any]:
        """``/ready``'s answer: running, lake open, worker alive, heartbeat fresh."""
        d = self.daemon
        beat = self._beat_time()
        age = None if beat is None else round(time.time() - beat, 1)
        checks = {
            "running": not d.stop_event.is_set(),
            "lake_open": d.damage is None and d.lake.layout.root.is_dir(),
            "worker_alive": d.worker_alive(),
            "heartbeat_fresh": age is not None and age <= d.settings.heartbeat_stale_seconds,
        }
        failed = [NOT_READY[name] for name, ok in checks.items() if not ok]
        return {"ready": not failed, "reason": "; ".join(failed) or None, "checks": checks,
                "heartbeat_age_seconds": age}

    def _beat_time(self) -> float | None:
        """The time the heartbeat was written (None: none yet, or the daemon stopped)."""
        beat = self.daemon.lake.markers.read("heartbeat")
        if beat is None or beat.get("stopped"):
            return None
        try:
            return float(beat["time"])
        except (KeyError, TypeError, ValueError):
            return None

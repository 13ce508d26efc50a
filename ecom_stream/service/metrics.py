"""The daemon's Prometheus metrics, on a registry of its own (several daemons may share a
process, as in the tests).

Counters and histograms are fed by the daemon (each file's outcome, errors, retries) and by
the engine's :class:`~ecom_stream.engine.observer.Observer` hooks (each micro-batch's stage
timings); the landing backlog and the heartbeat's age are measured when scraped. Labels are
low-cardinality only (entity, outcome, stage, rule, event): never a file name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ecom_stream.errors import LakeCommitError, is_transient
from ecom_stream.sources.listing import backlog
from ecom_stream.transform.bookkeeping import FileOutcome

__all__ = ["STAGES", "StreamMetrics"]

PREFIX = "ecomstream"
# The stages of a micro-batch, as the ledger's and the log line's timings name them.
STAGES = ("read", "validate", "merge", "gold", "commit")
# Seconds: a small file takes milliseconds a stage, a backfill micro-batch tens of seconds.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class _Scraped(Collector):
    """Gauges measured when scraped: the landing backlog and the heartbeat's age."""

    def __init__(self, landing: Path, beat_time: Callable[[], float | None]) -> None:
        self.landing = landing
        self.beat_time = beat_time

    def collect(self) -> Iterable[GaugeMetricFamily]:
        files = backlog(self.landing)
        size = 0
        for path in files:
            try:
                size += os.lstat(path).st_size
            except OSError:
                continue  # taken by the worker meanwhile
        yield GaugeMetricFamily(
            f"{PREFIX}_landing_backlog_files", "Batch files waiting in landing.", value=len(files)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_landing_backlog_bytes", "Bytes of the batch files waiting in landing.",
            value=size,
        )  # fmt: skip
        beat = self.beat_time()
        if beat is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_heartbeat_age_seconds", "Seconds since the daemon's last heartbeat.",
                value=max(0.0, time.time() - beat),
            )  # fmt: skip


class StreamMetrics:
    """Every metric of one daemon, registered on ``self.registry``."""

    def __init__(self, landing: Path, beat_time: Callable[[], float | None]) -> None:
        self.registry = CollectorRegistry()
        self._define(self.registry)
        self.registry.register(_Scraped(landing, beat_time))

    def _define(self, r: CollectorRegistry) -> None:
        """One statement a metric, named as exported (with `_total` added to counters)."""
        self.files = Counter(f"{PREFIX}_files", "Batch files handled, by entity and outcome.",
                             ["entity", "outcome"], registry=r)
        self.rows_merged = Counter(f"{PREFIX}_rows_merged", "Rows merged into silver.",
                                   ["entity"], registry=r)
        self.rows_rejected = Counter(f"{PREFIX}_rows_rejected", "Rows rejected by a row rule.",
                                     ["entity"], registry=r)
        self.rows_rescued = Counter(f"{PREFIX}_rows_rescued",
                                    "Rows whose unknown fields were kept in _rescued.",
                                    ["entity"], registry=r)
        self.expectations_failed = Counter(
            f"{PREFIX}_expectations_failed",
            "Files failing an expectation or row rule (any policy), by rule.", ["rule"], registry=r,
        )  # fmt: skip
        self.stage = Histogram(f"{PREFIX}_stage_duration_seconds",
                               "Time of a stage: read per file, the others per micro-batch.",
                               ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.drop_to_gold = Histogram(
            f"{PREFIX}_drop_to_gold_seconds",
            "From a file seen in landing to gold reflecting it.", buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.conflicts = Counter(f"{PREFIX}_commit_conflicts", "Delta commits that conflicted.",
                                 registry=r)
        self.retries = Counter(f"{PREFIX}_batch_retries", "Files retried after a failure.",
                               registry=r)
        self.errors = Counter(f"{PREFIX}_processing_errors",
                              "Failed attempts to process files, by kind.", ["kind"], registry=r)
        self.anomalies = Counter(f"{PREFIX}_new_anomalies",
                                 "Days and categories gold newly flags as anomalies.", registry=r)
        self.alerts = Counter(f"{PREFIX}_alerts", "Alerts by event and result (sent, failed, "
                              "dropped).", ["event", "result"], registry=r)
        self.worker_restarts = Counter(f"{PREFIX}_worker_restarts",
                                       "Worker threads restarted after dying.", registry=r)
        self.last_commit = Gauge(f"{PREFIX}_last_commit_timestamp_seconds",
                                 "Unix time of the last file recorded in the ledger.", registry=r)
        self.up = Gauge(f"{PREFIX}_up", "1 while the daemon runs.", registry=r)
        for stage in STAGES:
            self.stage.labels(stage)  # every series exists from the start (0 observations)

    def outcome(self, o: FileOutcome) -> None:
        """One file's outcome, as its ledger row says (called once the row is committed)."""
        entity = o.entity or "unknown"
        self.files.labels(entity, o.outcome).inc()
        self.rows_merged.labels(entity).inc(o.rows_merged)
        self.rows_rejected.labels(entity).inc(o.rows_rejected)
        self.rows_rescued.labels(entity).inc(o.rows_rescued)
        for rule in o.failed_rules:
            self.expectations_failed.labels(rule).inc()
        if o.gold_committed_at is not None:
            latency = (o.gold_committed_at - o.received_at).total_seconds()
            self.drop_to_gold.observe(max(0.0, latency))
        self.last_commit.set(time.time())

    def microbatch(self, outcomes: Sequence[FileOutcome]) -> None:
        """Stage times: ``read`` per file, the others once per micro-batch (its files share
        them; a file decided without a merge, a duplicate for one, has none)."""
        for o in outcomes:
            if "read_ms" in o.timings:
                self.stage.labels("read").observe(o.timings["read_ms"] / 1000)
        for stage in STAGES[1:]:
            times = [o.timings[f"{stage}_ms"] for o in outcomes if f"{stage}_ms" in o.timings]
            if times:
                self.stage.labels(stage).observe(max(times) / 1000)

    def error(self, exc: BaseException) -> None:
        """A failed attempt: counted by kind, and as a conflict if a commit conflicted."""
        self.errors.labels("transient" if is_transient(exc) else "terminal").inc()
        if _conflict(exc):
            self.conflicts.inc()

    def values(self) -> dict[str, Any]:
        """Every sample as ``{"name{labels}": value}`` (for tests and debugging)."""
        out: dict[str, Any] = {}
        for family in self.registry.collect():
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out


def _conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is (or was caused by) a Delta commit conflict."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, LakeCommitError):
            return True
        seen = seen.__cause__
    return False

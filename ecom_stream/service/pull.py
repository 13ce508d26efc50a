"""``ecom-stream pull``: pull a REST API into landing, once or every ``--every`` seconds.

Products are pulled before orders (orders are priced from products); each endpoint's pull is
recorded in the lake's ``sources`` table (reported total, records landed, files), whether it
succeeded or stopped on a page that kept failing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from ecom_stream.config import Settings
from ecom_stream.contract.schema import ENTITIES, SOURCES_SCHEMA
from ecom_stream.errors import EcomStreamError, is_transient, retry_delay
from ecom_stream.service.maintain import DAEMON_TARGET_BYTES, compact_table
from ecom_stream.service.signals import stop_signals
from ecom_stream.sources.pager import EndpointPull, PullTarget, pull_endpoint, source_id
from ecom_stream.sources.rest import ApiContract, PullStopped, make_client
from ecom_stream.storage.cursors import Cursors
from ecom_stream.storage.lake import Lake

__all__ = ["pull_once", "run_pull"]

logger = logging.getLogger(__name__)
TICK_SECONDS = 0.2  # how often a waiting pull looks for a stop signal
RECORD_RETRIES = 3  # a commit conflict with the daemon's maintenance of the table


def _ensure(lake: Lake, backoff: float) -> None:
    """Create the lake's tables if missing (the daemon may be creating them right now)."""
    for attempt in range(RECORD_RETRIES + 1):
        try:
            lake.ensure_tables()
            return
        except EcomStreamError as exc:
            if not is_transient(exc) or attempt == RECORD_RETRIES:
                raise
            time.sleep(retry_delay(backoff, attempt))


def _record(lake: Lake, rows: list[dict[str, object]], backoff: float, every: int) -> None:
    """Append this pull's reconciliation rows to the ``sources`` table."""
    table = pa.Table.from_pylist(rows, schema=SOURCES_SCHEMA)
    for attempt in range(RECORD_RETRIES + 1):
        try:
            lake.tables.append("sources", table)
            break
        except EcomStreamError as exc:
            if not is_transient(exc) or attempt == RECORD_RETRIES:
                raise
            time.sleep(retry_delay(backoff, attempt))
    _compact(lake, every)


def _compact(lake: Lake, every: int) -> None:
    """Compact the ``sources`` table once it holds ``every`` files: a file per pull, every 30
    s, and the pull is its only writer (the daemon never writes it, so never compacts it)."""
    try:
        if lake.queries.file_count("sources") >= every:
            compact_table(lake, "sources", target_bytes=DAEMON_TARGET_BYTES)
    except EcomStreamError as exc:  # `maintain` compacting it right now: next time
        logger.warning("could not compact the sources table: %s", exc)


def pull_once(
    settings: Settings,
    contract: ApiContract,
    lake: Lake,
    *,
    sleep: Callable[[float], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> list[EndpointPull]:
    """One pull of every endpoint; raises the first endpoint's ``PullError`` after
    recording what landed (the endpoints after it are not pulled)."""
    pull_id = uuid.uuid4().hex
    target = PullTarget(
        landing=settings.landing_dir,
        cursors=Cursors(lake.layout),
        source=source_id(contract.url),
        stamp=datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f"),
        lag=timedelta(seconds=settings.pull_lag_seconds),
    )
    results: list[EndpointPull] = []
    with make_client(settings) as client:
        for endpoint in ENTITIES:
            if stopping():
                break
            try:
                done = pull_endpoint(
                    client, contract, endpoint, target, sleep=sleep, stopping=stopping
                )
                results.append(done)
            except EcomStreamError as exc:
                failed = getattr(exc, "endpoint_pull", None)
                rows = [r.row(pull_id, contract.url) for r in [*results, failed] if r is not None]
                try:
                    _record(
                        lake, rows, settings.pull_backoff_seconds, settings.maintain_every_commits
                    )
                except EcomStreamError as record_error:  # the pull's own error matters more
                    logger.warning("could not record the failed pull: %s", record_error)
                raise
    if results:
        rows = [r.row(pull_id, contract.url) for r in results]
        _record(lake, rows, settings.pull_backoff_seconds, settings.maintain_every_commits)
    for r in results:
        logger.info(
            "pulled %s: %d records in %d files (source reported %s)",
            r.endpoint,
            r.records_landed,
            len(r.files),
            r.reported_total,
        )
    return results


def run_pull(
    settings: Settings, url: str | None, *, once: bool, stop: threading.Event | None = None
) -> int:
    """Pull once, or until SIGTERM / Ctrl-C (or ``stop``) every ``pull_every_seconds``.
    A pull that fails stops the command (exit 1 through the CLI), its cursor unchanged."""
    contract = ApiContract.from_settings(settings, url)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request: noise
    lake = Lake(settings.lake_dir)
    _ensure(lake, settings.pull_backoff_seconds)
    stop = stop or threading.Event()
    # The handler only records the signal (an Event.set could deadlock in a handler).
    with stop_signals() as signals:

        def stopping() -> bool:
            return bool(signals.received) or stop.is_set()

        def nap(seconds: float) -> None:
            """A retry's wait, cut short by a stop signal (the pull then stops)."""
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if stopping():
                    raise PullStopped("stopped while waiting to retry")
                time.sleep(min(TICK_SECONDS, max(0.0, deadline - time.monotonic())))

        while True:
            results = pull_once(settings, contract, lake, sleep=nap, stopping=stopping)
            landed = sum(r.records_landed for r in results)
            files = sum(len(r.files) for r in results)
            print(
                f"pull: {landed:,} records in {files} files into {settings.landing_dir}", flush=True
            )
            deadline = time.monotonic() + settings.pull_every_seconds
            while not once and not stopping() and time.monotonic() < deadline:
                time.sleep(min(TICK_SECONDS, max(0.0, deadline - time.monotonic())))
            if once or stopping():
                return 0

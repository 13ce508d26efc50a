"""The watcher daemon: a source hands out ready batch files, one worker writes.

Threads:

* the source (``sources.landing.LandingSource``) watches landing, says which files are ready;
* one worker thread hands the ready files to ONE ``Pipeline.process`` call (one merge per
  table per micro-batch), retries failures and compacts now and then;
* the calling (main) thread supervises: heartbeats, following the landing folder, signals.

Nothing that matters is kept only in memory: the pipeline records every file in the lake's
ledger before it deletes it from landing, so ``kill -9`` at any moment loses nothing and a
restart catches up from the folder.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecom_stream.config import Settings
from ecom_stream.errors import (
    EcomStreamError,
    LakeDamagedError,
    LakeError,
    is_transient,
    retry_delay,
)
from ecom_stream.logs import outcome_context
from ecom_stream.service.observe import DaemonWatch
from ecom_stream.service.signals import stop_signals
from ecom_stream.sources.landing import (
    LANDING_CHECK_SECONDS,
    OVERFLOW_LOGGER,
    LandingSource,
    ReadyQueue,
    writers_open,
)
from ecom_stream.storage.lake import Lake

if TYPE_CHECKING:  # the pipeline (pandas, Delta, GX) is imported when the daemon opens it
    from ecom_stream.engine.pipeline import FileOutcome, Pipeline

# OVERFLOW_LOGGER, ReadyQueue and writers_open moved to ecom_stream.sources; kept importable.
__all__ = ["OVERFLOW_LOGGER", "Daemon", "ReadyQueue", "run_daemon", "writers_open"]

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
MIN_PASS_SECONDS = 0.02  # at most one readiness pass per 20 ms, however many events arrive
SIGNAL_POLL_SECONDS = 0.2
COMPACT_CHECK_SECONDS = 30.0


class Daemon:
    """Watches ``settings.landing_dir`` and merges every batch file into the lake.

    Hold the lake lock before :meth:`run` (``run_daemon`` does). ``pipeline_factory`` is a
    seam for tests; by default a real :class:`Pipeline` is built.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        stop_event: threading.Event | None = None,
        pipeline_factory: Callable[[], Pipeline] | None = None,
        create_landing: bool = False,
    ) -> None:
        self.settings = settings
        self.source = LandingSource(settings.landing_dir, quiet_seconds=settings.quiet_seconds,
                                    rescan_seconds=settings.rescan_seconds,
                                    polling=settings.polling, create=create_landing)
        self.landing = self.source.landing
        self.lake = Lake(settings.lake_dir)
        self.stop_event = stop_event or threading.Event()
        self._factory = pipeline_factory or self._default_pipeline
        self._pipeline: Pipeline | None = None
        self._first_seen: dict[Path, datetime] = {}
        self._state_lock = threading.Lock()
        self._beat_lock = threading.Lock()
        self._started_at = time.time()
        self._processed = 0
        self._in_hand = 0
        self._last_error: str | None = None
        self._last_batch: dict[str, Any] | None = None
        self._worker: threading.Thread | None = None
        self._next_compact = 0.0
        self.signal_received: int | None = None
        self.aborted = False
        self.damage: LakeDamagedError | None = None
        self.watch = DaemonWatch(self)  # metrics, health endpoints, alerts (when configured)

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Check landing (see ``LandingSource.prepare``) and build the pipeline; raises
        ``EcomStreamError`` if either fails."""
        self.source.prepare()
        self._open_pipeline()

    def stop(self) -> None:
        """Ask the daemon to stop after the micro-batch in hand (from any thread)."""
        self.stop_event.set()
        self.source.wake()

    def signalled(self, signum: int) -> None:
        """Note a stop signal. Only a plain attribute is set: taking a lock (``Event.set``)
        inside a signal handler can deadlock with the interrupted main thread."""
        self.signal_received = signum

    def run(self, ready_callback: Callable[[], None] | None = None) -> int:
        """Watch until stopped; returns the exit code (0)."""
        try:
            self.watch.start()
            self.source.start()
            logger.info("watching %s (%s) for lake %s: %d file(s) waiting", self.landing,
                        "polling" if self.settings.polling else "native events",
                        self.lake.layout.root, self.source.pending_count())
            self._start_worker()
            self.write_heartbeat()
            if ready_callback:
                ready_callback()
            self._supervise_until_stopped()
        except KeyboardInterrupt:
            self.aborted = True  # second signal: leave now, mid-batch (crash safe)
            raise
        finally:
            self.stop()
            if self._worker is not None and not self.aborted:
                self._worker.join()  # it finishes the micro-batch in hand
            self.source.stop()
            self.watch.stop()
        self.write_heartbeat(stopped=True)
        # Counted in the folder: files taken for a micro-batch or a retry are no longer
        # pending in the source but may still be waiting in landing.
        logger.info("stopped: %d file(s) processed, %d left in landing for the next start",
                    self._processed, self.source.waiting_count())
        if self.damage is not None:
            raise self.damage
        return 0

    def _supervise_until_stopped(self) -> None:
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        next_landing_check = time.monotonic() + LANDING_CHECK_SECONDS
        while not self.stop_event.is_set():
            if self.signal_received is not None:
                logger.info("%s: finishing the micro-batch in hand, then stopping",
                            signal.Signals(self.signal_received).name)
                return
            if time.monotonic() >= next_landing_check:
                self.source.follow()
                next_landing_check = time.monotonic() + LANDING_CHECK_SECONDS
            if time.monotonic() >= next_beat:
                self.write_heartbeat()
                self._supervise()
                next_beat = time.monotonic() + HEARTBEAT_SECONDS
            # Short waits: a signal only sets an attribute, so we poll for it.
            self.stop_event.wait(SIGNAL_POLL_SECONDS)

    # -- threads --------------------------------------------------------------------------
    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._work, name="ecom-stream-worker", daemon=True)
        self._worker.start()

    def _supervise(self) -> None:
        """Restart a dead worker (the watcher is looked after by ``source.follow``)."""
        worker = self._worker
        if worker is not None and not worker.is_alive() and not self.stop_event.is_set():
            logger.error("the worker thread died; restarting it")
            self.watch.worker_restarted()
            self._start_worker()

    def worker_alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _work(self) -> None:
        # Let the startup backlog pass its quiet check before anything newer: it goes first.
        self.stop_event.wait(self.settings.quiet_seconds)
        self._next_compact = time.monotonic() + COMPACT_CHECK_SECONDS
        while not self.stop_event.is_set():
            try:
                self._step()
            except Exception as exc:  # a bug here must not stop the stream
                logger.exception("worker loop error; continuing")
                self._note_error(exc)
                self.stop_event.wait(1.0)

    def _step(self) -> None:
        """One pass: process what is ready, or compact if due, or sleep until a file may be."""
        started = time.monotonic()
        ready = self.source.take_ready(self.settings.microbatch_max_files)
        if ready:
            self._process(ready)
            return
        if time.monotonic() >= self._next_compact:
            self._compact()
            self._next_compact = time.monotonic() + COMPACT_CHECK_SECONDS
        self.source.wait(min(self._next_compact - time.monotonic(), HEARTBEAT_SECONDS))
        # A burst wakes us once per event and a pass walks every pending entry: space passes
        # out (a few ms of latency, no CPU spin with 10,000 files pending).
        self.stop_event.wait(max(0.0, started + MIN_PASS_SECONDS - time.monotonic()))

    # -- processing -----------------------------------------------------------------------
    def _process(self, ready: list[tuple[Path, datetime]]) -> None:
        paths = [p for p, _ in ready]
        with self._state_lock:
            self._first_seen.update(ready)
            self._in_hand = len(paths)
        started = time.perf_counter()
        try:
            error = self._attempt(paths)
            if isinstance(error, LakeDamagedError):
                self._halt(error)
            elif error is not None:
                logger.error("processing %d file(s) failed (%s); retrying them one by one",
                             len(paths), error, exc_info=error)
                for path in paths:
                    if self.stop_event.is_set():
                        break  # left in landing: the next start picks them up
                    self._retry(path, error)
        finally:
            with self._state_lock:
                self._in_hand = 0
                for p in paths:
                    self._first_seen.pop(p, None)
        logger.debug("micro-batch of %d file(s) in %.0f ms",
                     len(paths), (time.perf_counter() - started) * 1000)
        self.write_heartbeat()

    def _attempt(self, paths: list[Path]) -> Exception | None:
        """One ``process`` call; returns the unexpected exception instead of raising it."""
        try:
            self._open_pipeline().process(paths, on_outcome=self._record)
        except Exception as exc:
            self._note_error(exc)
            # Rebuilt from the lake before the next attempt, exactly as after a crash: the
            # pipeline re-reads the ledger and its in-flight marker.
            self._pipeline = None
            return exc
        return None

    def _retry(self, path: Path, error: Exception) -> None:
        """Retry one file with jittered exponential backoff; quarantine it if it keeps failing
        with a terminal error. A transient one (disk, I/O, commit conflict) is not the file's
        fault: it stays in landing and the next rescan tries again, so the daemon never stops
        or quarantines on one."""
        failures = 1
        for attempt in range(self.settings.batch_retries):
            if not self.source.still_waiting(path):
                return  # done by the failed call before it failed, or moved away
            delay = retry_delay(self.settings.retry_backoff_seconds, attempt)
            if self.stop_event.wait(delay):
                return
            self.watch.retried()
            retry_error = self._attempt([path])
            if retry_error is None:
                return
            if isinstance(retry_error, LakeDamagedError):
                self._halt(retry_error)
                return
            failures, error = failures + 1, retry_error
            logger.warning("retry %d/%d of %s failed: %s", attempt + 1, self.settings.batch_retries,
                           path.name, error, exc_info=logger.isEnabledFor(logging.DEBUG))
        if not self.source.still_waiting(path):
            return
        if is_transient(error):
            logger.warning("%s still fails (%s); left in landing for the next rescan",
                           path.name, error)
            return
        try:
            reason = f"processing failed {failures} times: {error}"
            outcome = self._open_pipeline().quarantine_path(path, reason)
        except Exception as exc:
            logger.exception("cannot quarantine %s; it stays in landing until a rescan", path.name)
            self._note_error(exc)
            self._pipeline = None
            return
        if outcome is not None:
            with outcome_context(outcome):
                logger.info("%s", outcome.log_line())
            self._record(outcome)

    def _halt(self, damage: LakeDamagedError) -> None:
        """Stop on a damaged lake, files left in landing: retrying them, or quarantining
        them after the retries, would write on top of the damage."""
        logger.error("%s", damage)
        self.damage = damage
        self.stop()

    def _open_pipeline(self) -> Pipeline:
        if self._pipeline is None:
            try:
                self._pipeline = self._factory()
            except EcomStreamError:
                raise
            except Exception as exc:
                raise LakeError(f"cannot open the lake at {self.lake.layout.root}: {exc}") from exc
        return self._pipeline

    def _default_pipeline(self) -> Pipeline:
        from ecom_stream.engine.pipeline import Pipeline

        pipeline = Pipeline(self.settings, received_at=self._received_at, observer=self.watch)
        pipeline.warm_up()  # GX start-up now, not on the first file that lands
        return pipeline

    def _received_at(self, path: Path) -> datetime | None:
        with self._state_lock:
            return self._first_seen.get(path)

    def _compact(self) -> None:
        from ecom_stream.service.maintain import compact_if_needed

        try:
            pipeline = self._open_pipeline()
            if compact_if_needed(pipeline.lake, self.settings):
                # Compaction commits change no data: move gold's watermark past them while
                # the silver commit history gold reads is still kept (see lake.py).
                pipeline.gold.bring_up_to_date()
        except Exception as exc:  # maintenance is best effort: data is safe without it
            logger.exception("compaction failed; will try again later")
            self._note_error(exc)

    # -- bookkeeping ----------------------------------------------------------------------
    def _record(self, outcome: FileOutcome) -> None:
        now = datetime.now(UTC)
        with self._state_lock:
            self._processed += 1
            self._in_hand = max(0, self._in_hand - 1)
            latency_ms = round((now - outcome.received_at).total_seconds() * 1000, 1)
            self._last_batch = {"file": outcome.name, "outcome": outcome.outcome,
                                "latency_ms": latency_ms, "at": now.timestamp()}
        self.watch.outcome(outcome)

    def _note_error(self, exc: BaseException) -> None:
        self.watch.error(exc)
        with self._state_lock:
            at = datetime.now(UTC).isoformat(timespec="seconds")
            self._last_error = f"{at} {type(exc).__name__}: {exc}"

    def write_heartbeat(self, *, stopped: bool = False) -> None:
        """Write the heartbeat JSON atomically (read by ``status`` and the dashboard)."""
        with self._state_lock:
            beat = {
                "time": time.time(),
                "pid": os.getpid(),
                "started_at": self._started_at,
                "files_processed": self._processed,
                "queue": self.source.pending_count() + self._in_hand,
                "last_error": self._last_error,
                "last_batch": self._last_batch,
                "landing": str(self.landing),
                "polling": self.settings.polling,
                "stopped": stopped,
            }
        try:
            with self._beat_lock:  # two threads write it: one temporary file at a time
                self.lake.markers.write("heartbeat", beat)
        except OSError as exc:
            path = self.lake.markers.path("heartbeat")
            logger.warning("cannot write the heartbeat %s: %s", path, exc)


def run_daemon(
    settings: Settings,
    stop_event: threading.Event | None = None,
    ready_callback: Callable[[], None] | None = None,
    *,
    create_landing: bool = False,
) -> int:
    """Run the watcher until SIGINT/SIGTERM (or ``stop_event``); returns the exit code.

    Raises:
        LockError: another process is writing this lake.
        EcomStreamError: landing or the lake cannot be opened.
    """
    lake = Lake(settings.lake_dir)
    lock = lake.writer_lock("watch daemon")
    try:
        lock.acquire()
    except OSError as exc:  # the lake folder itself is not writable
        raise LakeError(f"cannot create the lock file {lake.layout.lock_path}: {exc}") from exc
    daemon = Daemon(settings, stop_event=stop_event, create_landing=create_landing)
    try:
        # Second signal: KeyboardInterrupt at once, mid-batch; a restart resumes exactly.
        with stop_signals(on_first=daemon.signalled):
            daemon.open()
            return daemon.run(ready_callback)
    finally:
        # After an abort the worker may still be mid-commit: keep the lock until the
        # process exits (the kernel frees it then).
        if not daemon.aborted:
            lock.release()

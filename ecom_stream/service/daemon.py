"""The watcher daemon: file events are hints, the landing folder is the truth, one worker writes.

Threads:

* the watchdog observer only turns events into :meth:`ReadyQueue.offer` calls;
* one worker thread takes the files that are ready and hands them to ONE ``Pipeline.process``
  call (the pipeline groups them into one merge per table per micro-batch), retries failures
  and rescans landing now and then;
* the calling (main) thread supervises: heartbeats, restarting a dead observer, signals.

Nothing that matters is kept only in memory: the pipeline records every file in the lake's
ledger before it deletes it from landing, so ``kill -9`` at any moment loses nothing and a
restart catches up from the folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from ecom_stream.config import Settings
from ecom_stream.errors import (
    ConfigError,
    EcomStreamError,
    LakeDamagedError,
    LakeError,
    is_transient,
    retry_delay,
)
from ecom_stream.service.status import backlog
from ecom_stream.storage.lake import Lake
from ecom_stream.storage.lock import LakeLock
from ecom_stream.transform.parse import classify

if TYPE_CHECKING:  # the pipeline (pandas, Delta, GX) is imported when the daemon opens it
    from ecom_stream.engine.pipeline import FileOutcome, Pipeline

__all__ = ["Daemon", "ReadyQueue", "run_daemon", "writers_open"]

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
MIN_PASS_SECONDS = 0.02  # at most one readiness pass per 20 ms, however many events arrive
SIGNAL_POLL_SECONDS = 0.2
LANDING_CHECK_SECONDS = 1.0  # how often the landing path is checked for being replaced (a stat)
COMPACT_CHECK_SECONDS = 30.0
OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
# Only these reach the handler; for inotify the filter also narrows the kernel mask, so our own
# reads (opened / closed-no-write) never cost queue slots.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
]
Hint = Literal["complete", "changed", "seen"]


def writers_open(path: Path) -> bool | None:
    """Whether some process has ``path`` open for writing: True, False, or None if unknown.

    Linux refuses a read lease (``F_SETLEASE``/``F_RDLCK``) with EAGAIN while anyone holds a
    write descriptor, which is exactly "a producer is still writing". Filesystems without
    leases (EINVAL) and files we do not own (EACCES, no CAP_LEASE) answer None: the caller
    then relies on the quiet period alone.
    """
    if sys.platform != "linux":
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError:
        return None
    try:
        # A lease break is announced with SIGIO, whose default action kills the process; ask
        # for SIGURG instead (ignored by default). We drop the lease immediately anyway.
        fcntl.fcntl(fd, getattr(fcntl, "F_SETSIG", 10), signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


@dataclass
class _Entry:
    first_seen: datetime
    complete: bool  # the last event said the writer is done (close-after-write, rename in)
    due: float  # monotonic time of the next readiness check
    stamp: tuple[int, int] | None = None  # (size, mtime_ns) when last looked at
    stable_since: float = 0.0


class ReadyQueue:
    """Landing files waiting to be read, deduplicated, with the readiness rules.

    * ``complete`` hints (close-after-write, rename into landing) are ready at once;
    * ``changed`` hints (created, modified) and ``seen`` (scans) are ready once size and
      mtime_ns stayed the same for ``quiet_seconds``;
    * either way the file is refused while a process still has it open for writing.
    """

    def __init__(self, quiet_seconds: float) -> None:
        self.quiet = quiet_seconds
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._entries: dict[Path, _Entry] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def offer(self, path: Path, hint: Hint) -> None:
        """Note that ``path`` may be (or soon be) a complete batch file."""
        stamp = None if hint == "complete" else _stamp(path)
        if hint != "complete" and stamp is None:
            return  # already gone
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                entry = self._entries[path] = _Entry(datetime.now(UTC), False, now)
            if hint == "complete":
                entry.complete, entry.due = True, now
            elif hint == "changed" or entry.stamp != stamp:
                # A scan never downgrades a "complete" hint; a new write does.
                entry.complete = entry.complete and hint == "seen"
                if entry.stamp != stamp:
                    entry.stamp, entry.stable_since = stamp, now
                if not entry.complete:
                    entry.due = entry.stable_since + self.quiet
        self.wake.set()

    def discard(self, path: Path) -> None:
        """Forget ``path`` (deleted or renamed away)."""
        with self._lock:
            self._entries.pop(path, None)

    def next_due(self) -> float:
        """Monotonic time of the earliest pending check (infinity when empty)."""
        with self._lock:
            return min((e.due for e in self._entries.values()), default=math.inf)

    def take_ready(self, limit: int) -> list[tuple[Path, datetime]]:
        """Remove and return up to ``limit`` ready files (with first-seen time), oldest first."""
        now = time.monotonic()
        ready: list[tuple[Path, datetime]] = []
        with self._lock:
            # Insertion order is arrival order (an entry keeps its place when offered again).
            # Checks are a stat and a few fcntl calls: cheap enough to hold the lock.
            for path, entry in list(self._entries.items()):
                if entry.due > now:
                    continue
                verdict = self._check(path, entry, now)
                if verdict is not False:
                    del self._entries[path]
                if verdict:
                    ready.append((path, entry.first_seen))
                    if len(ready) >= limit:
                        break
        return ready

    def _check(self, path: Path, entry: _Entry, now: float) -> bool | None:
        """True: ready; False: not yet (``due`` moved on); None: gone, forget it."""
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                return None
            if not stat.S_ISREG(st.st_mode):
                return True  # links, FIFOs...: the pipeline quarantines them unread
            stamp = (st.st_size, st.st_mtime_ns)
            if not entry.complete and stamp != entry.stamp:
                entry.stamp, entry.stable_since, entry.due = stamp, now, now + self.quiet
                return False
            if not entry.complete and now - entry.stable_since < self.quiet:
                entry.due = entry.stable_since + self.quiet
                return False
            if writers_open(path):
                # Closed by one writer but still open in another (or reopened): wait again.
                entry.complete, entry.stamp, entry.stable_since = False, stamp, now
                entry.due = now + self.quiet
                return False
            return True
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("cannot inspect %s (%s); retrying in %.0f s", path, exc, self.quiet * 5)
            entry.due = now + self.quiet * 5
            return False


def _products_first(path: Path) -> tuple[bool, str]:
    return (not path.name.lower().startswith("products"), path.name)


def _watching(observer: BaseObserver) -> bool:
    # When landing disappears the emitter thread ends but the observer thread lives on.
    return observer.is_alive() and all(e.is_alive() for e in observer.emitters)


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder at ``path``; None when it is missing or not a folder."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


class _LandingHandler(FileSystemEventHandler):
    """Turns watchdog events into queue offers; never raises (that would kill the observer)."""

    def __init__(self, landing: Path, queue: ReadyQueue) -> None:
        self.landing = landing
        self.queue = queue

    def _ours(self, raw: bytes | str) -> Path | None:
        path = Path(os.fsdecode(raw))
        if path.parent != self.landing or classify(path.name).action == "ignore":
            return None  # temporary names are filtered here, never with ignore_patterns
        return path

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.is_directory:
                return
            if isinstance(event, FileMovedEvent):
                # tmp -> final inside landing: src is ignored and dest is complete.
                if src := self._ours(event.src_path):
                    self.queue.discard(src)
                if dest := self._ours(event.dest_path):
                    self.queue.offer(dest, "complete")
            elif (path := self._ours(event.src_path)) is None:
                return
            elif isinstance(event, FileClosedEvent):
                self.queue.offer(path, "complete")
            elif isinstance(event, FileCreatedEvent | FileModifiedEvent):
                self.queue.offer(path, "changed")
            elif isinstance(event, FileDeletedEvent):
                self.queue.discard(path)
        except Exception:
            logger.exception("could not handle file event %r; the next rescan covers it", event)


class _OverflowHandler(logging.Handler):
    """Calls back when watchdog logs that the inotify queue overflowed (events were lost)."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()


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
        self.create_landing = create_landing
        self.landing = settings.landing_dir.absolute()
        self.lake = Lake(settings.lake_dir)
        self.stop_event = stop_event or threading.Event()
        self.queue = ReadyQueue(settings.quiet_seconds)
        self._factory = pipeline_factory or self._default_pipeline
        self._pipeline: Pipeline | None = None
        self._first_seen: dict[Path, datetime] = {}
        self._rescan = threading.Event()
        self._state_lock = threading.Lock()
        self._beat_lock = threading.Lock()
        self._started_at = time.time()
        self._processed = 0
        self._in_hand = 0
        self._last_error: str | None = None
        self._last_batch: dict[str, Any] | None = None
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None
        self._next_rescan = self._next_compact = 0.0
        self._watch_broken = False
        self._watched: tuple[int, int] | None = None  # identity of the folder being watched
        self._landing_missing = False
        self.signal_received: int | None = None
        self.aborted = False
        self.damage: LakeDamagedError | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Check landing (create it with ``create_landing``) and build the pipeline.

        Raises ``EcomStreamError`` if either fails: a missing landing folder is refused, since
        a mistyped path would otherwise be watched forever while the files land elsewhere.
        """
        if not self.landing.is_dir():
            if self.landing.exists() or not self.create_landing:
                raise ConfigError(
                    f"the landing folder {self.landing} "
                    + ("is not a folder" if self.landing.exists() else "does not exist")
                    + ": check --landing, or pass --create to create it"
                )
            try:
                self.landing.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the landing folder {self.landing}: {exc}"
                ) from exc
        self._open_pipeline()

    def stop(self) -> None:
        """Ask the daemon to stop after the micro-batch in hand (from any thread)."""
        self.stop_event.set()
        self.queue.wake.set()

    def signalled(self, signum: int) -> None:
        """Note a stop signal. Only a plain attribute is set: taking a lock (``Event.set``)
        inside a signal handler can deadlock with the interrupted main thread."""
        self.signal_received = signum

    def run(self, ready_callback: Callable[[], None] | None = None) -> int:
        """Watch until stopped; returns the exit code (0)."""
        overflow = _OverflowHandler(self.request_rescan)
        watchdog_log = logging.getLogger(OVERFLOW_LOGGER)
        old_level = watchdog_log.level
        if watchdog_log.getEffectiveLevel() > logging.WARNING:
            watchdog_log.setLevel(logging.WARNING)
        watchdog_log.addHandler(overflow)
        try:
            # Observer first, then the scan: a file landing in between is seen by both and
            # deduplicated by the queue, never missed.
            self._start_observer()
            self.rescan()
            logger.info(
                "watching %s (%s) for lake %s: %d file(s) waiting",
                self.landing, "polling" if self.settings.polling else "native events",
                self.lake.root, len(self.queue),
            )
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
            self._stop_observer()
            watchdog_log.removeHandler(overflow)
            watchdog_log.setLevel(old_level)
        self.write_heartbeat(stopped=True)
        # Counted in the folder: files taken for a micro-batch or a retry are no longer in
        # the queue but may still be waiting in landing.
        logger.info("stopped: %d file(s) processed, %d left in landing for the next start",
                    self._processed, len(backlog(self.landing)))
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
                self._check_landing()
                next_landing_check = time.monotonic() + LANDING_CHECK_SECONDS
            if time.monotonic() >= next_beat:
                self.write_heartbeat()
                self._supervise()
                next_beat = time.monotonic() + HEARTBEAT_SECONDS
            # Short waits: a signal only sets an attribute, so we poll for it.
            self.stop_event.wait(SIGNAL_POLL_SECONDS)

    def request_rescan(self) -> None:
        """Rescan landing as soon as the worker is free (events may have been lost)."""
        logger.warning("file events were lost: rescanning %s", self.landing)
        self._rescan.set()
        self.queue.wake.set()

    def rescan(self) -> None:
        """Offer every batch file in landing (same readiness rules as events).

        Products first, then name order, as the pipeline orders a call: a catch-up larger
        than one micro-batch then never recomputes gold for orders whose products follow.
        """
        self._rescan.clear()
        for path in sorted(backlog(self.landing), key=_products_first):
            self.queue.offer(path, "seen")

    # -- threads --------------------------------------------------------------------------
    def _start_observer(self) -> None:
        observer = PollingObserver(timeout=1.0) if self.settings.polling else Observer()
        observer.schedule(_LandingHandler(self.landing, self.queue), str(self.landing),
                          recursive=False, event_filter=WATCHED_EVENTS)
        identity = _identity(self.landing)  # before start: a later swap is then noticed
        try:
            observer.start()
        except OSError as exc:
            raise ConfigError(f"cannot watch the landing folder {self.landing}: {exc}") from exc
        self._observer, self._watched = observer, identity

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None and observer.is_alive():
            observer.stop()
            observer.join(timeout=10)

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._work, name="ecom-stream-worker", daemon=True)
        self._worker.start()

    def _check_landing(self) -> None:
        """Follow the landing path: restart the watcher when the folder there was replaced.

        An inotify watch follows the folder, not its name: after ``mv landing landing.old &&
        mkdir landing`` it keeps reporting files of landing.old, and after ``rm -rf landing``
        it ends. A stat of the path per second compares its inode with the watched one.
        """
        identity = _identity(self.landing)
        if identity is None and self.create_landing:
            with contextlib.suppress(OSError):  # reported below if it stays missing
                self.landing.mkdir(parents=True, exist_ok=True)
                identity = _identity(self.landing)
        if identity is None:
            if not self._landing_missing:
                logger.warning("the landing folder %s is gone; watching for it to come back "
                               "(watch --create would recreate it)", self.landing)
            self._landing_missing = True
            return
        observer = self._observer
        if identity == self._watched and observer is not None and _watching(observer):
            return
        if self._watch_broken:
            pass  # already reported; retried every second
        elif self._landing_missing:
            logger.info("the landing folder %s is back; watching it", self.landing)
        elif identity != self._watched:
            logger.info("the landing folder %s was replaced; watching the new one", self.landing)
        else:
            logger.warning("the file watcher on %s stopped; restarting it", self.landing)
        self._landing_missing = False
        self._stop_observer()
        try:
            self._start_observer()
        except (OSError, EcomStreamError) as exc:
            if not self._watch_broken:
                logger.error("cannot watch %s (%s); retrying every %.0f s",
                             self.landing, exc, LANDING_CHECK_SECONDS)
            self._watch_broken = True
            return
        self._watch_broken = False
        # Whatever is in the new folder (or arrived while none was watched) is found now.
        self._rescan.set()
        self.queue.wake.set()

    def _supervise(self) -> None:
        """Restart a dead worker (the watcher is looked after by :meth:`_check_landing`)."""
        worker = self._worker
        if worker is not None and not worker.is_alive() and not self.stop_event.is_set():
            logger.error("the worker thread died; restarting it")
            self._start_worker()

    def _work(self) -> None:
        # Let the startup backlog pass its quiet check before anything newer: it goes first.
        self.stop_event.wait(self.settings.quiet_seconds)
        self._next_rescan = time.monotonic() + self.settings.rescan_seconds
        self._next_compact = time.monotonic() + COMPACT_CHECK_SECONDS
        while not self.stop_event.is_set():
            try:
                self._step()
            except Exception as exc:  # a bug here must not stop the stream
                logger.exception("worker loop error; continuing")
                self._note_error(exc)
                self.stop_event.wait(1.0)

    def _step(self) -> None:
        """One pass: rescan if due, process what is ready, or sleep until something may be."""
        started = time.monotonic()
        if self._rescan.is_set() or started >= self._next_rescan:
            self.rescan()
            self._next_rescan = time.monotonic() + self.settings.rescan_seconds
        self.queue.wake.clear()
        ready = self.queue.take_ready(self.settings.microbatch_max_files)
        if ready:
            self._process(ready)
            return
        if time.monotonic() >= self._next_compact:
            self._compact()
            self._next_compact = time.monotonic() + COMPACT_CHECK_SECONDS
        wake_at = min(self._next_rescan, self._next_compact, self.queue.next_due())
        self.queue.wake.wait(max(0.0, min(wake_at - time.monotonic(), HEARTBEAT_SECONDS)))
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
            if not os.path.lexists(path):
                return  # done by the failed call before it failed, or moved away
            delay = retry_delay(self.settings.retry_backoff_seconds, attempt)
            if self.stop_event.wait(delay):
                return
            retry_error = self._attempt([path])
            if retry_error is None:
                return
            if isinstance(retry_error, LakeDamagedError):
                self._halt(retry_error)
                return
            failures, error = failures + 1, retry_error
            logger.warning("retry %d/%d of %s failed: %s", attempt + 1, self.settings.batch_retries,
                           path.name, error, exc_info=logger.isEnabledFor(logging.DEBUG))
        if not os.path.lexists(path):
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
                raise LakeError(f"cannot open the lake at {self.lake.root}: {exc}") from exc
        return self._pipeline

    def _default_pipeline(self) -> Pipeline:
        from ecom_stream.engine.pipeline import Pipeline

        pipeline = Pipeline(self.settings, received_at=self._received_at)
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
            self._last_batch = {
                "file": outcome.name,
                "outcome": outcome.outcome,
                "latency_ms": round((now - outcome.received_at).total_seconds() * 1000, 1),
                "at": now.timestamp(),
            }

    def _note_error(self, exc: BaseException) -> None:
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
                "queue": len(self.queue) + self._in_hand,
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


@contextmanager
def _stop_on_signals(daemon: Daemon) -> Iterator[None]:
    """SIGINT/SIGTERM stop gracefully; a second one aborts at once (the lake stays consistent)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # in-process callers stop us through the stop event
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if daemon.signal_received is not None:
            raise KeyboardInterrupt  # what a second Ctrl-C means; a restart resumes exactly
        daemon.signalled(signum)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    lock = LakeLock(lake.lock_path, "watch daemon")
    try:
        lock.acquire()
    except OSError as exc:  # the lake folder itself is not writable
        raise LakeError(f"cannot create the lock file {lake.lock_path}: {exc}") from exc
    daemon = Daemon(settings, stop_event=stop_event, create_landing=create_landing)
    try:
        with _stop_on_signals(daemon):
            daemon.open()
            return daemon.run(ready_callback)
    finally:
        # After an abort the worker may still be mid-commit: keep the lock until the
        # process exits (the kernel frees it then).
        if not daemon.aborted:
            lock.release()

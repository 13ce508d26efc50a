"""The landing folder as a source: file events are hints, the folder is the truth.

* the watchdog observer only turns events into :meth:`ReadyQueue.offer` calls;
* :class:`~ecom_stream.sources.ready.ReadyQueue` holds the files seen, deduplicated, and
  decides which are ready;
* :class:`LandingSource` is what the daemon consumes: it starts and stops the observer,
  rescans the folder now and then (events can be lost), and follows the landing path when the
  folder there is replaced or removed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

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

from ecom_stream.errors import ConfigError, EcomStreamError
from ecom_stream.sources.listing import backlog, products_first
from ecom_stream.sources.ready import ReadyQueue, writers_open
from ecom_stream.transform.parse import classify

__all__ = [
    "LANDING_CHECK_SECONDS", "OVERFLOW_LOGGER", "LandingSource", "ReadyQueue", "backlog",
    "writers_open",
]  # fmt: skip

logger = logging.getLogger(__name__)

LANDING_CHECK_SECONDS = 1.0  # how often the landing path is checked for being replaced (a stat)
OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
# Only these reach the handler; for inotify the filter also narrows the kernel mask, so our own
# reads (opened / closed-no-write) never cost queue slots.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
]


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


class LandingSource:
    """The batch files that land in ``landing``, handed out once they are ready.

    :meth:`take_ready` and :meth:`wait` belong to one consumer thread; :meth:`follow` to one
    supervising thread (it restarts the observer); :meth:`wake` and :meth:`request_rescan`
    may be called from any thread.
    """

    def __init__(self, landing: Path, *, quiet_seconds: float, rescan_seconds: float,
                 polling: bool = False, create: bool = False) -> None:
        self.landing = landing.absolute()
        self.rescan_seconds = rescan_seconds
        self.polling = polling
        self.create = create
        self.queue = ReadyQueue(quiet_seconds)
        self._rescan = threading.Event()
        self._next_rescan: float | None = None  # the schedule starts at the first take
        self._observer: BaseObserver | None = None
        self._watched: tuple[int, int] | None = None  # identity of the folder being watched
        self._watch_broken = False
        self._landing_missing = False
        self._overflow = _OverflowHandler(self.request_rescan)
        self._old_level: int | None = None

    def prepare(self) -> None:
        """Check the folder (create it with ``create``); raises ConfigError otherwise: a
        mistyped path would otherwise be watched forever while the files land elsewhere."""
        if self.landing.is_dir():
            return
        if self.landing.exists() or not self.create:
            raise ConfigError(
                f"the landing folder {self.landing} "
                + ("is not a folder" if self.landing.exists() else "does not exist")
                + ": check --landing, or pass --create to create it"
            )
        try:
            self.landing.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the landing folder {self.landing}: {exc}") from exc

    def start(self) -> None:
        """Watch the folder, then offer what is already there (raises ConfigError if the
        folder cannot be watched). Observer first: a file landing in between is seen by both
        and deduplicated by the queue, never missed."""
        watchdog_log = logging.getLogger(OVERFLOW_LOGGER)
        self._old_level = watchdog_log.level
        if watchdog_log.getEffectiveLevel() > logging.WARNING:
            watchdog_log.setLevel(logging.WARNING)
        watchdog_log.addHandler(self._overflow)
        self._start_observer()
        self.rescan()

    def stop(self) -> None:
        """Stop watching (also after a failed :meth:`start`)."""
        self._stop_observer()
        if self._old_level is not None:
            watchdog_log = logging.getLogger(OVERFLOW_LOGGER)
            watchdog_log.removeHandler(self._overflow)
            watchdog_log.setLevel(self._old_level)
            self._old_level = None

    def pending_count(self) -> int:
        """Files seen and not handed out yet."""
        return len(self.queue)

    def still_waiting(self, path: Path) -> bool:
        """Whether ``path`` (handed out earlier) is still in the folder, i.e. not done yet."""
        return os.path.lexists(path)

    def waiting_count(self) -> int:
        """Batch files in the folder (also those handed out but not yet removed)."""
        return len(backlog(self.landing))

    def take_ready(self, limit: int) -> list[tuple[Path, datetime]]:
        """Up to ``limit`` ready files with their first-seen time, oldest first; rescans the
        folder first when one is due or was asked for."""
        now = time.monotonic()
        if self._next_rescan is None:
            self._next_rescan = now + self.rescan_seconds
        if self._rescan.is_set() or now >= self._next_rescan:
            self.rescan()
            self._next_rescan = time.monotonic() + self.rescan_seconds
        self.queue.wake.clear()  # what arrives from now on ends the next wait at once
        return self.queue.take_ready(limit)

    def wait(self, timeout: float) -> None:
        """Sleep until a file may be ready, a rescan is due, :meth:`wake`, or ``timeout``."""
        now = time.monotonic()
        wake_at = min(now + timeout, self._next_rescan or math.inf, self.queue.next_due())
        self.queue.wake.wait(max(0.0, wake_at - now))

    def wake(self) -> None:
        """End a :meth:`wait` now (the consumer is stopping)."""
        self.queue.wake.set()

    def request_rescan(self) -> None:
        """Rescan landing as soon as the consumer is free (events may have been lost)."""
        logger.warning("file events were lost: rescanning %s", self.landing)
        self._rescan.set()
        self.queue.wake.set()

    def rescan(self) -> None:
        """Offer every batch file in landing (same readiness rules as events).

        Products first, then name order, as the pipeline orders a call: a catch-up larger
        than one micro-batch then never recomputes gold for orders whose products follow.
        """
        self._rescan.clear()
        for path in sorted(backlog(self.landing), key=products_first):
            self.queue.offer(path, "seen")

    def _start_observer(self) -> None:
        observer = PollingObserver(timeout=1.0) if self.polling else Observer()
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

    def follow(self) -> None:
        """Follow the landing path: restart the watcher when the folder there was replaced.

        An inotify watch follows the folder, not its name: after ``mv landing landing.old &&
        mkdir landing`` it keeps reporting files of landing.old, and after ``rm -rf landing``
        it ends. A stat of the path (every ``LANDING_CHECK_SECONDS``) compares its inode with
        the watched one.
        """
        identity = _identity(self.landing)
        if identity is None and self.create:
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
        self._restart_observer(identity)

    def _restart_observer(self, identity: tuple[int, int]) -> None:
        if self._watch_broken:
            pass  # already reported; retried every check
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

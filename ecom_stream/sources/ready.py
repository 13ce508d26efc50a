"""Which landing files are ready to read (settled, no writer left): the rules of the landing
source, kept apart from its watchdog plumbing (``landing.py``), see :class:`ReadyQueue`."""

from __future__ import annotations

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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

__all__ = ["Hint", "ReadyQueue", "writers_open"]

logger = logging.getLogger(__name__)

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


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)

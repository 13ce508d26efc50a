"""One writer per lake: an advisory ``flock`` that the kernel releases when the holder dies."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from types import TracebackType

from ecom_stream.errors import LakeError, LockError

__all__ = ["LakeLock"]


class LakeLock:
    """Exclusive lock on a lake; ``kill -9`` of the holder frees it (no stale lock files)."""

    def __init__(self, path: Path, purpose: str) -> None:
        self.path = path
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LakeError(
                f"cannot create the lock {self.path}: {exc.strerror or exc}; check the --lake path"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockError(
                f"another ecom-stream process ({holder}) is writing the lake "
                f"{self.path.parent.parent}; "
                "stop it first, or drop files into its landing folder instead"
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {"pid": os.getpid(), "purpose": self.purpose, "since": time.time()}
            ).encode(),
        )
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LakeLock:
        self.acquire()
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"{info.get('purpose', 'unknown')}, pid {info.get('pid', '?')}"
    except (OSError, ValueError):
        return "unknown holder"

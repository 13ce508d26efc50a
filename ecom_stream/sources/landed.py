"""A large landed file, read through one open descriptor and never held whole: its digest
streamed, its cut points scanned in blocks, each piece read by offset when it is parsed.

The descriptor pins the file that was hashed: a producer renaming a new file over its name
changes nothing read through it. One writing into it in place is caught by its ``fstat``
(size, mtime) checked after every read: ``LandedFileChanged`` (transient) is raised and the
file is read again later, never merged with mixed contents. Pieces committed before such a
change (pass 2 of a merge in pieces) stay without a ledger row, as after a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import weakref
from pathlib import Path

from ecom_stream.errors import EcomStreamError
from ecom_stream.transform.bookkeeping import ParsedFile
from ecom_stream.transform.cuts import array_cuts, line_cuts

__all__ = ["LandedFile", "LandedFileChanged", "LargeFile"]

# Bytes hashed a read (bounds the digest's memory).
_HASH_BLOCK = 8 * 1024 * 1024


class LandedFileChanged(EcomStreamError):
    """A large file changed while it was being read: it is read again later (transient)."""

    transient = True


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class LandedFile:
    """An open large file of landing (see the module's docstring)."""

    def __init__(self, path: Path, fd: int, st: os.stat_result) -> None:
        self.path = path
        self.fd = fd
        self.size = st.st_size
        self._stamp = _stamp(st)
        self._close = weakref.finalize(self, os.close, fd)

    @classmethod
    def open(cls, path: Path) -> LandedFile | None:
        """``path`` opened, never through a link (None: it is not a regular file now; the
        whole-file read names why). Raises ``OSError`` as ``open`` does."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return cls(path, fd, st)

    def close(self) -> None:
        self._close()

    def check(self) -> None:
        """Raise ``LandedFileChanged`` when the file was written to since it was opened."""
        if _stamp(os.fstat(self.fd)) != self._stamp:
            raise LandedFileChanged(
                f"{self.path.name!r} changed while being read; it is read again later"
            )

    def check_path(self) -> None:
        """Raise ``LandedFileChanged`` when landing's name no longer holds the file opened
        (replaced or written to): what is done with the name (its arrival id, its removal
        after the ledger row, a quarantine link) must be done with this file."""
        try:
            now = _stamp(os.lstat(self.path))
        except FileNotFoundError:
            now = None
        if now != self._stamp:
            raise LandedFileChanged(
                f"{self.path.name!r} changed or was replaced while being read; "
                "it is read again later"
            )
        self.check()

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only at the file's end), checked unchanged."""
        parts = []
        while length > 0:
            block = os.pread(self.fd, length, offset)
            if not block:
                break
            parts.append(block)
            offset, length = offset + len(block), length - len(block)
        self.check()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def whole(self) -> bytes:
        """All the file's bytes (only to parse it whole: a file not cut, or one whose piece
        failed to parse, so that the error names the file's line and column)."""
        return self.read(0, self.size)

    def digest(self, suffix: bytes = b"") -> str:
        """SHA-256 of the file's bytes followed by ``suffix``, read in 8 MB blocks."""
        h = hashlib.sha256()
        for offset in range(0, self.size, _HASH_BLOCK):
            h.update(self.read(offset, min(_HASH_BLOCK, self.size - offset)))
        h.update(suffix)
        return h.hexdigest()

    def cuts(self, fmt: str, max_rows: int) -> list[tuple[int, int, int]] | None:
        """Where to cut the file into pieces of at most ``max_rows`` rows (None: it holds
        no more rows than that, or is not one well-formed array: it is read whole)."""
        if fmt == "lines":
            pieces = line_cuts(self.read, self.size, max_rows)
            return pieces if len(pieces) > 1 else None
        return array_cuts(self.read, self.size, max_rows)


@dataclasses.dataclass
class LargeFile(ParsedFile):
    """A file merged in pieces read from ``landed`` as they are parsed (``data`` is None)."""

    landed: LandedFile | None = None

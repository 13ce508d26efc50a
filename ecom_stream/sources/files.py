"""Reading a landed batch file whole: what may be read (a regular file, not a link, under the
size limit) and its bytes. A file large enough to be cut in pieces is read through
``sources/landed.py`` instead, never whole."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ecom_stream.errors import BatchReadError

__all__ = ["check_entry", "read_bytes"]


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; symlinks, non-regular files and oversized files raise (an empty file
    is read: its bytes, none, are quarantined like any unparseable content)."""
    try:
        return _read_bytes(path, max_bytes)
    except (FileNotFoundError, BatchReadError):
        raise
    except OSError as exc:
        raise BatchReadError(
            f"cannot read the file: {exc.strerror or exc}; check its permissions"
        ) from None


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    check_entry(os.lstat(path), max_bytes)
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BatchReadError(f"file grew past the limit of {max_bytes:,} bytes while being read")
    return data


def check_entry(st: os.stat_result, max_bytes: int) -> None:
    """Raise why an entry of this ``lstat`` is not read: a symlink, not a regular file, or
    larger than ``max_bytes``."""
    if stat.S_ISLNK(st.st_mode):
        raise BatchReadError(
            "symbolic link: links are never followed; copy the file itself instead"
        )
    if not stat.S_ISREG(st.st_mode):
        what = (
            "a named pipe (FIFO)"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
        )
        raise BatchReadError(
            f"not a regular file but {what}: it is never opened; write the batch as a file"
        )
    if st.st_size > max_bytes:
        raise BatchReadError(
            f"file is {st.st_size:,} bytes, larger than the limit of {max_bytes:,} "
            "(ECOM_MAX_FILE_BYTES); split it into smaller batches"
        )

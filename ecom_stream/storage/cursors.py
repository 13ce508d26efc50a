"""Persisted cursors of REST sources, and the landing writes of a pull.

A cursor is a small JSON object per (source, endpoint), replaced atomically and durably;
a pulled page lands as one batch file under a temporary name, fsync'd, renamed, and the
folder fsync'd, so that once :func:`land_batch` returns the file survives a power cut (only
then may the cursor move past it)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from ecom_stream.errors import LakeError
from ecom_stream.storage.blobs import atomic_write
from ecom_stream.storage.layout import Layout

__all__ = ["Cursors", "land_batch"]


class Cursors:
    """Read and replace the cursors of one lake."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def read(self, source: str, endpoint: str) -> dict[str, Any]:
        """The cursor, or ``{}`` when none was saved (start from the beginning)."""
        try:
            payload = json.loads(self.layout.cursor_path(source, endpoint).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LakeError(
                f"cannot read the cursor {self.layout.cursor_path(source, endpoint)}: {exc}; "
                "remove it to pull everything again"
            ) from exc
        return payload if isinstance(payload, dict) else {}

    def write(self, source: str, endpoint: str, payload: dict[str, Any]) -> None:
        """Replace the cursor (durably: readers see the old or the new one, whole)."""
        target = self.layout.cursor_path(source, endpoint)
        try:
            atomic_write(target, json.dumps(payload, sort_keys=True).encode())
        except OSError as exc:
            raise LakeError(f"cannot save the cursor {target}: {exc.strerror or exc}") from exc


def land_batch(landing: Path, name: str, data: bytes) -> Path:
    """Write one batch file into ``landing`` durably: temporary dot-name (ignored by the
    daemon), fsync, rename, fsync of the folder. Returns its path."""
    target = landing / name
    tmp = landing / f".{name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fd = os.open(landing, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LakeError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target

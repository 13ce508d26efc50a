"""Quarantined files sent back into a landing folder (``ecom-stream requeue``): the moves
between quarantine/ and landing, so that nothing outside storage renames the lake's files."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from ecom_stream.errors import ConfigError

__all__ = ["landing_name", "requeue_file"]


def landing_name(stored: Path, reason: Mapping[str, object]) -> str:
    """The name the file had in landing: exactly (``name_hex``; it may not be UTF-8), else
    as recorded, else its name in quarantine."""
    with contextlib.suppress(TypeError, ValueError):
        return os.fsdecode(bytes.fromhex(str(reason["name_hex"])))
    return str(reason.get("file") or stored.name)


def requeue_file(
    stored: Path, reason: Mapping[str, object], landing: Path, as_name: str | None = None
) -> Path | None:
    """Move the quarantined entry ``stored`` (its reason is ``reason``) into ``landing``,
    under ``as_name`` when given, else under its landing name (its quarantine name when
    landing holds that already), and remove its reason file. Returns where the file is now;
    None for a symbolic link, which is dropped (a link is never followed: nothing to retry)."""
    reason_path = stored.with_name(stored.name + ".reason.json")
    if as_name is not None:
        target = landing / as_name
    else:
        target = landing / landing_name(stored, reason)
        if os.path.lexists(target):
            target = landing / stored.name
    if stored.is_symlink():
        stored.unlink()
        reason_path.unlink(missing_ok=True)
        return None
    location = reason.get("location")
    if not os.path.lexists(stored) and location and os.path.lexists(str(location)):
        # It could not be moved into quarantine: it is in landing already.
        reason_path.unlink(missing_ok=True)
        return Path(str(location))
    _move(stored, target)
    reason_path.unlink(missing_ok=True)
    return target


def _move(path: Path, target: Path) -> None:
    """Move a quarantined file into landing whole: a rename on one filesystem (atomic, and
    it needs no permission to read the file), else a copy under a short temporary name."""
    try:
        os.rename(path, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise ConfigError(f"cannot move {path} to {target}: {exc.strerror or exc}") from exc
    tmp = target.with_name(f".requeue-{os.getpid()}.tmp")
    try:
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    except (OSError, shutil.Error) as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot copy {path} to {target}: {exc}; move it into landing by hand"
        ) from exc
    path.unlink()

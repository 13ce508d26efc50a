"""``ecom-stream requeue``: send quarantined files back to landing to be processed like new ones."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ecom_stream.config import Settings
from ecom_stream.errors import ConfigError
from ecom_stream.storage.lake import Lake
from ecom_stream.transform.bookkeeping import FileOutcome, ledger_rows
from ecom_stream.transform.parse import classify

__all__ = ["requeue"]


def requeue(
    settings: Settings, names: Sequence[str] | None, *, as_name: str | None = None
) -> list[tuple[Path, Path]]:
    """Move the named quarantined files (all when ``names`` is None) back to landing, the
    one named file under ``as_name`` when given (a file quarantined for its name).

    A ``requeued`` ledger row is written first, so the pipeline does not take the file for a
    duplicate of the batch it quarantined before.
    """
    if as_name is not None:
        _check_new_name(settings, as_name)
    lake = Lake(settings.lake_dir)
    available = {p.name: p for p in lake.blobs.quarantined_files()}
    if names is None:
        chosen = list(available.values())
    else:
        missing = [n for n in names if n not in available]
        if missing:
            listing = ", ".join(sorted(available)) or "none"
            raise ConfigError(
                f"not in quarantine: {', '.join(missing)} (quarantined files: {listing}; "
                "see `ecom-stream quarantine`)"
            )
        chosen = [available[n] for n in names]
    if not chosen:
        return []
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    plans = []
    for path in chosen:
        reason_path = path.with_name(path.name + ".reason.json")
        try:
            reason = json.loads(reason_path.read_text())
        except (OSError, ValueError):
            reason = {}
        plans.append((path, reason_path, reason))
    lake.ensure_tables()
    _record_requeue(lake, plans, as_name)
    moved = []
    for path, reason_path, reason in plans:
        if as_name is not None:
            target = settings.landing_dir / as_name
        else:
            target = settings.landing_dir / _landing_name(path, reason)
            if os.path.lexists(target):
                target = settings.landing_dir / path.name
        if path.is_symlink():
            path.unlink()  # a link is never followed, so there is nothing to retry
            reason_path.unlink(missing_ok=True)
            continue
        location = reason.get("location")
        if not os.path.lexists(path) and location and os.path.lexists(str(location)):
            # It could not be moved into quarantine: it is in landing already.
            reason_path.unlink(missing_ok=True)
            moved.append((path, Path(str(location))))
            continue
        _move(path, target)
        reason_path.unlink(missing_ok=True)
        moved.append((path, target))
    return moved


def _check_new_name(settings: Settings, name: str) -> None:
    """``--as NEW`` must be a plain batch name not yet in landing."""
    if os.sep in name or name in (".", ".."):
        raise ConfigError(f"--as {name!r}: give a file name, not a path")
    kind = classify(name)
    if kind.action == "ignore":
        raise ConfigError(f"--as {name!r}: a temporary name, never read; choose a batch name")
    if kind.action == "quarantine":
        raise ConfigError(f"--as {name!r}: {kind.reason}")
    if os.path.lexists(settings.landing_dir / name):
        raise ConfigError(f"--as {name!r}: landing already holds a file of that name")


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


def _landing_name(path: Path, reason: dict[str, object]) -> str:
    """The name the file had in landing: exactly (``name_hex``; it may not be UTF-8), else
    as recorded, else its name in quarantine."""
    with contextlib.suppress(TypeError, ValueError):
        return os.fsdecode(bytes.fromhex(str(reason["name_hex"])))
    return str(reason.get("file") or path.name)


def _record_requeue(
    lake: Lake, plans: list[tuple[Path, Path, dict[str, object]]], as_name: str | None
) -> None:
    now = datetime.now(UTC)
    outcomes = [
        FileOutcome(
            str(reason.get("file") or path.name),
            str(reason["entity"]) if reason.get("entity") else None,
            str(reason.get("batch_id") or ""),
            f"requeue:{now.timestamp()}:{path.name}",
            "requeued",
            reason="requeued by the user" + (f" as {as_name}" if as_name else ""),
            received_at=now,
        )
        for path, _, reason in plans
    ]
    lake.tables.append("ledger", ledger_rows(outcomes, {}, 0))

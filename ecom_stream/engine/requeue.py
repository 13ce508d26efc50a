"""``ecom-stream requeue``: send quarantined files back to landing to be processed like new ones."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ecom_stream.config import Settings
from ecom_stream.errors import ConfigError
from ecom_stream.storage.lake import Lake
from ecom_stream.storage.landing import requeue_file
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
    plans = [(path, lake.blobs.quarantine_reason(path) or {}) for path in chosen]
    lake.ensure_tables()
    _record_requeue(lake, plans, as_name)
    moved = []
    for path, reason in plans:
        now_at = requeue_file(path, reason, settings.landing_dir, as_name)
        if now_at is not None:
            moved.append((path, now_at))
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


def _record_requeue(
    lake: Lake, plans: list[tuple[Path, dict[str, object]]], as_name: str | None
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
        for path, reason in plans
    ]
    lake.tables.append("ledger", ledger_rows(outcomes, {}, 0))

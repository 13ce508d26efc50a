"""Quarantining a file: its raw copy when it may be replayed, its copy in quarantine/ with a
reason file that says what to do, and its outcome (recorded by the commit of a micro-batch)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ecom_stream.config import Settings
from ecom_stream.engine.commit import Commits
from ecom_stream.engine.intake import (
    FIX_CONTENT,
    FIX_LINK,
    FIX_OUTSIDE,
    FIX_SPECIAL,
    arrival_id_of,
    file_stamp,
    unread_batch_id,
)
from ecom_stream.engine.state import BatchState
from ecom_stream.errors import BatchError
from ecom_stream.sources.files import read_bytes
from ecom_stream.storage.lake import Lake
from ecom_stream.transform import bookkeeping
from ecom_stream.transform.bookkeeping import FileOutcome
from ecom_stream.transform.parse import FileKind, classify, display_name, name_problem

__all__ = ["Quarantine", "failed_checks"]


def failed_checks(report: Any) -> list[dict[str, Any]]:
    """The batch checks a file failed (what its reason file lists)."""
    return [
        {"check": c.expectation, "policy": c.policy, "observed": c.observed, "sample": c.sample}
        for c in report.checks
        if not c.success and c.policy == "quarantine-batch"
    ]


class Quarantine:
    """Puts files into quarantine/ and builds their outcomes."""

    def __init__(self, settings: Settings, lake: Lake, state: BatchState, commits: Commits) -> None:
        self.settings = settings
        self.lake = lake
        self.state = state
        self.commits = commits

    def outright(self, path: Path, reason: str) -> FileOutcome | None:
        """The outcome of quarantining one file for ``reason`` (None: it is gone)."""
        kind = classify(path.name)
        try:
            data: bytes | None = read_bytes(path, self.settings.max_file_bytes)
        except FileNotFoundError:
            return None
        except BatchError:
            data = None
        batch_id = unread_batch_id(data, path)
        return self.unread(
            path,
            kind,
            data,
            batch_id,
            arrival_id_of(batch_id, path),
            reason,
            datetime.now(UTC),
            fix=FIX_OUTSIDE,
        )

    def unreadable(
        self, path: Path, kind: FileKind, data: bytes | None, reason: str, received: datetime
    ) -> FileOutcome | None:
        """A file that could not be read (None: recorded already and left in landing)."""
        target = os.readlink(path) if path.is_symlink() else ""
        # Nothing was read, so the entry's identity (inode, mtime, size) tells two files of
        # the same name apart: each is kept in quarantine.
        batch_id = unread_batch_id(data, path, target, reason, file_stamp(path))
        arrival = arrival_id_of(batch_id, path)
        # (Requeued since, the same entry is handled again: requeue moves it back whole.)
        if self.state.recorded(arrival) and self.state.already_done(batch_id):
            if self.lake.blobs.left_in_landing(display_name(path.name), batch_id):
                return None  # recorded already; it stays until its cause is fixed
            self.commits.remove_source(path, batch_id, arrival)
            return FileOutcome(display_name(path.name), kind.entity, batch_id, arrival, "recovered")
        # The hint follows the reason (why it was not read), even when the name is bad too.
        fix = FIX_LINK if path.is_symlink() else FIX_OUTSIDE if path.is_file() else FIX_SPECIAL
        return self.unread(path, kind, data, batch_id, arrival, reason, received, fix=fix)

    def unread(
        self,
        path: Path,
        kind: FileKind,
        data: bytes | None,
        batch_id: str,
        arrival: str,
        reason: str,
        received: datetime,
        *,
        fix: str = FIX_CONTENT,
    ) -> FileOutcome:
        """Quarantine a file whose records were not read (its name, bytes or cause outside)."""
        if data is not None and name_problem(path.name) is None:
            # (A name the lake cannot store is kept in quarantine only, under a safe name:
            # a replay of raw/ would only quarantine it again.)
            self.lake.blobs.store_raw(
                batch_id, path.name, data, bookkeeping.raw_meta(path.name, kind, batch_id, received)
            )
        outcome = FileOutcome(
            display_name(path.name),
            kind.entity,
            batch_id,
            arrival,
            "quarantined",
            reason=reason,
            received_at=received,
            source=path,
        )
        self.file(
            outcome, data, {"failed_checks": [{"check": "readable", "observed": reason}]}, fix
        )
        return outcome

    def file(
        self,
        outcome: FileOutcome,
        data: bytes | None,
        details: dict[str, Any],
        fix: str = FIX_CONTENT,
    ) -> None:
        """Copy ``outcome``'s file into quarantine/ with its reason file."""
        reason = {
            "file": outcome.name,
            "batch_id": outcome.batch_id,
            "entity": outcome.entity,
            "reason": outcome.reason,
            **details,
            "quarantined_at": datetime.now(UTC).isoformat(),
            "fix": fix,
        }
        assert outcome.source is not None
        # The name exactly as it was in landing (it may not be UTF-8), for `requeue`.
        reason["name_hex"] = os.fsencode(outcome.source.name).hex()
        target = self.lake.blobs.store_quarantined(outcome.source, data, outcome.name, reason)
        outcome.quarantined_as = target.name
        if data is None and not os.path.lexists(target):
            outcome.source = None  # it could not be moved into quarantine: it stays in landing

"""Damage checks: table versions against what the writer recorded, data files against the
log, and the marker of a rebuild that did not finish."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ecom_stream.errors import LakeDamagedError
from ecom_stream.storage.blobs import atomic_write
from ecom_stream.storage.faults import damaged
from ecom_stream.storage.layout import TABLES, Layout, incomplete_rebuild_message
from ecom_stream.storage.tables import Tables

__all__ = ["Integrity"]

# Lakes a rebuild in this process is filling (its own Pipeline must open them; nobody else).
_REBUILDS_IN_PROGRESS: set[Path] = set()


class Integrity:
    """Whether one lake is whole, and the records that let a later check tell."""

    def __init__(self, layout: Layout, tables: Tables) -> None:
        self.layout = layout
        self.tables = tables
        self.root = layout.root

    def _damaged(self, name: str, problem: str) -> str:
        return damaged(self.layout.path(name), problem)

    def refuse_damage(self) -> None:
        """Raise on the first version problem of the open tables."""
        problems = self.version_problems()
        if problems:
            raise LakeDamagedError(problems[0][1])

    def rebuild_incomplete(self) -> bool:
        """Whether a rebuild filled this lake and did not finish (or is filling it now)."""
        return self.layout.rebuild_marker_path.exists()

    def refuse_incomplete_rebuild(self) -> None:
        """Writers refuse a lake that a rebuild was filling and did not finish."""
        if self.layout.rebuild_marker_path.exists() and self.root not in _REBUILDS_IN_PROGRESS:
            raise LakeDamagedError(incomplete_rebuild_message(self.root))

    @contextlib.contextmanager
    def rebuilding(self) -> Iterator[None]:
        """Mark this (new, empty) lake incomplete until the block finishes: the marker is
        written before anything else and removed only on success, so a rebuild killed
        half-way leaves a lake that ``status`` reports and writers refuse."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.layout.rebuild_marker_path,
            json.dumps({"started_at": time.time(), "pid": os.getpid()}).encode(),
        )
        _REBUILDS_IN_PROGRESS.add(self.root)
        try:
            yield
        finally:
            _REBUILDS_IN_PROGRESS.discard(self.root)
        self.layout.rebuild_marker_path.unlink()

    def recorded_versions(self) -> dict[str, int]:
        """The newest version of each table the writer recorded: the versions in the newest
        ledger row(s), and for the ledger itself (the last commit of a micro-batch, which no
        ledger row can record) the marker the writer leaves after every micro-batch.

        Cheap: one small JSON file and the ledger's newest data file, never the whole ledger.
        """
        recorded: dict[str, int] = {}
        try:
            marker = json.loads(self.layout.versions_path.read_text())["versions"]
        except (OSError, ValueError, KeyError, TypeError):
            marker = {}
        for name, version in dict(marker).items() if isinstance(marker, dict) else ():
            if name in TABLES and isinstance(version, int):
                recorded[name] = version
        if "ledger" in self.tables.handles:
            for name, version in self._newest_ledger_versions().items():
                recorded[name] = max(version, recorded.get(name, -1))
        return recorded

    def _newest_ledger_versions(self) -> dict[str, int]:
        actions = self.tables.add_actions("ledger", cached=True)
        paths = actions.column("path").to_pylist()
        if not paths:
            return {}
        # The file holding the newest row: by its finished_at statistics (a compaction may
        # have rewritten older rows into a newer file), else by modification time.
        stamps = actions.column("modification_time").to_pylist()
        names = actions.column_names
        finished = (
            actions.column("max.finished_at").to_pylist()
            if "max.finished_at" in names
            else [None] * len(paths)
        )
        newest = max(
            range(len(paths)),
            key=lambda i: (finished[i] is not None, finished[i] or 0, stamps[i], paths[i]),
        )
        with self.tables.reading("ledger"):
            rows = pq.read_table(
                self.layout.local_file("ledger", paths[newest]),
                columns=["finished_at", "table_versions"],
            )
        if rows.num_rows == 0:
            return {}
        last = rows.filter(pc.equal(rows["finished_at"], pc.max(rows["finished_at"])))
        found: dict[str, int] = {}
        for text in set(last.column("table_versions").to_pylist()):
            try:
                versions = json.loads(text or "{}")
            except ValueError:
                continue
            for name, version in versions.items():
                if name in TABLES and isinstance(version, int):
                    found[name] = max(version, found.get(name, -1))
        return found

    def version_problems(self) -> list[tuple[str, str]]:
        """(table, message) for every table whose log is older than what was recorded (a
        deleted newest commit file, or a table folder gone). Older commit files expiring
        under the log retention are not damage: only the newest version counts."""
        problems = []
        for name, recorded in sorted(self.recorded_versions().items()):
            handle = self.tables.handles.get(name)
            if handle is None:
                if recorded > 0 and not self.tables.is_table(name):
                    problems.append(
                        (name, self._damaged(name, f"it is gone (version {recorded} recorded)"))
                    )
                continue
            current = handle.version()
            if current < recorded:
                problem = (
                    f"its log ends at version {current} but version {recorded} was recorded "
                    "(a commit file in _delta_log was deleted)"
                )
                problems.append((name, self._damaged(name, problem)))
        return problems

    def note_versions(self) -> None:
        """Record the versions of the open tables: the only record of the ledger's own newest
        version. Call it after the commits are durable (the writer: after its filesystem
        sync), so that the record is never above a version even after a power cut."""
        versions = self.tables.open_versions()
        try:
            before = json.loads(self.layout.versions_path.read_text())["versions"]
            for name, version in dict(before).items():
                if name in versions and isinstance(version, int):
                    versions[name] = max(versions[name], version)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # Not fsync'd: a lost or older record only weakens the check, never raises a false alarm.
        atomic_write(
            self.layout.versions_path, json.dumps({"versions": versions}).encode(), durable=False
        )

    def file_problems(self, name: str) -> list[str]:
        """Data files of the table's current version that are missing or of another size
        than the log says (one ``stat`` per file: for ``status``, not for every batch)."""
        actions = self.tables.add_actions(name)
        missing, wrong = [], []
        for rel, size in zip(
            actions.column("path").to_pylist(),
            actions.column("size_bytes").to_pylist(),
            strict=True,
        ):
            try:
                actual = os.stat(self.layout.local_file(name, rel)).st_size
            except FileNotFoundError:
                missing.append(rel)
                continue
            if size is not None and actual != size:
                wrong.append(f"{rel} ({actual:,} bytes, the log says {size:,})")
        problems = []
        if missing:
            problems.append(f"{len(missing)} data file(s) missing, e.g. {missing[0]}")
        if wrong:
            problems.append(f"{len(wrong)} data file(s) of the wrong size, e.g. {wrong[0]}")
        return [self._damaged(name, "; ".join(problems))] if problems else []

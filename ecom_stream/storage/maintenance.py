"""Table upkeep: compaction of small files, checkpoints, vacuum of unreferenced files.

Apart from ``tables``, the only module that calls ``deltalake``: the maintenance operations
of the handles ``Tables`` keeps."""

from __future__ import annotations

from deltalake import PostCommitHookProperties

from ecom_stream.storage.layout import TABLES
from ecom_stream.storage.tables import Tables

__all__ = ["Maintenance"]


class Maintenance:
    """Rewrites and clean-ups of one lake's tables that change no rows."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def compact(self, name: str, partition: str | None, target_bytes: int) -> None:
        """Rewrite the files below ``target_bytes`` of one partition (or of the table) into
        files of about that size, one task at a time (memory stays at one file's worth).

        The commit deletes no expired commit files: gold reads the silver commit history since
        its last refresh, so only the pipeline's own commits, made after gold caught up, may.
        """
        spec = TABLES[name]
        column = spec.partition_by[0] if spec.partition_by else None
        filters = [(column, "=", partition)] if column and partition is not None else None
        dt = self.tables.table(name)
        with self.tables.errors("compact", name):
            dt.optimize.compact(
                partition_filters=filters,
                target_size=target_bytes,
                max_concurrent_tasks=1,
                post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
            )
        dt.update_incremental()

    def checkpoint(self, name: str) -> None:
        """Write a checkpoint of the table's current version (readers skip the commit files)."""
        self.tables.table(name).create_checkpoint()

    def vacuum(self, name: str, *, retention_hours: float, dry_run: bool) -> list[str]:
        """Delete (or, ``dry_run``, list) the data files no version younger than
        ``retention_hours`` references, and files the log never knew; returns them."""
        return self.tables.table(name).vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            enforce_retention_duration=False,
            full=True,
        )

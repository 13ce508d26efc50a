"""Table maintenance: compaction of small files, checkpoints, vacuum of unreferenced files."""

from __future__ import annotations

import logging
from collections import Counter

from ecom_stream.config import Settings
from ecom_stream.engine.refresh import GoldRefresher
from ecom_stream.errors import EcomStreamError
from ecom_stream.storage.lake import TABLES, Lake

__all__ = ["compact_if_needed", "maintain"]

logger = logging.getLogger(__name__)
# The daemon compacts toward small files: Delta only rewrites files below the target size, so
# one pass rewrites at most the new small files plus one partly filled file per partition,
# never the large files of a backfill (a 64 MB target rewrote all of a 3M-order bronze table
# between two batches of the daemon).
DAEMON_TARGET_BYTES = 2 * 1024 * 1024
SMALL_FILE_BYTES = DAEMON_TARGET_BYTES // 2
MAINTAIN_TARGET_BYTES = 64 * 1024 * 1024


def _small_files_by_partition(lake: Lake, name: str) -> Counter[str | None]:
    actions = lake.tables.add_actions(name)
    sizes = actions.column("size_bytes").to_pylist()
    partition_col = TABLES[name].partition_by[0] if TABLES[name].partition_by else None
    parts = (
        [str(p) for p in actions.column(f"partition.{partition_col}").to_pylist()]
        if partition_col
        else [None] * len(sizes)
    )
    return Counter(p for p, size in zip(parts, sizes, strict=True) if size < SMALL_FILE_BYTES)


def compact_table(
    lake: Lake,
    name: str,
    *,
    min_files: int = 2,
    small: Counter[str | None] | None = None,
    target_bytes: int = MAINTAIN_TARGET_BYTES,
) -> tuple[int, int]:
    """Compact the partitions (or the table) holding at least ``min_files`` small files.

    Returns (files before, files after). Only partitions that need it are rewritten, so the
    cost follows the recent writes, not the size of the table.
    """
    before = lake.queries.file_count(name)
    if small is None:
        small = _small_files_by_partition(lake, name)
    for part, count in small.items():
        if count >= min_files:
            lake.maintenance.compact(name, part, target_bytes)
    return before, lake.queries.file_count(name)


def compact_if_needed(lake: Lake, settings: Settings) -> list[str]:
    """Between batches (daemon): compact tables that gained many small files."""
    done = []
    for name in TABLES:
        small = _small_files_by_partition(lake, name)
        # Only files beyond the first of each partition can be merged away: a day-partitioned
        # table of thousands of one-file days needs nothing.
        excess = {part: count - 1 for part, count in small.items() if count > 1}
        if sum(excess.values()) >= settings.maintain_every_commits or any(
            c >= max(4, settings.maintain_every_commits // 5) for c in excess.values()
        ):
            before, after = compact_table(
                lake, name, min_files=2, small=small, target_bytes=DAEMON_TARGET_BYTES
            )
            done.append(f"{TABLES[name].path}: {before} -> {after} files")
            logger.info("compacted %s: %d -> %d files", TABLES[name].path, before, after)
    return done


def maintain(settings: Settings, *, dry_run: bool = False) -> list[str]:
    """Compact every table, write a checkpoint, vacuum files older than the retention."""
    lake = Lake(settings.lake_dir)
    if not lake.tables.exists():
        raise EcomStreamError(f"no lake at {lake.root}: nothing to maintain")
    lines = []
    with lake.writer_lock("maintain"):
        counts = {}
        for name in TABLES:
            if dry_run:
                counts[name] = (lake.queries.file_count(name),) * 2
            else:
                counts[name] = compact_table(lake, name)
        if not dry_run:
            # Compaction commits change no data; recording them in gold's watermark now keeps
            # the silver history gold reads short (commit files expire, see lake.py).
            GoldRefresher(lake, settings).bring_up_to_date()
        for name, spec in TABLES.items():
            before, after = counts[name]
            if not dry_run:
                lake.maintenance.checkpoint(name)
            removed = lake.maintenance.vacuum(
                name, retention_hours=settings.vacuum_retention_hours, dry_run=dry_run
            )
            verb = "would delete" if dry_run else "deleted"
            lines.append(
                f"{spec.path}: files {before} -> {after}; vacuum {verb} {len(removed)} old files"
            )
    return lines

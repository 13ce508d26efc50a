"""``ecom-stream rebuild``: replay the immutable raw copies into a fresh lake."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from ecom_stream.config import Settings
from ecom_stream.engine.backfill import BackfillSummary, Progress
from ecom_stream.engine.pipeline import Pipeline
from ecom_stream.errors import ConfigError
from ecom_stream.storage.folders import check_new_lake
from ecom_stream.storage.lake import Lake

__all__ = ["rebuild"]


def rebuild(settings: Settings, into: Path) -> BackfillSummary:
    """Process every file in the lake's ``raw/`` into a new lake at ``into``.

    The result has the same bronze, silver and gold tables as the live lake (batches are
    order-independent, and each row keeps the time its file was first received). Until it
    finishes, the new lake carries a marker that ``status`` reports and writers refuse.
    """
    source = Lake(settings.lake_dir)
    if not source.layout.raw_dir.is_dir():
        raise ConfigError(f"no raw/ folder in {source.layout.root}: nothing to rebuild from")
    into = into.absolute()
    check_new_lake(into, source.layout.root)
    target = settings.replace(lake_dir=into)
    batches = source.blobs.raw_batches()
    files = [path for path, _ in batches]
    metas = dict(batches)
    summary = BackfillSummary()
    started = datetime.now()
    new = Lake(into)
    with new.integrity.rebuilding(), new.writer_lock("rebuild"):
        pipeline = Pipeline(
            target, keep_source=True, received_at=lambda path: _received_at(metas.get(path))
        )
        bar = Progress(len(files))
        try:
            pipeline.process(files, on_outcome=lambda o: (summary.add(o), bar.step(o)))
        finally:
            bar.close()
    summary.seconds = (datetime.now() - started).total_seconds()
    return summary


def _received_at(meta: dict[str, Any] | None) -> datetime | None:
    """When the raw copy's file was first received (its meta.json), if it says."""
    if meta is None:
        return None
    try:
        return datetime.fromisoformat(meta["received_at"])
    except (ValueError, KeyError):
        return None

"""``ecom-stream backfill``: process a folder of batch files once, with progress and a summary."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ecom_stream.config import Settings
from ecom_stream.engine.pipeline import FileOutcome, Pipeline
from ecom_stream.errors import ConfigError
from ecom_stream.service.status import backlog
from ecom_stream.storage.lock import LakeLock

__all__ = ["BackfillSummary", "Progress", "run_backfill"]


@dataclass
class BackfillSummary:
    """Counts of a backfill run."""

    files: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    rows_in: int = 0
    rows_merged: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0

    def add(self, outcome: FileOutcome) -> None:
        self.files += 1
        self.outcomes[outcome.outcome] += 1
        self.rows_in += outcome.rows_in
        self.rows_merged += outcome.rows_merged
        self.rows_rejected += outcome.rows_rejected

    def text(self) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items())) or "nothing to do"
        rate = self.rows_in / self.seconds if self.seconds else 0.0
        return (
            f"{self.files} files: {parts}; rows {self.rows_in:,} in, {self.rows_merged:,} merged, "
            f"{self.rows_rejected:,} rejected; {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        )


class Progress:
    """A one-line progress bar on a terminal; silent elsewhere."""

    def __init__(
        self, total: int, stream: TextIO = sys.stderr, enabled: bool | None = None
    ) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()

    def step(self, outcome: FileOutcome) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} files "
            f"{elapsed:5.1f}s eta {eta:5.1f}s  {outcome.name[:40]:<40}"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def run_backfill(
    settings: Settings, folder: Path | None = None, *, keep: bool = False, progress: bool = True
) -> BackfillSummary:
    """Process every batch file in ``folder`` (default: landing) in micro-batches."""
    folder = folder or settings.landing_dir
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder: pass the folder that holds the batch files")
    started = time.monotonic()
    summary = BackfillSummary()
    with LakeLock(_lock_path(settings), "backfill"):
        pipeline = Pipeline(settings, keep_source=keep)
        files = backlog(folder)
        bar = Progress(len(files), enabled=None if progress else False)
        try:
            pipeline.process(files, on_outcome=lambda o: (summary.add(o), bar.step(o)))
        finally:
            bar.close()
    summary.seconds = time.monotonic() - started
    return summary


def _lock_path(settings: Settings) -> Path:
    from ecom_stream.storage.lake import Lake

    return Lake(settings.lake_dir).lock_path

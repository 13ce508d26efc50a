"""``ecom-stream backfill``: process a folder of batch files once, with progress and a summary."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ecom_stream.config import Settings
from ecom_stream.engine.pipeline import FileOutcome, Pipeline
from ecom_stream.errors import ConfigError, LakeError, is_transient, retry_delay
from ecom_stream.sources.listing import backlog
from ecom_stream.storage.lock import LakeLock

__all__ = ["BackfillSummary", "Progress", "run_backfill"]

logger = logging.getLogger(__name__)


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
    with _writer_lock(settings):
        files = backlog(folder)
        bar = Progress(len(files), enabled=None if progress else False)
        try:
            _process_with_retries(settings, files, keep, lambda o: (summary.add(o), bar.step(o)))
        finally:
            bar.close()
    summary.seconds = time.monotonic() - started
    return summary


def _process_with_retries(
    settings: Settings, files: list[Path], keep: bool, on_outcome: Callable[[FileOutcome], None]
) -> None:
    """Process ``files``; on a transient error rebuild the pipeline and go on with the files
    not yet reported, at most ``backfill_retries`` times. Terminal errors are raised at once."""
    done: set[str] = set()

    def record(outcome: FileOutcome) -> None:
        done.add(outcome.name)
        on_outcome(outcome)

    for attempt in range(settings.backfill_retries + 1):
        todo = [f for f in files if f.name not in done]
        try:
            # A new pipeline each time: it re-reads the ledger and its in-flight marker, as
            # a restart after a crash does.
            Pipeline(settings, keep_source=keep).process(todo, on_outcome=record)
            return
        except Exception as exc:
            if not is_transient(exc) or settings.backfill_retries == 0:
                raise  # nothing was retried: the error as it came
            if attempt == settings.backfill_retries:
                raise LakeError(
                    f"backfill gave up after {attempt + 1} attempts "
                    f"({len(files) - len(done)} file(s) left): {_one_line(exc)}"
                ) from exc
            delay = retry_delay(settings.retry_backoff_seconds, attempt)
            logger.warning("transient error (%s); retry %d/%d in %.1f s", _one_line(exc),
                           attempt + 1, settings.backfill_retries, delay)
            time.sleep(delay)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _writer_lock(settings: Settings) -> LakeLock:
    from ecom_stream.storage.lake import Lake

    return Lake(settings.lake_dir).writer_lock("backfill")

"""Chains the stages for a set of batch files: intake -> micro-batch merge -> commit.

``intake.Intake`` reads each file; files of one entity are grouped into micro-batches, merged
by ``microbatch.MicroBatch`` (a large file by ``pieces.PieceMerge``) and recorded by
``commit.Commits``. Crash safety: every commit is either idempotent by nature (newer-wins
merges, gold recomputed from silver) or an append whose rows name the file's arrival id; the
ledger row is the last commit and the source file is removed only after it. A marker file
lists the arrivals of the micro-batch in flight, so after a crash only those are looked up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from ecom_stream.config import Settings
from ecom_stream.engine.commit import Commits
from ecom_stream.engine.intake import Intake, arrival_id_of
from ecom_stream.engine.memory import LongLived, cyclic_gc_paused, use_system_allocator
from ecom_stream.engine.microbatch import MicroBatch
from ecom_stream.engine.observer import Observer
from ecom_stream.engine.pieces import PieceMerge
from ecom_stream.engine.quarantine import Quarantine
from ecom_stream.engine.refresh import GoldRefresher
from ecom_stream.engine.silver import MergeParts, Silver
from ecom_stream.engine.state import BatchState
from ecom_stream.logs import batch_context, outcome_context
from ecom_stream.storage.lake import Lake
from ecom_stream.transform import clean
from ecom_stream.transform.bookkeeping import FileOutcome, ParsedFile, ledger_rows

__all__ = ["FileOutcome", "Pipeline", "arrival_id_of", "ledger_rows"]

logger = logging.getLogger(__name__)


class Pipeline:
    """Processes batch files into the lake; one instance per process (one writer per lake)."""

    def __init__(
        self,
        settings: Settings,
        *,
        keep_source: bool = False,
        received_at: Callable[[Path], datetime | None] | None = None,
        observer: Observer | None = None,
    ) -> None:
        use_system_allocator()
        self.settings = settings
        self.observer = observer or Observer()
        self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecom-side")
        self._bronze = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecom-bronze")
        # Importing and building Great Expectations takes seconds: it runs on the side thread
        # while this one opens the lake and reads the first files (native code, GIL released).
        self._validator = self._side.submit(_build_validator, settings)
        self.lake = Lake(
            settings.lake_dir, writer=True, log_retention=settings.log_retention_interval
        )
        self.lake.ensure_tables()
        # Partial raw or quarantine copies of an interrupted write (a full disk, a kill): this
        # process holds the writer lock, so no one else is writing them.
        self.lake.blobs.remove_stale_temp_files()
        self.gold = GoldRefresher(self.lake, settings, self.observer)
        self.state = BatchState(self.lake)
        self.commits = Commits(self.lake, self.state, keep_source=keep_source)
        self.quarantine = Quarantine(settings, self.lake, self.state, self.commits)
        self.intake = Intake(
            settings, self.lake, self.state, self.commits, self.quarantine, received_at
        )
        # A crash between silver and gold commits left gold behind: catch up now, while the
        # silver commit history it reads is still kept (see LOG_RETENTION in storage/layout.py).
        self.gold.bring_up_to_date()
        self._long_lived = LongLived()
        parts = MergeParts(
            settings,
            self.lake,
            self._validator.result,
            self._long_lived.freeze,
            self.commits,
            self.quarantine,
            self.gold,
            Silver(self.lake, settings, self._side),
        )
        self._microbatch = MicroBatch(parts, self._bronze)
        self._pieces = PieceMerge(parts)

    @property
    def validator(self) -> Any:
        """The Great Expectations validator (waits for its build on first use)."""
        return self._validator.result()

    def warm_up(self) -> None:
        """Build Great Expectations (seconds) before the first file arrives, not on it."""
        samples = {
            "products": {
                "product_id": 1,
                "name": "x",
                "price": 1.0,
                "created_at": "2026-01-01T00:00:00",
            },
            "orders": {
                "order_id": 1,
                "customer_id": 1,
                "product_ids": [1],
                "quantities": [1],
                "total": 1.0,
                "status": "pending",
                "created_at": "2026-01-01T00:00:00",
            },
        }
        for entity, record in samples.items():
            typed = clean.typed_view(entity, clean.records_frame(entity, [[record]]))
            self.validator.validate(entity, typed, [set(record)])
        self._long_lived.freeze()

    # -- entry point ----------------------------------------------------------------------
    def process(
        self,
        paths: Iterable[Path],
        *,
        on_outcome: Callable[[FileOutcome], None] | None = None,
    ) -> list[FileOutcome]:
        """Process files in micro-batches: products first, then orders, each in name order.

        The result equals processing them one by one: merges are newer-wins, rows are rejected
        before duplicate keys are reduced, and batch verdicts are per file.
        """
        with cyclic_gc_paused():
            return self._process(paths, on_outcome)

    def _process(
        self, paths: Iterable[Path], on_outcome: Callable[[FileOutcome], None] | None
    ) -> list[FileOutcome]:
        ordered = sorted(
            paths, key=lambda p: (0 if p.name.lower().startswith("products") else 1, p.name)
        )
        outcomes: list[FileOutcome] = []
        finals: list[FileOutcome] = []
        group: list[ParsedFile] = []
        seen: set[str] = set()

        def flush() -> None:
            nonlocal group, finals
            files = [*group, *finals]
            with batch_context([f.batch_id for f in files], [f.arrival_id for f in files]):
                done = self.commits.microbatch(group, finals, self._merge)
            for o in done:
                with outcome_context(o):
                    logger.info("%s", o.log_line())
                if on_outcome:
                    on_outcome(o)
            self.observer.microbatch(done)
            outcomes.extend(done)
            group, finals = [], []

        for path in ordered:
            item = self.intake.take(path, seen)
            if item is None:
                continue
            if isinstance(item, FileOutcome):
                finals.append(item)
            elif item.pieces:
                # A file larger than a micro-batch is a micro-batch of its own, merged in pieces.
                if group:
                    flush()
                group.append(item)
                flush()
                continue
            else:
                if group and (
                    group[0].entity != item.entity
                    or len(group) >= self.settings.microbatch_max_files
                    or sum(len(g.records) for g in group) + len(item.records)
                    > self.settings.microbatch_max_rows
                ):
                    flush()
                group.append(item)
            if len(finals) >= self.settings.microbatch_max_files:
                flush()
        if group or finals:
            flush()
        return outcomes

    def quarantine_path(self, path: Path, reason: str) -> FileOutcome | None:
        """Quarantine one file outright (for example after repeated unexpected failures)."""
        outcome = self.quarantine.outright(path, reason)
        if outcome is None:
            return None
        done = self.commits.microbatch([], [outcome], self._merge)
        self.observer.microbatch(done)
        return done[0]

    # -- stage 2: one micro-batch ---------------------------------------------------------
    def _merge(self, group: list[ParsedFile]) -> list[FileOutcome]:
        """A micro-batch's outcomes: a large file is merged in pieces, else all together."""
        if group[0].pieces:
            return [self._pieces.merge(group[0])]
        return self._microbatch.merge(group)


def _build_validator(settings: Settings) -> Any:
    from ecom_stream.quality.validate import Validator  # GX is heavy: imported only by writers

    validator = Validator(settings)
    validator.prepare()
    return validator

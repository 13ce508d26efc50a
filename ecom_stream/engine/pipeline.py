"""Chains the stages for a set of batch files: read -> validate -> clean -> merge -> gold -> ledger.

Crash safety: every commit is either idempotent by nature (newer-wins merges, gold recomputed
from silver) or an append whose rows name the file's arrival id; the ledger row is the last
commit and the source file is removed only after it. A marker file lists the arrivals of the
micro-batch in flight, so after a crash only those are looked up in the tables.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ecom_stream.config import Settings
from ecom_stream.contract import schema as S
from ecom_stream.engine import refresh
from ecom_stream.engine.commit import Commits
from ecom_stream.engine.intake import (
    FIX_NAME,
    arrival_id_of,
    piece_arrival,
    pieces_of,
    unread_batch_id,
)
from ecom_stream.engine.memory import LongLived, cyclic_gc_paused, use_system_allocator
from ecom_stream.engine.pieces import PieceMerge
from ecom_stream.engine.quarantine import Quarantine, failed_checks
from ecom_stream.engine.refresh import GoldRefresher
from ecom_stream.engine.silver import MergeParts, Silver
from ecom_stream.engine.state import BatchState
from ecom_stream.errors import BatchError, BatchReadError
from ecom_stream.storage.lake import BRONZE, Lake
from ecom_stream.transform import bookkeeping, clean
from ecom_stream.transform.bookkeeping import FileOutcome, ParsedFile, ledger_rows
from ecom_stream.transform.parse import (
    classify,
    display_name,
    parse_records,
    read_bytes,
)

__all__ = ["FileOutcome", "Pipeline", "arrival_id_of", "ledger_rows"]

logger = logging.getLogger(__name__)
# Micro-batches of at least this many rows append bronze while silver merges (see _merge_group).
BRONZE_ALONGSIDE_ROWS = 5_000
# A file merged in pieces refreshes gold at least this often (see _merge_pieces).
GOLD_EVERY_SECONDS = 4.0


class Pipeline:
    """Processes batch files into the lake; one instance per process (one writer per lake)."""

    def __init__(
        self,
        settings: Settings,
        *,
        keep_source: bool = False,
        received_at: Callable[[Path], datetime | None] | None = None,
    ) -> None:
        use_system_allocator()
        self.settings = settings
        self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecom-side")
        self._bronze = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecom-bronze")
        # Importing and building Great Expectations takes seconds: it runs on the side thread
        # while this one opens the lake and reads the first files (native code, GIL released).
        self._validator = self._side.submit(_build_validator, settings)
        self.lake = Lake(settings.lake_dir, writer=True)
        self.lake.ensure_tables()
        # Partial raw or quarantine copies of an interrupted write (a full disk, a kill): this
        # process holds the writer lock, so no one else is writing them.
        self.lake.remove_stale_temp_files()
        self.gold = GoldRefresher(self.lake, settings)
        self._received_at = received_at
        self.state = BatchState(self.lake)
        self.commits = Commits(self.lake, self.state, keep_source=keep_source)
        self.quarantine = Quarantine(settings, self.lake, self.state, self.commits)
        # A crash between silver and gold commits left gold behind: catch up now, while the
        # silver commit history it reads is still kept (see LOG_RETENTION in lake.py).
        self.gold.bring_up_to_date()
        self._long_lived = LongLived()
        self.silver = Silver(self.lake, settings, self._side)
        self._pieces = PieceMerge(
            MergeParts(
                settings,
                self.lake,
                self._validator.result,
                self._long_lived.freeze,
                self.commits,
                self.quarantine,
                self.gold,
                self.silver,
            )
        )

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
            done = self.commits.microbatch(group, finals, self._merge_group)
            for o in done:
                logger.info("%s", o.log_line())
                if on_outcome:
                    on_outcome(o)
            outcomes.extend(done)
            group, finals = [], []

        for path in ordered:
            item = self._intake(path, seen)
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
        return self.commits.microbatch([], [outcome], self._merge_group)[0]

    # -- stage 1: one file ----------------------------------------------------------------
    def _intake(self, path: Path, seen: set[str]) -> ParsedFile | FileOutcome | None:
        kind = classify(path.name)
        if kind.action == "ignore" or (path.is_dir() and not path.is_symlink()):
            return None
        started = time.perf_counter()
        received = (self._received_at(path) if self._received_at else None) or datetime.now(UTC)
        try:
            data = read_bytes(path, self.settings.max_file_bytes)
        except FileNotFoundError:
            return None  # moved away since it was listed
        except BatchError as exc:
            return self.quarantine.unreadable(path, kind, None, exc.reason, received)
        # A file quarantined for its name is recorded under its bytes and name together: the
        # same bytes under a fixed name are a new batch (content alone decides duplicates).
        if kind.action == "quarantine":
            batch_id = unread_batch_id(data, path)
        else:
            batch_id = hashlib.sha256(data).hexdigest()
        arrival = arrival_id_of(batch_id, path)
        if self.state.recorded(arrival):
            # Recorded before a crash or stop, but not yet removed from landing.
            self.commits.remove_source(path, batch_id, arrival)
            return None
        if batch_id in seen or self.state.already_done(batch_id):
            return FileOutcome(
                display_name(path.name),
                kind.entity,
                batch_id,
                arrival,
                "duplicate",
                reason="same bytes as a batch already processed",
                received_at=received,
                source=path,
            )
        seen.add(batch_id)
        if kind.action == "quarantine":
            return self.quarantine.unread(
                path, kind, data, batch_id, arrival, kind.reason or "", received, fix=FIX_NAME
            )
        pieces = pieces_of(data, kind.fmt or "array", self.settings.microbatch_max_rows)
        if pieces:
            self.lake.store_raw(
                batch_id,
                path.name,
                data,
                bookkeeping.raw_meta(path.name, kind, batch_id, received),
            )
            return ParsedFile(
                path, path.name, kind.entity or "", batch_id, arrival, [], received,
                (time.perf_counter() - started) * 1000, data=data, pieces=pieces,
                piece_arrivals=[piece_arrival(arrival, k) for k in range(len(pieces))],
            )
        try:
            records = parse_records(data, kind.fmt or "array", self.settings.max_json_depth)
        except BatchReadError as exc:
            return self.quarantine.unread(
                path, kind, data, batch_id, arrival, exc.reason, received
            )
        self.lake.store_raw(
            batch_id, path.name, data, bookkeeping.raw_meta(path.name, kind, batch_id, received)
        )
        read_ms = (time.perf_counter() - started) * 1000
        if not records:
            return FileOutcome(
                path.name,
                kind.entity,
                batch_id,
                arrival,
                "empty",
                received_at=received,
                timings={"read_ms": read_ms},
                source=path,
            )
        return ParsedFile(
            path, path.name, kind.entity or "", batch_id, arrival, records, received, read_ms
        )

    # -- stage 2: one micro-batch ---------------------------------------------------------
    def _merge_group(self, group: list[ParsedFile]) -> list[FileOutcome]:
        if group[0].pieces:
            return [self._pieces.merge(group[0])]
        entity = group[0].entity
        key = S.KEYS[entity]
        t0 = time.perf_counter()
        # A merge pair that failed half-way in this process (the daemon carries on with other
        # files) leaves a marker: heal silver before this micro-batch reads it.
        refresh.heal_order_lines(self.lake)
        raw = clean.records_frame(entity, [g.records for g in group])
        typed = clean.typed_view(entity, raw, self.settings, [g.received_at for g in group])
        present = [set().union(*map(dict.keys, g.records)) for g in group]
        reports = self.validator.validate(entity, typed, present)
        self._long_lived.freeze()
        t1 = time.perf_counter()

        outcomes = [
            FileOutcome(
                g.name,
                entity,
                g.batch_id,
                g.arrival_id,
                "merged",
                rows_in=len(g.records),
                received_at=g.received_at,
                source=g.path,
                timings={"read_ms": g.read_ms},
            )
            for g in group
        ]
        bad_files = {r.file_index for r in reports if r.quarantine_reasons}
        reject_reason = np.full(len(typed), None, dtype=object)
        for report in reports:
            for pos, reason in report.rejected.items():
                reject_reason[pos] = reason
        for name, mask in clean.row_rules(entity, typed).items():
            if self.settings.policies.get(name) != "warn":
                reject_reason[(reject_reason == None) & mask] = name  # noqa: E711
        file_idx = typed["_file"].to_numpy()
        in_bad_file = np.isin(file_idx, list(bad_files))
        rejected = (reject_reason != None) & ~in_bad_file  # noqa: E711
        accepted = ~rejected & ~in_bad_file

        for i, o in enumerate(outcomes):
            rows = file_idx == i
            o.rows_rescued = int(raw.loc[rows, "_rescued"].notna().sum())
            if i in bad_files:
                o.outcome = "quarantined"
                o.reason = "; ".join(reports[i].quarantine_reasons)
            else:
                o.rows_rejected = int((rejected & rows).sum())
                o.rows_merged = int((accepted & rows).sum())

        rejected_rows = (
            bookkeeping.rejected_rows(entity, raw, typed, reject_reason, rejected, group)
            if rejected.any()
            else None
        )

        typed_ok = typed[accepted].reset_index(drop=True)

        # Bronze keeps every row of every accepted file, rejected rows included.
        bronze_owners = [o for o in outcomes if o.outcome == "merged"]
        bronze_done: Future[None] | None = None
        bronze_rows: pa.Table | None = None
        if len(raw) >= BRONZE_ALONGSIDE_ROWS:
            # A large micro-batch (a backfill, a burst) builds and appends bronze, and writes
            # the GX result files, on its own thread while silver merges: the merges run in
            # native code without the GIL, so that Python work overlaps them (-0.3 s a backfill).
            bronze_done = self._bronze.submit(
                self._bookkeep_alongside, entity, raw[~in_bad_file], group, bronze_owners, reports
            )
        else:
            # One file (the daemon): built now, appended after gold, off the path from a file
            # landing to the dashboard seeing it.
            bronze_rows = bookkeeping.bronze_rows(entity, raw[~in_bad_file], group)
        # The raw records and frames are not needed past this point: free them before the
        # merges, which are the other memory peak of a micro-batch.
        del raw, typed
        for g in group:
            g.records = []
        try:
            winners, stored, warnings = self.silver.changes(entity, key, typed_ok)
            # Quality rows go first: their domain warnings compare the batch with silver as it
            # was before the merge, which a replay after a crash past the merge could not see.
            quality = bookkeeping.quality_rows(group, reports, warnings, typed_ok)
            self.commits.append_once("quality_validations", quality, outcomes)
            self.silver.merge(entity, winners, stored)
            t2 = time.perf_counter()
            gold_ms = self.gold.bring_up_to_date()
            gold_at = datetime.now(UTC)
        finally:
            # Even on an error no bronze write may still be in flight when this returns (a
            # retry's lookup of committed arrivals must see it).
            if bronze_done is not None:
                wait([bronze_done])
        if bronze_done is not None:
            bronze_done.result()
        elif bronze_rows is not None:
            self.commits.append_once(BRONZE[entity], bronze_rows, bronze_owners)
        if rejected_rows is not None:
            self.commits.append_once(
                "rejected_rows", rejected_rows, [o for o in outcomes if o.rows_rejected]
            )
        for i, o in enumerate(outcomes):
            if o.outcome == "quarantined":
                self.quarantine.file(
                    o,
                    group[i].path.read_bytes() if group[i].path.exists() else None,
                    {"failed_checks": failed_checks(reports[i])},
                )
            if bronze_done is None:
                self.commits.store_gx_result(group[i], reports[i])
            o.timings.update(
                validate_ms=(t1 - t0) * 1000, merge_ms=(t2 - t1) * 1000, gold_ms=gold_ms
            )
            if o.outcome == "merged":
                o.gold_committed_at = gold_at
        return outcomes

    def _bookkeep_alongside(
        self,
        entity: str,
        raw: pd.DataFrame,
        group: list[ParsedFile],
        owners: list[FileOutcome],
        reports: list[Any],
    ) -> None:
        bronze = bookkeeping.bronze_rows(entity, raw, group)
        self.commits.append_once(BRONZE[entity], bronze, owners)
        for parsed, report in zip(group, reports, strict=True):
            self.commits.store_gx_result(parsed, report)


def _build_validator(settings: Settings) -> Any:
    from ecom_stream.quality.validate import Validator  # GX is heavy: imported only by writers

    validator = Validator(settings)
    validator.prepare()
    return validator

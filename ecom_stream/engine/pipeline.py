"""Chains the stages for a set of batch files: read -> validate -> clean -> merge -> gold -> ledger.

Crash safety: every commit is either idempotent by nature (newer-wins merges, gold recomputed
from silver) or an append whose rows name the file's arrival id; the ledger row is the last
commit and the source file is removed only after it. A marker file lists the arrivals of the
micro-batch in flight, so after a crash only those are looked up in the tables.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
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
from ecom_stream.engine.memory import cyclic_gc_paused, release_memory, use_system_allocator
from ecom_stream.engine.quarantine import Quarantine, failed_checks
from ecom_stream.engine.refresh import AFFECTED_KEY, GoldRefresher
from ecom_stream.engine.state import BatchState
from ecom_stream.engine.winners import file_steps, file_warnings
from ecom_stream.errors import BatchError, BatchReadError
from ecom_stream.storage.lake import BRONZE, SILVER, Lake, atomic_write, months_literal
from ecom_stream.transform import bookkeeping, clean
from ecom_stream.transform.bookkeeping import FileOutcome, ParsedFile, ledger_rows
from ecom_stream.transform.parse import (
    LINES_SUFFIXES,
    classify,
    display_name,
    parse_array_piece,
    parse_lines_piece,
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
        self._gc_frozen = False

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
        self._freeze_gc()

    def _freeze_gc(self) -> None:
        if not self._gc_frozen:
            # Great Expectations leaves ~1M long-lived objects after its first run; moving them
            # out of the collector's sight keeps every later collection cheap.
            gc.collect()
            gc.freeze()
            self._gc_frozen = True

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
            return [self._merge_pieces(group[0])]
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
        self._freeze_gc()
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
            winners, stored, warnings = self._silver_changes(entity, key, typed_ok)
            # Quality rows go first: their domain warnings compare the batch with silver as it
            # was before the merge, which a replay after a crash past the merge could not see.
            quality = bookkeeping.quality_rows(group, reports, warnings, typed_ok)
            self.commits.append_once("quality_validations", quality, outcomes)
            if not winners.empty:
                if entity == "orders":
                    self._merge_orders(winners, stored)
                else:
                    self._merge_products(winners, stored)
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

    def _piece_frames(
        self, g: ParsedFile, k: int, offset: int
    ) -> tuple[list[dict[str, Any]], pd.DataFrame, pd.DataFrame]:
        """Piece ``k`` of a large file: its records, raw and typed frames (row numbers
        counted over the file, from ``offset``)."""
        assert g.data is not None
        start, end, first = g.pieces[k]
        depth = self.settings.max_json_depth
        records = (
            parse_lines_piece(g.data, start, end, first, offset, depth)
            if g.name.lower().endswith(LINES_SUFFIXES)
            else parse_array_piece(g.data, start, end, offset, depth)
        )
        raw = clean.records_frame(g.entity, [records])
        raw["_row_no"] += offset
        typed = clean.typed_view(g.entity, raw, self.settings, [g.received_at])
        return records, raw, typed

    def _reject_reasons(
        self, entity: str, typed: pd.DataFrame, rejected: dict[int, str]
    ) -> np.ndarray:
        """Per row, why it is rejected (None: accepted), as in ``_merge_group``."""
        reason = np.full(len(typed), None, dtype=object)
        for pos, why in rejected.items():
            reason[pos] = why
        for name, mask in clean.row_rules(entity, typed).items():
            if self.settings.policies.get(name) != "warn":
                reason[(reason == None) & mask] = name  # noqa: E711
        return reason

    def _merge_pieces(self, g: ParsedFile) -> FileOutcome:
        """Merge a file of more rows than a micro-batch holds, piece by piece, so memory is
        bounded by the piece size and not by the file's.

        Pass 1 validates every piece and keeps only the failing rows and, per accepted row,
        its key, version and hash: the file's verdict and quality rows are decided over the
        whole file, and each key's newest version in the file is known. Pass 2 parses again
        and merges each piece's rows that are the newest of their key in the whole file, so
        each key is merged once and its domain warning compares it with the state before
        the file. Bronze and rejected rows are appended under one arrival a piece (a replay
        skips only the pieces committed); each piece's domain warnings are written to raw/
        before its merge (a replay after the merge could not compute them again); gold, the
        quality rows and the ledger row are written once, after the last piece.
        """
        from ecom_stream.quality.validate import CheckResult, FileChecks, combine_domain_warnings

        entity, key = g.entity, S.KEYS[g.entity]
        t0 = time.perf_counter()
        refresh.heal_order_lines(self.lake)
        outcome = FileOutcome(
            g.name, entity, g.batch_id, g.arrival_id, "merged", received_at=g.received_at,
            source=g.path, timings={"read_ms": g.read_ms},
        )
        checks = FileChecks(self.validator, entity)
        offsets: list[int] = []
        rejections: list[tuple[np.ndarray, np.ndarray]] = []
        keys, versions, hashes, rows = [], [], [], []
        total = 0
        try:
            for k in range(len(g.pieces)):
                records, raw, typed = self._piece_frames(g, k, total)
                offsets.append(total)
                present = set().union(*map(dict.keys, records))
                reason = self._reject_reasons(entity, typed, checks.add(typed, present))
                bad = np.flatnonzero(reason != None)  # noqa: E711
                rejections.append((bad, reason[bad]))
                ok = reason == None  # noqa: E711
                outcome.rows_rescued += int(raw["_rescued"].notna().sum())
                keys.append(typed.loc[ok, key].to_numpy(dtype=np.int64))
                versions.append(
                    pd.DatetimeIndex(typed.loc[ok, "_version_ts"]).as_unit("ns").asi8
                )
                hashes.append(np.array(typed.loc[ok, "_row_hash"].tolist(), dtype="S64"))
                rows.append(typed.loc[ok, "_row_no"].to_numpy(dtype=np.int64))
                total += len(records)
                del records, raw, typed
                # Great Expectations leaves cycles holding the piece's frames: collect them
                # now (the cyclic collector is paused while files are processed).
                release_memory()
            if total == 0:
                raise BatchReadError("empty file (only white space)")
        except BatchReadError as exc:
            return self.quarantine.unread(
                g.path, classify(g.path.name), g.data, g.batch_id, g.arrival_id, exc.reason,
                g.received_at,
            )
        self._freeze_gc()
        report = checks.report()
        outcome.rows_in = total
        t1 = time.perf_counter()
        warnings: list[Any] = []
        gold_ms = 0.0
        if report.quarantine_reasons:
            outcome.outcome = "quarantined"
            outcome.reason = "; ".join(report.quarantine_reasons)
        else:
            # Each key's newest version in the file (newest _version_ts, then largest hash,
            # then the last row: as clean.newest_per_key over the whole file).
            kk, vv, hh, rr = (np.concatenate(a) for a in (keys, versions, hashes, rows))
            order = np.lexsort((rr, hh, vv, kk))
            last = np.ones(len(order), dtype=bool)
            last[:-1] = kk[order][1:] != kk[order][:-1]
            newest = np.zeros(total, dtype=bool)
            newest[rr[order][last]] = True
            del keys, versions, hashes, rows, kk, vv, hh, rr, order, last
            gold_at = time.perf_counter()
            for k, piece_arrival in enumerate(g.piece_arrivals):
                records, raw, typed = self._piece_frames(g, k, offsets[k])
                piece = dataclasses.replace(
                    g, arrival_id=piece_arrival, records=records, data=None, pieces=[]
                )
                owner = dataclasses.replace(outcome, arrival_id=piece_arrival, source=None)
                bad, why = rejections[k]
                reason = np.full(len(typed), None, dtype=object)
                reason[bad] = why
                rejected = reason != None  # noqa: E711
                outcome.rows_rejected += int(rejected.sum())
                outcome.rows_merged += int((~rejected).sum())
                if rejected.any():
                    self.commits.append_once(
                        "rejected_rows",
                        bookkeeping.rejected_rows(
                            entity, raw, typed, reason, rejected, [piece], offsets[k]
                        ),
                        [owner],
                    )
                self.commits.append_once(
                    BRONZE[entity], bookkeeping.bronze_rows(entity, raw, [piece]), [owner]
                )
                mine = ~rejected & newest[typed["_row_no"].to_numpy()]
                typed_ok = typed[mine].reset_index(drop=True)
                del records, raw, typed, piece
                winners, stored, found = self._silver_changes(entity, key, typed_ok)
                kept = self.lake.raw_path(g.batch_id, f"warnings-{piece_arrival}.json")
                if kept.exists():
                    found = [
                        (0, CheckResult(**c, failing_rows=np.empty(0, np.int64)))
                        for c in json.loads(kept.read_bytes())
                    ]
                else:
                    atomic_write(
                        kept,
                        orjson.dumps([c.to_json() for _, c in found], default=str),
                        tmp_dir=self.lake.raw_tmp_dir,
                    )
                warnings.append([c for _, c in found])
                if not winners.empty:
                    if entity == "orders":
                        self._merge_orders(winners, stored)
                    else:
                        self._merge_products(winners, stored)
                del winners, stored, typed_ok
                release_memory()
                # Gold from the commits of several pieces at once (each piece recomputing all
                # the days it touches re-reads a growing silver), but at least every few
                # seconds: it reads the silver commit files, kept only 10 s (LOG_RETENTION).
                if time.perf_counter() - gold_at > GOLD_EVERY_SECONDS:
                    gold_ms += self.gold.bring_up_to_date()
                    gold_at = time.perf_counter()
        t2 = time.perf_counter()
        if outcome.outcome == "merged":
            gold_ms += self.gold.bring_up_to_date()
        by_name: dict[str, list[Any]] = {}
        for found_list in warnings:
            for c in found_list:
                by_name.setdefault(c.expectation, []).append(c)
        combined = [
            (0, combine_domain_warnings(entity, parts, self.settings))
            for parts in by_name.values()
        ]
        quality = bookkeeping.quality_rows([g], [report], combined, pd.DataFrame())
        self.commits.append_once("quality_validations", quality, [outcome])
        if outcome.outcome == "quarantined":
            self.quarantine.file(outcome, g.data, {"failed_checks": failed_checks(report)})
        self.commits.store_gx_result(g, report)
        outcome.timings.update(
            validate_ms=(t1 - t0) * 1000, merge_ms=(t2 - t1) * 1000, gold_ms=gold_ms
        )
        if outcome.outcome == "merged":
            outcome.gold_committed_at = datetime.now(UTC)
        g.data = None
        return outcome

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

    def _silver_changes(
        self, entity: str, key: str, typed_ok: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[int, Any]]]:
        """The rows that win over silver, the stored versions they replace, and the domain
        warnings of the change as (file index, CheckResult)."""
        if typed_ok.empty:
            return pd.DataFrame(), pd.DataFrame(), []
        cleaned = (clean.clean_products if entity == "products" else clean.clean_orders)(typed_ok)
        cleaned["_file"] = typed_ok["_file"].to_numpy()
        batch = clean.newest_per_key(cleaned, key)
        stored = self.lake.lookup(entity, batch[key].tolist())
        winners = clean.newer_than_stored(batch, stored, key)
        if winners.empty:
            # Nothing beats silver: no file's rows won at their turn either.
            return winners, stored, []
        stored_w = stored[stored[key].isin(winners[key])]
        steps, before = file_steps(cleaned, winners, stored, key)
        return winners, stored_w, file_warnings(entity, key, steps, before, self.settings)

    def _merge_orders(self, winners: pd.DataFrame, stored: pd.DataFrame) -> None:
        old_dates = set(stored["order_date"])
        new_dates = set(winners["order_date"])
        affected = refresh.affected_dates_for_orders(
            winners, stored, self.settings.excluded_statuses
        )
        meta = {AFFECTED_KEY: json.dumps(sorted(d.isoformat() for d in affected))}
        lines = clean.order_lines(winners)
        deletes = clean.removed_lines(winners, stored)
        dates = old_dates | new_dates
        # The two merges touch different tables and spend their time in Delta's native code
        # (the GIL is released): running them side by side uses both cores. They are two
        # commits, so one can land without the other (disk full, a kill): the marker names
        # the orders involved, and refresh.heal_order_lines re-derives their lines from
        # silver/orders before anything reads silver again (the next micro-batch, gold, a
        # restart). The retry of the files then merges as usual.
        refresh.lines_merge_starting(self.lake, winners["order_id"].to_numpy())
        lines_done = self._side.submit(
            self.lake.merge_lines, lines, deletes, dates=dates, metadata=meta
        )
        try:
            self.lake.merge_upsert(
                "silver_orders",
                winners,
                key="order_id",
                target_filter=f"t.order_month IN ({months_literal(dates)})",
                metadata=meta,
            )
        finally:
            lines_done.result()
        refresh.lines_merge_done(self.lake)

    def _merge_products(self, winners: pd.DataFrame, stored: pd.DataFrame) -> None:
        merged = winners.merge(
            stored[["product_id", "price", "category"]],
            on="product_id",
            how="left",
            suffixes=("", "_old"),
        )
        changed = merged[
            (merged["price"] != merged["price_old"])
            | (merged["category"] != merged["category_old"])
        ]
        affected = self.lake.order_dates_of_products(changed["product_id"].tolist())
        meta = {AFFECTED_KEY: json.dumps(sorted(d.isoformat() for d in affected))}
        self.lake.merge_upsert(SILVER["products"], winners, key="product_id", metadata=meta)


def _build_validator(settings: Settings) -> Any:
    from ecom_stream.quality.validate import Validator  # GX is heavy: imported only by writers

    validator = Validator(settings)
    validator.prepare()
    return validator

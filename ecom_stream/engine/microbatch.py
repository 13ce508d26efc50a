"""The merge of one micro-batch of whole files of one entity, as a sequence of steps:
frames -> validate (with the reject reasons) -> outcomes -> bronze alongside -> silver changes
and merges -> gold -> the bookkeeping appends -> quarantine copies and timings.

Each step hands the next a value; the commit protocol around it (in-flight marker, ledger,
landing) is ``commit.Commits.microbatch``.
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ecom_stream.contract import schema as S
from ecom_stream.engine import refresh
from ecom_stream.engine.quarantine import failed_checks
from ecom_stream.engine.silver import MergeParts, failed_rules, reject_reasons
from ecom_stream.storage.lake import BRONZE
from ecom_stream.transform import bookkeeping, clean
from ecom_stream.transform.bookkeeping import FileOutcome, ParsedFile

__all__ = ["BRONZE_ALONGSIDE_ROWS", "MicroBatch"]

# Micro-batches of at least this many rows append bronze while silver merges (see _Bronze).
BRONZE_ALONGSIDE_ROWS = 5_000


@dataclass
class _Verdict:
    """What validation decided, per file (``reports``, ``bad_files``: failed a batch check)
    and per row (why rejected, None: accepted; the masks over all rows)."""

    reports: list[Any]
    bad_files: set[int]
    reason: np.ndarray
    file_idx: np.ndarray
    in_bad_file: np.ndarray
    rejected: np.ndarray
    accepted: np.ndarray


@dataclass
class _Bronze:
    """The bronze rows of a micro-batch: appended on the bronze thread while silver merges
    (``done``), or built now and appended after gold (``rows``)."""

    entity: str
    owners: list[FileOutcome]
    done: Future[None] | None = None
    rows: pa.Table | None = None


class MicroBatch:
    """Merges micro-batches of whole files (a large file is merged by ``pieces.PieceMerge``)."""

    def __init__(self, parts: MergeParts, bronze: ThreadPoolExecutor) -> None:
        self.parts = parts
        self._bronze = bronze

    def merge(self, group: list[ParsedFile]) -> list[FileOutcome]:
        """The outcomes of the files of ``group`` (one entity), merged together."""
        p, entity = self.parts, group[0].entity
        t0 = time.perf_counter()
        # A merge pair that failed half-way in this process (the daemon carries on with other
        # files) leaves a marker: heal silver before this micro-batch reads it.
        refresh.heal_order_lines(p.lake)
        raw, typed = self._frames(group)
        verdict = self._validate(group, typed)
        t1 = time.perf_counter()
        outcomes = _outcomes(group, raw, verdict)
        rejected_rows = _rejected_rows(entity, raw, typed, verdict, group)
        typed_ok = typed[verdict.accepted].reset_index(drop=True)
        bronze = self._start_bronze(group, raw, verdict, outcomes)
        # The raw records and frames are not needed past this point: free them before the
        # merges, which are the other memory peak of a micro-batch.
        del raw, typed
        for g in group:
            g.records = []
        try:
            t2, gold_ms = self._merge_silver(group, typed_ok, verdict.reports, outcomes)
            gold_at = datetime.now(UTC)
        finally:
            # Even on an error no bronze write may still be in flight when this returns (a
            # retry's lookup of committed arrivals must see it).
            if bronze.done is not None:
                wait([bronze.done])
        self._finish_bronze(bronze)
        if rejected_rows is not None:
            p.commits.append_once(
                "rejected_rows", rejected_rows, [o for o in outcomes if o.rows_rejected]
            )
        timings = {
            "validate_ms": (t1 - t0) * 1000, "merge_ms": (t2 - t1) * 1000, "gold_ms": gold_ms
        }
        self._close(group, verdict.reports, outcomes, bronze, timings, gold_at)
        return outcomes

    def _frames(self, group: list[ParsedFile]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The raw and typed frames of the micro-batch's records."""
        entity, settings = group[0].entity, self.parts.settings
        raw = clean.records_frame(entity, [g.records for g in group])
        typed = clean.typed_view(entity, raw, settings, [g.received_at for g in group])
        return raw, typed

    def _validate(self, group: list[ParsedFile], typed: pd.DataFrame) -> _Verdict:
        """Validate the micro-batch: each file's report, each row's reject reason."""
        p, entity = self.parts, group[0].entity
        present = [set().union(*map(dict.keys, g.records)) for g in group]
        reports = p.validator().validate(entity, typed, present)
        p.settle_gc()
        bad_files = {r.file_index for r in reports if r.quarantine_reasons}
        by_row = {pos: why for report in reports for pos, why in report.rejected.items()}
        reason = reject_reasons(entity, typed, by_row, p.settings)
        file_idx = typed["_file"].to_numpy()
        in_bad_file = np.isin(file_idx, list(bad_files))
        rejected = (reason != None) & ~in_bad_file  # noqa: E711
        accepted = ~rejected & ~in_bad_file
        return _Verdict(reports, bad_files, reason, file_idx, in_bad_file, rejected, accepted)

    def _start_bronze(
        self,
        group: list[ParsedFile],
        raw: pd.DataFrame,
        verdict: _Verdict,
        outcomes: list[FileOutcome],
    ) -> _Bronze:
        """Bronze keeps every row of every accepted file, rejected rows included."""
        entity = group[0].entity
        bronze = _Bronze(entity, [o for o in outcomes if o.outcome == "merged"])
        kept = raw[~verdict.in_bad_file]
        if len(raw) >= BRONZE_ALONGSIDE_ROWS:
            # A large micro-batch (a backfill, a burst) builds and appends bronze, and writes
            # the GX result files, on its own thread while silver merges: the merges run in
            # native code without the GIL, so that Python work overlaps them (-0.3 s a backfill).
            # In a copy of this context, so its log lines carry the batch ids too.
            bronze.done = self._bronze.submit(
                contextvars.copy_context().run,
                self._bookkeep_alongside, entity, kept, group, bronze.owners, verdict.reports,
            )
        else:
            # One file (the daemon): built now, appended after gold, off the path from a file
            # landing to the dashboard seeing it.
            bronze.rows = bookkeeping.bronze_rows(entity, kept, group)
        return bronze

    def _bookkeep_alongside(
        self,
        entity: str,
        raw: pd.DataFrame,
        group: list[ParsedFile],
        owners: list[FileOutcome],
        reports: list[Any],
    ) -> None:
        commits = self.parts.commits
        commits.append_once(BRONZE[entity], bookkeeping.bronze_rows(entity, raw, group), owners)
        for parsed, report in zip(group, reports, strict=True):
            commits.store_gx_result(parsed, report)

    def _finish_bronze(self, bronze: _Bronze) -> None:
        """Raise the bronze thread's error, or append the bronze rows built earlier."""
        if bronze.done is not None:
            bronze.done.result()
        elif bronze.rows is not None:
            self.parts.commits.append_once(BRONZE[bronze.entity], bronze.rows, bronze.owners)

    def _merge_silver(
        self,
        group: list[ParsedFile],
        typed_ok: pd.DataFrame,
        reports: list[Any],
        outcomes: list[FileOutcome],
    ) -> tuple[float, float]:
        """Quality rows, the silver merges, then gold; returns when the merges ended (a
        ``perf_counter`` time) and gold's time in ms."""
        p, entity = self.parts, group[0].entity
        winners, stored, warnings = p.silver.changes(entity, S.KEYS[entity], typed_ok)
        # Quality rows go first: their domain warnings compare the batch with silver as it
        # was before the merge, which a replay after a crash past the merge could not see.
        quality = bookkeeping.quality_rows(group, reports, warnings, typed_ok)
        p.commits.append_once("quality_validations", quality, outcomes)
        p.silver.merge(entity, winners, stored)
        t2 = time.perf_counter()
        return t2, p.gold.bring_up_to_date()

    def _close(
        self,
        group: list[ParsedFile],
        reports: list[Any],
        outcomes: list[FileOutcome],
        bronze: _Bronze,
        timings: dict[str, float],
        gold_at: datetime,
    ) -> None:
        """Quarantine the files that failed a batch check, keep the GX results (unless the
        bronze thread did), and note the timings."""
        p = self.parts
        for i, o in enumerate(outcomes):
            if o.outcome == "quarantined":
                data = p.lake.blobs.read_landed(group[i].path)
                p.quarantine.file(o, data, {"failed_checks": failed_checks(reports[i])})
            if bronze.done is None:
                p.commits.store_gx_result(group[i], reports[i])
            o.timings.update(timings)
            if o.outcome == "merged":
                o.gold_committed_at = gold_at


def _outcomes(group: list[ParsedFile], raw: pd.DataFrame, verdict: _Verdict) -> list[FileOutcome]:
    """Each file's outcome: quarantined for a failed batch check, else merged with its
    rejected rows counted."""
    outcomes = []
    for i, g in enumerate(group):
        o = FileOutcome(
            g.name,
            g.entity,
            g.batch_id,
            g.arrival_id,
            "merged",
            rows_in=len(g.records),
            received_at=g.received_at,
            source=g.path,
            timings={"read_ms": g.read_ms},
        )
        rows = verdict.file_idx == i
        o.rows_rescued = int(raw.loc[rows, "_rescued"].notna().sum())
        o.failed_rules = failed_rules(verdict.reports[i], verdict.reason[rows])
        if i in verdict.bad_files:
            o.outcome = "quarantined"
            o.reason = "; ".join(verdict.reports[i].quarantine_reasons)
        else:
            o.rows_rejected = int((verdict.rejected & rows).sum())
            o.rows_merged = int((verdict.accepted & rows).sum())
        outcomes.append(o)
    return outcomes


def _rejected_rows(
    entity: str,
    raw: pd.DataFrame,
    typed: pd.DataFrame,
    verdict: _Verdict,
    group: list[ParsedFile],
) -> pd.DataFrame | None:
    """The rejected_rows table's rows of the micro-batch (None: no row was rejected)."""
    if not verdict.rejected.any():
        return None
    return bookkeeping.rejected_rows(entity, raw, typed, verdict.reason, verdict.rejected, group)

"""The commit protocol of a micro-batch: the in-flight marker first, appends a retry does not
double, the ledger row last, one filesystem sync, and only then the sources leave landing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ecom_stream.engine.intake import arrival_id_of
from ecom_stream.engine.memory import release_memory
from ecom_stream.engine.state import BatchState
from ecom_stream.storage.lake import Lake
from ecom_stream.transform import bookkeeping
from ecom_stream.transform.bookkeeping import FileOutcome, ParsedFile, ledger_rows
from ecom_stream.transform.parse import display_name

__all__ = ["LEDGER_VERSIONED", "Commits"]

logger = logging.getLogger(__name__)
# The tables whose versions a ledger row records (what the batch produced).
LEDGER_VERSIONED = (
    "silver_products",
    "silver_orders",
    "silver_order_lines",
    "daily_revenue",
    "revenue_anomalies",
)
# How a micro-batch's files become outcomes (the merge of its group; finals pass through).
Merge = Callable[[list[ParsedFile]], list[FileOutcome]]


class Commits:
    """The writer's commits: one micro-batch at a time, each append naming its owner's arrival,
    the ledger row of every file, and the removal of handled files from landing."""

    def __init__(self, lake: Lake, state: BatchState, *, keep_source: bool) -> None:
        self.lake = lake
        self.state = state
        self.keep_source = keep_source
        self._microbatches = 0

    def microbatch(
        self, group: list[ParsedFile], finals: list[FileOutcome], merge: Merge
    ) -> list[FileOutcome]:
        """Merge ``group`` with ``merge`` and record it with ``finals`` (outcomes decided
        without a merge); the in-flight marker names all their arrivals until recorded."""
        arrivals = [g.arrival_id for g in group] + [f.arrival_id for f in finals]
        # A file merged in pieces appends bronze and rejected rows under one arrival a piece.
        arrivals += [a for g in group for a in g.piece_arrivals]
        self.state.begin(arrivals)
        try:
            outcomes = merge(group) if group else []
            return self._record(outcomes + finals, arrivals, len(group) + len(finals))
        except BaseException:
            self.state.failed(arrivals)
            raise

    def _record(
        self, outcomes: list[FileOutcome], arrivals: list[str], files: int
    ) -> list[FileOutcome]:
        """Quarantine records, the ledger rows (last commit), the sync, then landing."""
        started = time.perf_counter()
        quarantined = [o for o in outcomes if o.outcome == "quarantined"]
        if quarantined:
            rows = bookkeeping.quarantine_rows(quarantined)
            self.append_once("quarantine_records", rows, quarantined)
        versions = {name: self.lake.tables.version(name) for name in LEDGER_VERSIONED}
        if outcomes:
            self.lake.tables.append("ledger", ledger_rows(outcomes, versions, files))
        # Raw copies were written without fsync; one filesystem sync makes them durable before
        # any source file leaves landing (one call instead of one fsync per file).
        self.lake.sync()
        self.lake.integrity.note_versions()  # after the sync: never ahead of a durable commit
        commit_ms = (time.perf_counter() - started) * 1000  # for metrics (not in the ledger)
        for o in outcomes:
            o.timings["commit_ms"] = commit_ms
            self.state.note(o)
            if o.source is not None:
                self.remove_source(o.source, o.batch_id, o.arrival_id)
        self.state.settle(arrivals)
        self._microbatches += 1
        if sum(o.rows_in for o in outcomes) >= 10_000 or self._microbatches % 50 == 0:
            release_memory()
        return outcomes

    def append_once(
        self, table: str, rows: pd.DataFrame | pa.Table, owners: Sequence[FileOutcome]
    ) -> None:
        """Append rows, each naming its owner's arrival; after a crash, skip the owners whose
        rows were committed before it (looked up for the arrivals that were in flight only)."""
        owners = list(owners)
        if not owners:
            return
        suspects = {o.arrival_id for o in owners if o.arrival_id in self.state.suspects}
        done = self.lake.queries.committed_arrivals(table, suspects)
        if isinstance(rows, pd.DataFrame):
            rows = pa.Table.from_pandas(rows, preserve_index=False)
        if done:
            column = rows.column(self.lake.queries.arrival_column(table))
            rows = rows.filter(
                pc.invert(pc.is_in(column, value_set=pa.array(sorted(done), pa.string())))
            )
            owners = [o for o in owners if o.arrival_id not in done]
        if owners:
            self.lake.tables.append(table, rows)

    def store_gx_result(self, parsed: ParsedFile, report: Any) -> None:
        """Keep a file's Great Expectations result in its raw folder."""
        # Derived data (the ledger and quality table hold the verdict): no fsync needed.
        self.lake.blobs.write_raw_file(
            parsed.batch_id, "gx_result.json", orjson.dumps(report.to_json(), default=str)
        )

    def remove_source(self, path: Path, batch_id: str, arrival: str) -> None:
        """Remove a handled file from landing, unless a producer replaced it meanwhile."""
        if self.keep_source:
            return
        if arrival_id_of(batch_id, path) != arrival:
            if path.exists() or path.is_symlink():
                logger.warning(
                    "%s was replaced while being processed: the new file stays in landing",
                    display_name(path.name),
                )
            return
        self.lake.blobs.remove_landed(path)

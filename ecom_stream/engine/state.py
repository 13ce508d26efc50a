"""Idempotency state of the writer: which arrivals the ledger holds, which batches are done,
and which arrivals were in flight (the marker file read after a crash)."""

from __future__ import annotations

import pyarrow.dataset as pads

from ecom_stream.engine.digests import DigestSet
from ecom_stream.storage.lake import Lake
from ecom_stream.transform.bookkeeping import FileOutcome

DONE_OUTCOMES = ("merged", "quarantined", "empty")


class BatchState:
    """Seen arrivals and done batches (compact sets, confirmed in the ledger on a hit), and
    the suspects: arrivals some of whose rows may be committed without their ledger row."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        ledger = lake.tables.read_pandas(
            "ledger", columns=["batch_id", "arrival_id", "outcome", "finished_at"]
        )
        self.arrivals = DigestSet(ledger["arrival_id"])
        # A duplicate changes nothing: the outcome before it stands (else a third copy of
        # the same bytes, after a duplicate row, would be merged and double its bronze rows).
        last = (
            ledger[ledger["outcome"] != "duplicate"]
            .sort_values("finished_at", kind="stable")
            .drop_duplicates("batch_id", keep="last")
        )
        self.done_batches = DigestSet(last.loc[last["outcome"].isin(DONE_OUTCOMES), "batch_id"])
        self.suspects = self._load_inflight()

    def _load_inflight(self) -> set[str]:
        marker = self.lake.markers.read("inflight") or {}
        return set(marker.get("arrivals") or ())

    def recorded(self, arrival: str) -> bool:
        """Whether the ledger holds ``arrival`` (the compact set first, then the ledger)."""
        if arrival not in self.arrivals:
            return False
        rows = self.lake.tables.read(
            "ledger", columns=["arrival_id"], rows=pads.field("arrival_id") == arrival
        )
        return rows.num_rows > 0

    def already_done(self, batch_id: str) -> bool:
        """Merged, quarantined or empty before, and not requeued since (checked in the ledger,
        because ``requeue`` may run while this process is up)."""
        if batch_id not in self.done_batches:
            return False
        rows = self.lake.tables.read_pandas(
            "ledger",
            columns=["outcome", "finished_at"],
            rows=(pads.field("batch_id") == batch_id) & (pads.field("outcome") != "duplicate"),
            refresh=True,
        )
        last = (
            rows.sort_values("finished_at", kind="stable")["outcome"].iloc[-1]
            if len(rows)
            else None
        )
        if last in DONE_OUTCOMES:
            return True
        self.done_batches.discard(batch_id)
        return False

    def begin(self, arrivals: list[str]) -> None:
        """Write the in-flight marker before the first commit of a micro-batch. Files of a
        failed micro-batch stay suspects (some of their rows may be committed) until they are
        recorded, so the marker lists them too."""
        marker = sorted(self.suspects | set(arrivals))
        self.lake.markers.write("inflight", {"arrivals": marker})

    def failed(self, arrivals: list[str]) -> None:
        """A micro-batch failed part-way: its arrivals stay suspects."""
        self.suspects |= set(arrivals)

    def note(self, outcome: FileOutcome) -> None:
        """``outcome`` has its ledger row (durable)."""
        self.arrivals.add(outcome.arrival_id)
        if outcome.outcome in DONE_OUTCOMES:
            self.done_batches.add(outcome.batch_id)

    def settle(self, arrivals: list[str]) -> None:
        """The micro-batch's ledger rows are durable: its arrivals leave the marker."""
        self.suspects -= set(arrivals)
        if self.suspects:
            self.lake.markers.write("inflight", {"arrivals": sorted(self.suspects)})
        else:
            self.lake.markers.remove("inflight")

"""Reconciliation of a REST source: what it reported, what landed, what was merged.

The tutorial's revenue doubled because overlapping pages were loaded twice and nobody
compared the source's count with the loaded one. Each pull records, per endpoint, the
``total`` the source reported and the records landed (``sources`` table); the ledger says,
by file name, what the pipeline made of those files. Upserts make a re-read harmless, but a
gap or an overlap still shows here.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow.dataset as pads

from ecom_stream.errors import EcomStreamError
from ecom_stream.storage.lake import Lake

__all__ = ["reconciliation"]

_LEDGER_COLUMNS = ["file_name", "outcome", "rows_in", "rows_merged", "rows_rejected"]


def _ledger_by_file(lake: Lake, names: list[str]) -> pd.DataFrame:
    """The newest ledger row of each of these file names (a filtered read: the ledger holds a
    row for every file ever handled, and only the last pulls' files are wanted)."""
    ledger = lake.tables.read_pandas(
        "ledger",
        columns=[*_LEDGER_COLUMNS, "finished_at"],
        rows=pads.field("file_name").isin(names),
    )
    ledger = ledger.sort_values("finished_at").drop_duplicates("file_name", keep="last")
    return ledger.set_index("file_name")


def _balance(row: dict[str, Any]) -> bool | None:
    """Whether the pull saw exactly the records the source counted (None: cannot tell)."""
    total = row.get("reported_total")
    if total is None or row.get("resumed") or row.get("outcome") != "ok":
        return None
    return bool(total == row["distinct_keys"] + (row.get("records_skipped") or 0))


def _summary(row: dict[str, Any], ledger: pd.DataFrame) -> dict[str, Any]:
    files = list(row.get("files") or [])
    done = ledger.loc[ledger.index.intersection(files)]
    return {
        "source": row["source"],
        "endpoint": row["endpoint"],
        "pulled_at": row["finished_at"].isoformat() if row["finished_at"] is not None else None,
        "outcome": row["outcome"],
        "error": row["error"],
        "updated_since": row["updated_since"],
        "reported_total": row["reported_total"],
        "records_landed": row["records_landed"],
        "records_skipped": row.get("records_skipped") or 0,
        "distinct_keys": row["distinct_keys"],
        "overlap": row["records_landed"] - row["distinct_keys"],
        "resumed": bool(row.get("resumed")),
        "balanced": _balance(row),
        "files": len(files),
        "files_processed": len(done),
        "files_quarantined": int((done["outcome"] == "quarantined").sum()),
        "files_waiting": len(files) - len(done),
        "rows_in": int(done["rows_in"].fillna(0).sum()),
        "rows_merged": int(done["rows_merged"].fillna(0).sum()),
        "rows_rejected": int(done["rows_rejected"].fillna(0).sum()),
    }


def reconciliation(lake: Lake) -> dict[str, Any]:
    """``{"pulls", "failed", "endpoints": [the last pull of each source endpoint, with what
    the ledger says of its files]}``; empty when nothing was ever pulled into this lake."""
    if not lake.tables.is_table("sources"):
        return {"pulls": 0, "failed": 0, "endpoints": []}
    pulls = lake.tables.read("sources").to_pylist()
    if not pulls:
        return {"pulls": 0, "failed": 0, "endpoints": []}
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for row in sorted(pulls, key=lambda r: (r["started_at"] is not None, r["started_at"])):
        last[(row["source"], row["endpoint"])] = row
    names = sorted({name for row in last.values() for name in row.get("files") or []})
    try:
        ledger = _ledger_by_file(lake, names)
    except EcomStreamError:
        ledger = pd.DataFrame(columns=_LEDGER_COLUMNS).set_index("file_name")
    return {
        "pulls": len({r["pull_id"] for r in pulls}),
        "failed": sum(r["outcome"] == "failed" for r in pulls),
        "endpoints": [_summary(last[k], ledger) for k in sorted(last)],
    }

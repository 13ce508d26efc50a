"""What a micro-batch records: per-file outcomes and the rows of the bookkeeping tables.

Pure functions from outcomes and frames to the rows of bronze, rejected rows, quality,
quarantine records and the ledger (the pipeline decides when each is committed).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from ecom_stream.contract import schema as S
from ecom_stream.transform.parse import FileKind

__all__ = [
    "FileOutcome",
    "ParsedFile",
    "bronze_rows",
    "ledger_rows",
    "loose_column",
    "quality_rows",
    "quarantine_rows",
    "raw_meta",
    "rejected_rows",
]


@dataclass
class FileOutcome:
    """What happened to one file."""

    name: str
    entity: str | None
    batch_id: str
    arrival_id: str
    outcome: str  # merged | quarantined | duplicate | empty | recovered
    reason: str | None = None
    rows_in: int = 0
    rows_merged: int = 0
    rows_rejected: int = 0
    rows_rescued: int = 0
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    timings: dict[str, float] = field(default_factory=dict)
    gold_committed_at: datetime | None = None
    quarantined_as: str | None = None
    source: Path | None = None
    failed_rules: list[str] = field(default_factory=list)
    """The expectations and row rules the file failed, whatever their policy (for metrics)."""

    def log_line(self) -> str:
        t = self.timings
        parts = [f"batch {self.name}: {self.outcome}", f"entity={self.entity or '-'}"]
        if self.outcome in ("merged", "empty"):
            parts.append(
                f"rows={self.rows_in} merged={self.rows_merged} rejected={self.rows_rejected}"
                + (f" rescued={self.rows_rescued}" if self.rows_rescued else "")
            )
        if self.reason:
            parts.append(f"reason={self.reason!r}")
        parts.append(
            "ms read={:.0f} validate={:.0f} merge={:.0f} gold={:.0f}".format(
                t.get("read_ms", 0),
                t.get("validate_ms", 0),
                t.get("merge_ms", 0),
                t.get("gold_ms", 0),
            )
        )
        return " ".join(parts)


@dataclass
class ParsedFile:
    """One file read and parsed, waiting for its micro-batch."""

    path: Path
    name: str
    entity: str
    batch_id: str
    arrival_id: str
    records: list[dict[str, Any]]
    received_at: datetime
    read_ms: float
    # A JSON Lines file of more rows than a micro-batch holds: its bytes, cut into pieces
    # (start, end, first line) merged one after another, each appending under its own arrival.
    data: bytes | None = None
    pieces: list[tuple[int, int, int]] = field(default_factory=list)
    piece_arrivals: list[str] = field(default_factory=list)


def ledger_rows(
    outcomes: Sequence[FileOutcome], versions: Mapping[str, int], files: int
) -> pd.DataFrame:
    """One ledger row per file outcome (``versions``: the table versions the batch produced)."""
    now = datetime.now(UTC)
    return pd.DataFrame(
        {
            "batch_id": [o.batch_id for o in outcomes],
            "arrival_id": [o.arrival_id for o in outcomes],
            "file_name": [o.name for o in outcomes],
            "entity": [o.entity for o in outcomes],
            "outcome": [o.outcome for o in outcomes],
            "reason": [o.reason for o in outcomes],
            "rows_in": [o.rows_in for o in outcomes],
            "rows_merged": [o.rows_merged for o in outcomes],
            "rows_rejected": [o.rows_rejected for o in outcomes],
            "rows_rescued": [o.rows_rescued for o in outcomes],
            "table_versions": [json.dumps(dict(versions))] * len(outcomes),
            "received_at": pd.to_datetime([o.received_at for o in outcomes], utc=True),
            "finished_at": pd.to_datetime([now] * len(outcomes), utc=True),
            "gold_committed_at": pd.to_datetime([o.gold_committed_at for o in outcomes], utc=True),
            "read_ms": [o.timings.get("read_ms", 0.0) for o in outcomes],
            "validate_ms": [o.timings.get("validate_ms", 0.0) for o in outcomes],
            "merge_ms": [o.timings.get("merge_ms", 0.0) for o in outcomes],
            "gold_ms": [o.timings.get("gold_ms", 0.0) for o in outcomes],
            "micro_batch_files": [files] * len(outcomes),
        }
    )


def raw_meta(name: str, kind: FileKind, batch_id: str, received: datetime) -> dict[str, Any]:
    return {
        "name": name,
        "entity": kind.entity,
        "batch_id": batch_id,
        "received_at": received.isoformat(),
    }


def _loose(value: Any) -> str | None:
    """A received value as text: strings as they are, anything else as its JSON."""
    if value is None or type(value) is str:
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits (parsed by the stdlib fallback)
        return json.dumps(value)


def loose_column(values: pd.Series) -> pa.Array:
    """A column as received, as text. Columns of only strings or only integers (the common
    case) are converted by Arrow in one go; mixed ones value by value."""
    items = values.tolist()
    kinds = set(map(type, items)) - {type(None)}
    if kinds <= {str}:
        return pa.array(items, pa.string())
    if kinds == {int}:
        try:
            return pa.array(items, pa.int64()).cast(pa.string())
        except (OverflowError, pa.ArrowInvalid):
            pass
    with contextlib.suppress(TypeError):  # TypeError: an integer beyond 64 bits
        if kinds <= {int, float}:
            # Numbers and nulls: one orjson call for the column; number texts hold no comma.
            texts = orjson.dumps(items)[1:-1].decode().split(",") if items else []
            return pa.array([None if t == "null" else t for t in texts], pa.string())
        if kinds <= {list, dict}:
            dumps = orjson.dumps
            return pa.array([None if v is None else dumps(v).decode() for v in items], pa.string())
    return pa.array([_loose(v) for v in items], pa.string())


def bronze_rows(entity: str, raw: pd.DataFrame, group: list[ParsedFile]) -> pa.Table:
    """Bronze rows as an Arrow table, built column by column (no pandas copy: memory)."""
    files = raw["_file"].to_numpy()

    def per_file(values: list[Any], type_: pa.DataType) -> pa.Array:
        return pa.array(values, type_).take(pa.array(files))

    columns = {f: loose_column(raw[f]) for f in S.FIELDS[entity]}
    columns["_rescued"] = pa.array(raw["_rescued"].tolist(), pa.string())
    columns["_batch_id"] = per_file([g.batch_id for g in group], pa.string())
    columns["_source_file"] = per_file([g.name for g in group], pa.string())
    columns["_row_no"] = pa.array(raw["_row_no"].to_numpy(), pa.int64())
    columns["_ingested_at"] = per_file([g.received_at for g in group], S.TS)
    columns["_row_hash"] = pa.array(raw["_row_hash"].tolist(), pa.string())
    columns["_arrival_id"] = per_file([g.arrival_id for g in group], pa.string())
    return pa.table(columns)


def rejected_rows(
    entity: str,
    raw: pd.DataFrame,
    typed: pd.DataFrame,
    reasons: np.ndarray,
    mask: np.ndarray,
    group: list[ParsedFile],
    row_offset: int = 0,
) -> pd.DataFrame:
    """``row_offset``: the file row number of the first record of ``group``'s records (a
    piece of a large file)."""
    files = typed["_file"].to_numpy()[mask]
    row_no = typed["_row_no"].to_numpy()[mask]
    key = S.KEYS[entity]
    raw_json = [
        json.dumps(group[f].records[r - row_offset], ensure_ascii=False, default=str)
        for f, r in zip(files, row_no, strict=True)
    ]
    return pd.DataFrame(
        {
            "entity": entity,
            "batch_id": [group[f].batch_id for f in files],
            "source_file": [group[f].name for f in files],
            "row_no": row_no,
            "key": [_loose(v) for v in raw[key].to_numpy()[mask]],
            "reason": reasons[mask],
            "raw": raw_json,
            "rejected_at": pd.Timestamp.now(tz="UTC"),
            "arrival_id": [group[f].arrival_id for f in files],
        }
    )


def quality_rows(
    group: list[ParsedFile],
    reports: list[Any],
    warnings: list[tuple[int, Any]],
    typed_ok: pd.DataFrame,
) -> pd.DataFrame:
    rows = []
    now = pd.Timestamp.now(tz="UTC")
    per_file: list[list[Any]] = [list(r.checks) for r in reports]
    for file_index, check in warnings:
        per_file[file_index].append(check)
    for i, checks in enumerate(per_file):
        g = group[i]
        for c in checks:
            rows.append(
                {
                    "batch_id": g.batch_id,
                    "source_file": g.name,
                    "entity": g.entity,
                    "expectation": c.expectation,
                    "column": c.column,
                    "policy": c.policy,
                    "success": bool(c.success),
                    "observed_value": c.observed,
                    "unexpected_count": int(c.unexpected_count),
                    "unexpected_percent": c.unexpected_percent,
                    "element_count": int(c.element_count),
                    "validated_at": now,
                    "arrival_id": g.arrival_id,
                }
            )
    return pd.DataFrame(rows, columns=S.QUALITY_SCHEMA.names)


def quarantine_rows(outcomes: list[FileOutcome]) -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC")
    return pd.DataFrame(
        {
            "batch_id": [o.batch_id for o in outcomes],
            "source_file": [o.name for o in outcomes],
            "quarantined_as": [o.quarantined_as for o in outcomes],
            "entity": [o.entity for o in outcomes],
            "reason": [o.reason for o in outcomes],
            "details": [json.dumps({"rows_in": o.rows_in}) for o in outcomes],
            "quarantined_at": [now] * len(outcomes),
            "arrival_id": [o.arrival_id for o in outcomes],
        }
    )

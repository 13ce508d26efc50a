"""A file of more rows than a micro-batch holds, merged piece by piece, so memory is bounded by
the piece size and not by the file's.

Pass 1 validates every piece and keeps only the failing rows and, per accepted row, its key,
version and hash: the file's verdict and quality rows are decided over the whole file, and
each key's newest version in the file is known. Pass 2 parses again and merges each piece's
rows that are the newest of their key in the whole file, so each key is merged once and its
domain warning compares it with the state before the file. Bronze and rejected rows are
appended under one arrival a piece (a replay skips only the pieces committed); each piece's
domain warnings are written to raw/ before its merge (a replay after the merge could not
compute them again); gold, the quality rows and the ledger row are written once, after the
last piece. A ``LargeFile``'s pieces are read from landing as they are parsed, in both passes
(``landed.LandedFile``): the file's bytes are never held whole.
"""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

from ecom_stream.contract import schema as S
from ecom_stream.engine import refresh
from ecom_stream.engine.memory import release_memory
from ecom_stream.engine.quarantine import failed_checks
from ecom_stream.engine.silver import MergeParts, failed_rules, reject_reasons
from ecom_stream.errors import BatchReadError
from ecom_stream.sources.landed import LandedFileChanged, LargeFile
from ecom_stream.storage.lake import BRONZE
from ecom_stream.transform import bookkeeping, clean
from ecom_stream.transform.bookkeeping import FileOutcome, ParsedFile
from ecom_stream.transform.parse import (
    LINES_SUFFIXES,
    classify,
    parse_array_part,
    parse_lines_part,
)

__all__ = ["GOLD_EVERY_SECONDS", "PieceMerge"]

# A file merged in pieces refreshes gold at least this often (see PieceMerge._merge_all).
GOLD_EVERY_SECONDS = 4.0


@dataclasses.dataclass
class _Scan:
    """What pass 1 keeps of a file: per piece its first row number and its rejected rows
    (positions, reasons); per accepted row its key, version, hash and row number."""

    offsets: list[int] = dataclasses.field(default_factory=list)
    rejections: list[tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)
    keys: list[np.ndarray] = dataclasses.field(default_factory=list)
    versions: list[np.ndarray] = dataclasses.field(default_factory=list)
    hashes: list[np.ndarray] = dataclasses.field(default_factory=list)
    rows: list[np.ndarray] = dataclasses.field(default_factory=list)
    total: int = 0
    rescued: int = 0

    def newest(self) -> np.ndarray:
        """Per row of the file, whether it is its key's newest version in the file (newest
        _version_ts, then largest hash, then the last row: as clean.newest_per_key over the
        whole file). The per-row columns are dropped: they are not needed after this."""
        columns = (self.keys, self.versions, self.hashes, self.rows)
        kk, vv, hh, rr = (np.concatenate(a) for a in columns)
        self.keys, self.versions, self.hashes, self.rows = [], [], [], []
        order = np.lexsort((rr, hh, vv, kk))
        last = np.ones(len(order), dtype=bool)
        last[:-1] = kk[order][1:] != kk[order][:-1]
        newest = np.zeros(self.total, dtype=bool)
        newest[rr[order][last]] = True
        return newest


class PieceMerge:
    """Merges one large file (a micro-batch of its own) in pieces."""

    def __init__(self, parts: MergeParts) -> None:
        self.parts = parts

    def merge(self, g: ParsedFile) -> FileOutcome:
        """The file's outcome: validated over all pieces, then merged piece by piece (a
        ``LargeFile``'s pieces read from landing as they are parsed, in both passes)."""
        try:
            return self._merge(g)
        finally:
            g.data = None
            if isinstance(g, LargeFile) and g.landed is not None:
                g.landed.close()

    def _merge(self, g: ParsedFile) -> FileOutcome:
        from ecom_stream.quality.validate import FileChecks  # GX is heavy: writers only

        p = self.parts
        t0 = time.perf_counter()
        refresh.heal_order_lines(p.lake)
        outcome = FileOutcome(
            g.name, g.entity, g.batch_id, g.arrival_id, "merged", received_at=g.received_at,
            source=g.path, timings={"read_ms": g.read_ms},
        )
        checks = FileChecks(p.validator(), g.entity)
        try:
            try:
                scan = self._scan(g, checks)
            except BatchReadError as exc:
                return p.quarantine.unread(
                    g.path, classify(g.path.name), self._kept_bytes(g), g.batch_id,
                    g.arrival_id, exc.reason, g.received_at,
                )
        except LandedFileChanged:
            # Nothing of the file is in the lake yet (pass 1 commits nothing): its raw copy
            # goes too, or a rebuild would merge bytes the lake never merged.
            p.lake.blobs.remove_raw_copy(g.batch_id, g.name)
            raise
        p.settle_gc()
        report = checks.report()
        outcome.rows_in, outcome.rows_rescued = scan.total, scan.rescued
        outcome.failed_rules = failed_rules(report, np.concatenate([w for _, w in scan.rejections]))
        t1 = time.perf_counter()
        warnings: list[list[Any]] = []
        gold_ms = 0.0
        if report.quarantine_reasons:
            outcome.outcome = "quarantined"
            outcome.reason = "; ".join(report.quarantine_reasons)
        else:
            warnings, gold_ms = self._merge_all(g, scan, outcome)
        t2 = time.perf_counter()
        if outcome.outcome == "merged":
            gold_ms += p.gold.bring_up_to_date()
        self._record(g, outcome, report, warnings)
        outcome.timings.update(
            validate_ms=(t1 - t0) * 1000, merge_ms=(t2 - t1) * 1000, gold_ms=gold_ms
        )
        if outcome.outcome == "merged":
            outcome.gold_committed_at = datetime.now(UTC)
        return outcome

    def _scan(self, g: ParsedFile, checks: Any) -> _Scan:
        """Pass 1: validate every piece (``checks`` gathers the file's verdict)."""
        key = S.KEYS[g.entity]
        scan = _Scan()
        for k in range(len(g.pieces)):
            records, raw, typed = self._piece_frames(g, k, scan.total)
            scan.offsets.append(scan.total)
            present = set().union(*map(dict.keys, records))
            reason = reject_reasons(
                g.entity, typed, checks.add(typed, present), self.parts.settings
            )
            bad = np.flatnonzero(reason != None)  # noqa: E711
            scan.rejections.append((bad, reason[bad]))
            ok = reason == None  # noqa: E711
            scan.rescued += int(raw["_rescued"].notna().sum())
            scan.keys.append(typed.loc[ok, key].to_numpy(dtype=np.int64))
            scan.versions.append(
                pd.DatetimeIndex(typed.loc[ok, "_version_ts"]).as_unit("ns").asi8
            )
            scan.hashes.append(np.array(typed.loc[ok, "_row_hash"].tolist(), dtype="S64"))
            scan.rows.append(typed.loc[ok, "_row_no"].to_numpy(dtype=np.int64))
            scan.total += len(records)
            del records, raw, typed
            # Great Expectations leaves cycles holding the piece's frames: collect them
            # now (the cyclic collector is paused while files are processed).
            release_memory()
        if scan.total == 0:
            raise BatchReadError("empty file (only white space)")
        return scan

    def _merge_all(
        self, g: ParsedFile, scan: _Scan, outcome: FileOutcome
    ) -> tuple[list[list[Any]], float]:
        """Pass 2: merge every piece; the domain warnings of each, and gold's time."""
        newest = scan.newest()
        warnings: list[list[Any]] = []
        gold_ms = 0.0
        gold_at = time.perf_counter()
        for k, arrival in enumerate(g.piece_arrivals):
            warnings.append(self._merge_piece(g, k, arrival, scan, newest, outcome))
            release_memory()
            # Gold from the commits of several pieces at once (each piece recomputing all
            # the days it touches re-reads a growing silver), but at least every few
            # seconds: it reads the silver commit files, kept only 10 s (LOG_RETENTION).
            if time.perf_counter() - gold_at > GOLD_EVERY_SECONDS:
                gold_ms += self.parts.gold.bring_up_to_date()
                gold_at = time.perf_counter()
        return warnings, gold_ms

    def _merge_piece(
        self,
        g: ParsedFile,
        k: int,
        arrival: str,
        scan: _Scan,
        newest: np.ndarray,
        outcome: FileOutcome,
    ) -> list[Any]:
        """Append piece ``k``'s bronze and rejected rows, merge its rows that are the newest
        of their key in the file; returns its domain warnings."""
        p, entity = self.parts, g.entity
        records, raw, typed = self._piece_frames(g, k, scan.offsets[k])
        piece = dataclasses.replace(g, arrival_id=arrival, records=records, data=None, pieces=[])
        owner = dataclasses.replace(outcome, arrival_id=arrival, source=None)
        bad, why = scan.rejections[k]
        reason = np.full(len(typed), None, dtype=object)
        reason[bad] = why
        rejected = reason != None  # noqa: E711
        outcome.rows_rejected += int(rejected.sum())
        outcome.rows_merged += int((~rejected).sum())
        if rejected.any():
            rows = bookkeeping.rejected_rows(
                entity, raw, typed, reason, rejected, [piece], scan.offsets[k]
            )
            p.commits.append_once("rejected_rows", rows, [owner])
        bronze = bookkeeping.bronze_rows(entity, raw, [piece])
        p.commits.append_once(BRONZE[entity], bronze, [owner])
        mine = ~rejected & newest[typed["_row_no"].to_numpy()]
        typed_ok = typed[mine].reset_index(drop=True)
        del records, raw, typed, piece
        winners, stored, found = p.silver.changes(entity, S.KEYS[entity], typed_ok)
        found = self._kept_warnings(g, arrival, found)
        p.silver.merge(entity, winners, stored)
        return [c for _, c in found]

    def _kept_warnings(
        self, g: ParsedFile, arrival: str, found: list[tuple[int, Any]]
    ) -> list[tuple[int, Any]]:
        """The piece's domain warnings as kept in raw/ before its first merge: a replay after
        the merge finds silver changed already and could not compute them again."""
        from ecom_stream.quality.validate import CheckResult

        blobs = self.parts.lake.blobs
        kept = blobs.read_piece_warnings(g.batch_id, arrival)
        if kept is not None:
            return [
                (0, CheckResult(**c, failing_rows=np.empty(0, np.int64)))
                for c in json.loads(kept)
            ]
        data = orjson.dumps([c.to_json() for _, c in found], default=str)
        blobs.write_piece_warnings(g.batch_id, arrival, data)
        return found

    def _record(
        self, g: ParsedFile, outcome: FileOutcome, report: Any, warnings: list[list[Any]]
    ) -> None:
        """The file's quality rows (warnings combined over its pieces), its quarantine copy
        when it failed a batch check, and its Great Expectations result."""
        from ecom_stream.quality.validate import combine_domain_warnings

        p = self.parts
        by_name: dict[str, list[Any]] = {}
        for found_list in warnings:
            for c in found_list:
                by_name.setdefault(c.expectation, []).append(c)
        combined = [
            (0, combine_domain_warnings(g.entity, parts, p.settings))
            for parts in by_name.values()
        ]
        quality = bookkeeping.quality_rows([g], [report], combined, pd.DataFrame())
        p.commits.append_once("quality_validations", quality, [outcome])
        if outcome.outcome == "quarantined":
            data = self._kept_bytes(g)
            p.quarantine.file(outcome, data, {"failed_checks": failed_checks(report)})
        p.commits.store_gx_result(g, report)

    def _piece_frames(
        self, g: ParsedFile, k: int, offset: int
    ) -> tuple[list[dict[str, Any]], pd.DataFrame, pd.DataFrame]:
        """Piece ``k`` of a large file: its records, raw and typed frames (row numbers
        counted over the file, from ``offset``)."""
        start, end, first = g.pieces[k]
        depth = self.parts.settings.max_json_depth
        body = self._read(g, start, end)
        records = (
            parse_lines_part(body, start, first, offset, depth)
            if g.name.lower().endswith(LINES_SUFFIXES)
            else parse_array_part(body, offset, depth, lambda: self._read(g, 0, None))
        )
        del body
        raw = clean.records_frame(g.entity, [records])
        raw["_row_no"] += offset
        typed = clean.typed_view(g.entity, raw, self.parts.settings, [g.received_at])
        return records, raw, typed

    @staticmethod
    def _read(g: ParsedFile, start: int, end: int | None) -> bytes:
        """Bytes ``start:end`` of the file (``end`` None: to its end), read from landing for
        a ``LargeFile``."""
        if isinstance(g, LargeFile) and g.landed is not None:
            size = g.landed.size
            return g.landed.read(start, (size if end is None else end) - start)
        assert g.data is not None
        return g.data[start:end]

    @staticmethod
    def _kept_bytes(g: ParsedFile) -> bytes | None:
        """The bytes quarantine keeps of the file: None for a ``LargeFile``, which quarantine
        links or copies from landing whole, once landing's name is checked to still hold the
        very file read (``LandedFileChanged`` otherwise)."""
        if isinstance(g, LargeFile) and g.landed is not None:
            g.landed.check_path()
            return None
        return g.data

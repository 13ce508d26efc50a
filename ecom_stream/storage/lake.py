"""The only module that knows the lake layout (paths, table names) and imports ``deltalake``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import (
    CommitProperties,
    DeltaTable,
    Field,
    PostCommitHookProperties,
    Transaction,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from ecom_stream.contract import schema as S
from ecom_stream.errors import LakeCommitError, LakeDamagedError, LakeError

__all__ = ["TABLES", "Lake", "TableSpec", "key_ranges", "key_ranges_predicate", "ranges_predicate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableSpec:
    """Where a Delta table lives and what it holds."""

    path: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    configuration: Mapping[str, str] | None = None
    arrival_column: str | None = None
    """Bookkeeping tables: the column naming the file arrival that wrote each row."""


# Bookkeeping rows name the file arrival that wrote them (``TableSpec.arrival_column``); after
# a crash the arrivals in flight are looked up there (Lake.committed_arrivals). Versions before
# that recorded one Delta app transaction per arrival instead (LEGACY_ARRIVAL_TXN): every
# checkpoint carried them all, so commits slowed as files accumulated. The retention expires
# those left in older tables; new appends carry none.
ARRIVAL_TXN_RETENTION = "interval 7 days"
LEGACY_ARRIVAL_TXN = "ecom-stream:arrival:{arrival}"
# Every commit lists the table's _delta_log folder, so its cost grows with the number of commit
# files kept: 7 ms at 100, 97 ms at 2,000 (measured). Delta keeps them 30 days by default: a
# daemon would slow down day after day. Kept 10 seconds instead, with a checkpoint every 10
# commits (files older than the last expired checkpoint are deleted on commit), so a folder
# holds a few dozen. Only gold's refresh reads commit history: right after the silver commits,
# at writer start-up and after compaction, which deletes no commit files (Lake.compact).
LOG_RETENTION = "interval 10 seconds"
_ANY = {"delta.logRetentionDuration": LOG_RETENTION, "delta.checkpointInterval": "10"}
_BOOKKEEPING = {**_ANY, "delta.setTransactionRetentionDuration": ARRIVAL_TXN_RETENTION}

TABLES: dict[str, TableSpec] = {
    "bronze_products": TableSpec(
        "bronze/products",
        S.bronze_schema("products"),
        configuration=_BOOKKEEPING,
        arrival_column="_arrival_id",
    ),
    "bronze_orders": TableSpec(
        "bronze/orders",
        S.bronze_schema("orders"),
        configuration=_BOOKKEEPING,
        arrival_column="_arrival_id",
    ),
    "silver_products": TableSpec("silver/products", S.SILVER_PRODUCTS_SCHEMA, configuration=_ANY),
    # Orders and their lines are partitioned by month: a batch touches the months of its
    # orders (and of the orders it updates), so a MERGE rewrites a few files, never the table;
    # and the number of partitions (which Delta's planning walks) grows by 12 a year, not 365.
    "silver_orders": TableSpec(
        "silver/orders", S.SILVER_ORDERS_SCHEMA, ("order_month",), configuration=_ANY
    ),
    "silver_order_lines": TableSpec(
        "silver/order_lines", S.ORDER_LINES_SCHEMA, ("order_month",), configuration=_ANY
    ),
    "rejected_rows": TableSpec(
        "rejected_rows", S.REJECTED_SCHEMA, configuration=_BOOKKEEPING, arrival_column="arrival_id"
    ),
    "quality_validations": TableSpec(
        "quality/validations",
        S.QUALITY_SCHEMA,
        configuration=_BOOKKEEPING,
        arrival_column="arrival_id",
    ),
    "quarantine_records": TableSpec(
        "quarantine/_records",
        S.QUARANTINE_SCHEMA,
        configuration=_BOOKKEEPING,
        arrival_column="arrival_id",
    ),
    "ledger": TableSpec("_ledger", S.LEDGER_SCHEMA, configuration=_ANY),
    "daily_revenue": TableSpec("gold/daily_revenue", S.DAILY_REVENUE_SCHEMA, configuration=_ANY),
    "revenue_anomalies": TableSpec(
        "gold/revenue_anomalies", S.ANOMALIES_SCHEMA, configuration=_ANY
    ),
}
SILVER = {"products": "silver_products", "orders": "silver_orders"}
BRONZE = {"products": "bronze_products", "orders": "bronze_orders"}
GOLD_WATERMARK_APP = "ecom-stream:gold:{table}"
# atomic_write's temporary names: ``.<name>.<pid>.tmp``.
# Longest name a file is stored under in quarantine/ (bytes): suffixes of up to ~40 bytes
# (".reason.json", ".<pid>.tmp", a batch id) must still fit in 255.
MAX_STORED_NAME_BYTES = 200
TEMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$", re.DOTALL)
MAX_KEY_RANGES = 16
# The way out of a damaged lake: raw/ holds every file ever received, so a replay gives the
# tables back (the damaged lake stays as it is, for inspection).
REBUILD_FIX = (
    "stop writing to it and rebuild it from raw/ with `ecom-stream rebuild --into NEW` "
    "(NEW a new folder), then use NEW as the lake"
)
# Lakes a rebuild in this process is filling (its own Pipeline must open them; nobody else).
_REBUILDS_IN_PROGRESS: set[Path] = set()


def key_ranges(keys: Iterable[int], max_ranges: int = MAX_KEY_RANGES) -> list[tuple[int, int]]:
    """At most ``max_ranges`` inclusive ranges covering ``keys`` (the widest gaps are cut)."""
    ordered = sorted(set(int(k) for k in keys))
    if not ordered:
        return []
    gaps = sorted(range(1, len(ordered)), key=lambda i: ordered[i] - ordered[i - 1], reverse=True)
    cuts = sorted(gaps[: max_ranges - 1])
    bounds, start = [], 0
    for cut in [*cuts, len(ordered)]:
        bounds.append((ordered[start], ordered[cut - 1]))
        start = cut
    return bounds


def ranges_predicate(column: str, bounds: Sequence[tuple[int, int]]) -> str:
    """``col BETWEEN a AND b OR ...`` (``false`` for no range)."""
    if not bounds:
        return "false"
    return " OR ".join(f"({column} BETWEEN {lo} AND {hi})" for lo, hi in bounds)


def key_ranges_predicate(column: str, keys: Sequence[int], max_ranges: int = MAX_KEY_RANGES) -> str:
    """``col BETWEEN a AND b OR ...`` covering ``keys`` with at most ``max_ranges`` ranges.

    Delta prunes files by min/max statistics with this; a long ``IN`` list is not pruned.
    """
    return ranges_predicate(column, key_ranges(keys, max_ranges))


def months_literal(dates: Iterable[date]) -> str:
    """``'2026-01', '2026-02'``: the month partitions holding ``dates``."""
    # Not strftime: glibc writes year 1 as "1", silver's partitions as "0001".
    return ", ".join(f"'{m}'" for m in sorted({f"{d.year:04d}-{d.month:02d}" for d in dates}))


def _upgraded(dt: DeltaTable, spec: TableSpec) -> DeltaTable:
    """Bring a table written by an older ecom-stream up to ``spec``: add the (nullable) columns
    and set the table properties it declares."""
    have = set(dt.schema().to_arrow().names)
    missing = [f for f in spec.schema if f.name not in have]
    if missing:
        dt.alter.add_columns([Field.from_arrow(f.with_nullable(True)) for f in missing])
        logger.info("%s: added columns %s", dt.table_uri, [f.name for f in missing])
    current = dt.metadata().configuration
    changed = {k: v for k, v in (spec.configuration or {}).items() if current.get(k) != v}
    if changed:
        dt.alter.set_table_properties(changed, raise_if_not_exists=False)
        logger.info("%s: set table properties %s", dt.table_uri, changed)
    return dt


class Lake:
    """Paths, table handles and every read and write of the lake."""

    def __init__(self, root: Path, *, writer: bool = False) -> None:
        self.root = Path(root).absolute()
        self._handles: dict[str, DeltaTable] = {}
        # The single writer keeps its handles current through its own commits, so it skips
        # re-reading the log before every use (dozens of times per batch otherwise).
        self.writer = writer

    # -- layout ---------------------------------------------------------------------------
    def path(self, table: str) -> Path:
        return self.root / TABLES[table].path

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def daemon_dir(self) -> Path:
        return self.root / "_daemon"

    @property
    def heartbeat_path(self) -> Path:
        return self.daemon_dir / "heartbeat.json"

    @property
    def lock_path(self) -> Path:
        return self.daemon_dir / "lock"

    @property
    def inflight_path(self) -> Path:
        return self.daemon_dir / "inflight.json"

    @property
    def versions_path(self) -> Path:
        """The table versions a writer left after its last micro-batch (damage check)."""
        return self.daemon_dir / "versions.json"

    @property
    def rebuild_marker_path(self) -> Path:
        """Present while a rebuild fills this lake; left behind if it was killed."""
        return self.root / "_rebuild_incomplete.json"

    @property
    def lines_inflight_path(self) -> Path:
        """The order ids of an orders / order-lines merge pair in flight (see refresh.py)."""
        return self.daemon_dir / "lines_inflight.json"

    def raw_path(self, batch_id: str, name: str) -> Path:
        return self.raw_dir / batch_id[:2] / batch_id / name

    @property
    def raw_tmp_dir(self) -> Path:
        """Where raw files are written before their rename into place: one folder to clean
        after a crash, however many batches raw/ holds."""
        return self.raw_dir / ".tmp"

    def write_raw_file(self, batch_id: str, name: str, data: bytes) -> Path:
        """Write a file of a batch's raw folder (not fsync'd: synced once per micro-batch)."""
        target = self.raw_path(batch_id, name)
        atomic_write(target, data, durable=False, tmp_dir=self.raw_tmp_dir)
        return target

    # -- tables ---------------------------------------------------------------------------
    def ensure_tables(self) -> None:
        """Open every table, refusing a damaged lake before anything is written, and create
        every missing table (empty, with its schema and partitioning)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.refuse_incomplete_rebuild()
        for name in TABLES:
            if name not in self._handles and DeltaTable.is_deltatable(str(self.path(name))):
                self._handles[name] = self._open(name)
        problems = self.version_problems()
        if problems:
            raise LakeDamagedError(problems[0][1])
        for name, spec in TABLES.items():
            path = self.path(name)
            try:
                if name in self._handles:
                    self._handles[name] = _upgraded(self._handles[name], spec)
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    self._handles[name] = DeltaTable.create(
                        str(path),
                        spec.schema,
                        partition_by=list(spec.partition_by) or None,
                        configuration=dict(spec.configuration or {}) or None,
                        mode="ignore",
                    )
            except (DeltaError, OSError) as exc:
                raise LakeError(f"cannot open or create table {path}: {exc}") from exc

    def exists(self) -> bool:
        return DeltaTable.is_deltatable(str(self.path("ledger")))

    def table(self, name: str, *, refresh: bool = False) -> DeltaTable:
        """A cached handle, brought up to date with the log (cheap: reads new commits only);
        a writer's handles are current already, unless ``refresh`` asks for others' commits."""
        handle = self._handles.get(name)
        if handle is not None and self.writer and not refresh:
            return handle
        if handle is None:
            handle = self._open(name)
            self._handles[name] = handle
        else:
            try:
                handle.update_incremental()
            except DeltaError as exc:
                raise LakeDamagedError(self._damaged(name, _log_cause(exc))) from exc
        return handle

    def _open(self, name: str, version: int | None = None) -> DeltaTable:
        """Load a table's log; a log Delta cannot load (a gap, a broken commit) is damage."""
        try:
            return DeltaTable(str(self.path(name)), version=version)
        except TableNotFoundError:
            raise LakeError(
                f"no table at {self.path(name)}: run a backfill or the daemon first"
            ) from None
        except DeltaError as exc:
            if version is not None:
                # Old versions expire with their commit files (see LOG_RETENTION): not damage.
                raise LakeError(
                    f"cannot load version {version} of {self.path(name)}: {_short(exc)}"
                ) from exc
            raise LakeDamagedError(self._damaged(name, _log_cause(exc))) from exc
        except OSError as exc:
            raise LakeError(f"cannot open table {self.path(name)}: {exc}") from exc

    # -- damage ---------------------------------------------------------------------------
    def _damaged(self, name: str, problem: str) -> str:
        return f"table {self.path(name)} is damaged: {problem}; {REBUILD_FIX}"

    @contextlib.contextmanager
    def _reading(self, name: str) -> Iterator[None]:
        """Turn a data file that cannot be read (missing, truncated) into a one-line error
        naming the table and the way out; other errors pass unchanged."""
        try:
            yield
        except (OSError, pa.ArrowException, DeltaError) as exc:
            cause = _file_cause(exc)
            if cause is None:
                if isinstance(exc, OSError | DeltaError):
                    raise LakeError(f"cannot read {self.path(name)}: {exc}") from exc
                raise
            raise LakeDamagedError(self._damaged(name, cause)) from exc

    def refuse_incomplete_rebuild(self) -> None:
        """Writers refuse a lake that a rebuild was filling and did not finish."""
        if self.rebuild_marker_path.exists() and self.root not in _REBUILDS_IN_PROGRESS:
            raise LakeDamagedError(incomplete_rebuild_message(self.root))

    @contextlib.contextmanager
    def rebuilding(self) -> Iterator[None]:
        """Mark this (new, empty) lake incomplete until the block finishes: the marker is
        written before anything else and removed only on success, so a rebuild killed
        half-way leaves a lake that ``status`` reports and writers refuse."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.rebuild_marker_path,
            json.dumps({"started_at": time.time(), "pid": os.getpid()}).encode(),
        )
        _REBUILDS_IN_PROGRESS.add(self.root)
        try:
            yield
        finally:
            _REBUILDS_IN_PROGRESS.discard(self.root)
        self.rebuild_marker_path.unlink()

    def recorded_versions(self) -> dict[str, int]:
        """The newest version of each table the writer recorded: the versions in the newest
        ledger row(s), and for the ledger itself (the last commit of a micro-batch, which no
        ledger row can record) the marker the writer leaves after every micro-batch.

        Cheap: one small JSON file and the ledger's newest data file, never the whole ledger.
        """
        recorded: dict[str, int] = {}
        try:
            marker = json.loads(self.versions_path.read_text())["versions"]
        except (OSError, ValueError, KeyError, TypeError):
            marker = {}
        for name, version in dict(marker).items() if isinstance(marker, dict) else ():
            if name in TABLES and isinstance(version, int):
                recorded[name] = version
        if "ledger" in self._handles:
            for name, version in self._newest_ledger_versions().items():
                recorded[name] = max(version, recorded.get(name, -1))
        return recorded

    def _newest_ledger_versions(self) -> dict[str, int]:
        dt = self._handles["ledger"]
        actions = dt.get_add_actions(flatten=True)
        paths = actions.column("path").to_pylist()
        if not paths:
            return {}
        # The file holding the newest row: by its finished_at statistics (a compaction may
        # have rewritten older rows into a newer file), else by modification time.
        stamps = actions.column("modification_time").to_pylist()
        names = actions.column_names
        finished = (
            actions.column("max.finished_at").to_pylist()
            if "max.finished_at" in names
            else [None] * len(paths)
        )
        newest = max(
            range(len(paths)),
            key=lambda i: (finished[i] is not None, finished[i] or 0, stamps[i], paths[i]),
        )
        with self._reading("ledger"):
            rows = pq.read_table(
                self._local_file("ledger", paths[newest]),
                columns=["finished_at", "table_versions"],
            )
        if rows.num_rows == 0:
            return {}
        last = rows.filter(pc.equal(rows["finished_at"], pc.max(rows["finished_at"])))
        found: dict[str, int] = {}
        for text in set(last.column("table_versions").to_pylist()):
            try:
                versions = json.loads(text or "{}")
            except ValueError:
                continue
            for name, version in versions.items():
                if name in TABLES and isinstance(version, int):
                    found[name] = max(version, found.get(name, -1))
        return found

    def version_problems(self) -> list[tuple[str, str]]:
        """(table, message) for every table whose log is older than what was recorded (a
        deleted newest commit file, or a table folder gone). Older commit files expiring
        under the log retention are not damage: only the newest version counts."""
        problems = []
        for name, recorded in sorted(self.recorded_versions().items()):
            handle = self._handles.get(name)
            if handle is None:
                if recorded > 0 and not DeltaTable.is_deltatable(str(self.path(name))):
                    problems.append(
                        (name, self._damaged(name, f"it is gone (version {recorded} recorded)"))
                    )
                continue
            current = handle.version()
            if current < recorded:
                problem = (
                    f"its log ends at version {current} but version {recorded} was recorded "
                    "(a commit file in _delta_log was deleted)"
                )
                problems.append((name, self._damaged(name, problem)))
        return problems

    def note_versions(self) -> None:
        """Record the versions of the open tables: the only record of the ledger's own newest
        version. Call it after the commits are durable (the writer: after its filesystem
        sync), so that the record is never above a version even after a power cut."""
        versions = {name: dt.version() for name, dt in self._handles.items()}
        try:
            before = json.loads(self.versions_path.read_text())["versions"]
            for name, version in dict(before).items():
                if name in versions and isinstance(version, int):
                    versions[name] = max(versions[name], version)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # Not fsync'd: a lost or older record only weakens the check, never raises a false alarm.
        atomic_write(
            self.versions_path, json.dumps({"versions": versions}).encode(), durable=False
        )

    def file_problems(self, name: str) -> list[str]:
        """Data files of the table's current version that are missing or of another size
        than the log says (one ``stat`` per file: for ``status``, not for every batch)."""
        actions = self.table(name).get_add_actions(flatten=True)
        missing, wrong = [], []
        for rel, size in zip(
            actions.column("path").to_pylist(),
            actions.column("size_bytes").to_pylist(),
            strict=True,
        ):
            try:
                actual = os.stat(self._local_file(name, rel)).st_size
            except FileNotFoundError:
                missing.append(rel)
                continue
            if size is not None and actual != size:
                wrong.append(f"{rel} ({actual:,} bytes, the log says {size:,})")
        problems = []
        if missing:
            problems.append(f"{len(missing)} data file(s) missing, e.g. {missing[0]}")
        if wrong:
            problems.append(f"{len(wrong)} data file(s) of the wrong size, e.g. {wrong[0]}")
        return [self._damaged(name, "; ".join(problems))] if problems else []

    def _local_file(self, name: str, rel: str) -> str:
        if rel.startswith("file://"):
            return unquote(rel[len("file://") :])
        if os.path.isabs(rel):
            return rel
        return str(self.path(name) / unquote(rel))

    def version(self, name: str) -> int:
        return self.table(name).version()

    def versions(self) -> dict[str, int]:
        return {name: self.version(name) for name in TABLES}

    def _fs(self, name: str) -> pafs.FileSystem:
        # A native filesystem: deltalake's default Python filesystem can abort the
        # interpreter at exit: Arrow's I/O threads call back into it and, wanting the GIL
        # during finalization, end in std::terminate ("terminate called without an active
        # exception", SIGABRT).
        return pafs.SubTreeFileSystem(str(self.path(name)), pafs.LocalFileSystem())

    def read(
        self,
        name: str,
        *,
        columns: Sequence[str] | None = None,
        files: str | None = None,
        rows: pads.Expression | None = None,
        version: int | None = None,
        refresh: bool = False,
    ) -> pa.Table:
        """Read a table: ``files`` is a SQL predicate that prunes files (partitions, stats),
        ``rows`` an Arrow expression filtering rows."""
        dt = self.table(name, refresh=refresh) if version is None else self._open(name, version)
        with self._reading(name):
            dataset = dt.to_pyarrow_dataset(
                filesystem=self._fs(name), file_pruning_predicate=files
            )
            return dataset.to_table(columns=list(columns) if columns else None, filter=rows)

    def read_pandas(self, name: str, **kwargs: Any) -> pd.DataFrame:
        return self.read(name, **kwargs).to_pandas()

    def count(self, name: str) -> int:
        dt = self.table(name)
        return int(sum(dt.get_add_actions(flatten=True).column("num_records").to_pylist() or [0]))

    def file_count(self, name: str) -> int:
        return len(self.table(name).get_add_actions(flatten=True).column("path"))

    def has_txn(self, name: str, app_id: str) -> bool:
        return self.table(name).transaction_version(app_id) is not None

    def arrival_column(self, name: str) -> str:
        """The column of a bookkeeping table that names each row's file arrival."""
        column = TABLES[name].arrival_column
        if column is None:
            raise ValueError(f"table {name} does not record file arrivals")
        return column

    def committed_arrivals(self, name: str, arrivals: Iterable[str]) -> set[str]:
        """Which of ``arrivals`` already have rows in bookkeeping table ``name`` (crash
        recovery: one filtered scan of one column, about 40 ms for 3 million rows)."""
        wanted = sorted(set(arrivals))
        if not wanted:
            return set()
        column = self.arrival_column(name)
        found = self.read(name, columns=[column], rows=pads.field(column).isin(wanted))
        present = set(found.column(column).to_pylist())
        # Rows appended by older versions carry no arrival id, but their commit an app txn.
        return present | {
            a
            for a in wanted
            if a not in present and self.has_txn(name, LEGACY_ARRIVAL_TXN.format(arrival=a))
        }

    # -- writes ---------------------------------------------------------------------------
    def append(
        self,
        name: str,
        data: pa.Table | pd.DataFrame,
        *,
        txns: Iterable[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Append rows; ``txns`` are app ids recorded in the same commit (idempotency marks)."""
        self._write(name, data, mode="append", txns=txns, metadata=metadata)

    def replace_where(
        self,
        name: str,
        data: pa.Table | pd.DataFrame,
        predicate: str,
        *,
        txns: Iterable[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Atomically replace the rows matching ``predicate`` with ``data``."""
        self._write(name, data, mode="overwrite", predicate=predicate, txns=txns, metadata=metadata)

    def _write(
        self,
        name: str,
        data: pa.Table | pd.DataFrame,
        *,
        mode: str,
        predicate: str | None = None,
        txns: Iterable[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        table = self._arrow(name, data)
        dt = self.table(name)
        with self._errors("write to", name):
            write_deltalake(
                dt,
                table,
                mode=mode,  # type: ignore[arg-type]
                predicate=predicate,
                commit_properties=_commit(txns, metadata),
            )
        dt.update_incremental()

    def compact(self, name: str, partition: str | None, target_bytes: int) -> None:
        """Rewrite the files below ``target_bytes`` of one partition (or of the table) into
        files of about that size, one task at a time (memory stays at one file's worth).

        The commit deletes no expired commit files: gold reads the silver commit history since
        its last refresh, so only the pipeline's own commits, made after gold caught up, may.
        """
        spec = TABLES[name]
        column = spec.partition_by[0] if spec.partition_by else None
        filters = [(column, "=", partition)] if column and partition is not None else None
        dt = self.table(name)
        with self._errors("compact", name):
            dt.optimize.compact(
                partition_filters=filters,
                target_size=target_bytes,
                max_concurrent_tasks=1,
                post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
            )
        dt.update_incremental()

    @contextlib.contextmanager
    def _errors(self, action: str, name: str) -> Iterator[None]:
        """Map Delta errors to ours, naming the table (commit conflicts are retryable)."""
        try:
            yield
        except CommitFailedError as exc:
            raise LakeCommitError(f"{action} {self.path(name)} failed: {exc}") from exc
        except (DeltaError, OSError) as exc:
            # A merge or compaction reads the table's data files: one missing or truncated is
            # damage, not a transient failure.
            cause = _file_cause(exc)
            if cause is not None:
                raise LakeDamagedError(self._damaged(name, cause)) from exc
            raise LakeError(f"{action} {self.path(name)} failed: {exc}") from exc

    def _arrow(self, name: str, data: pa.Table | pd.DataFrame) -> pa.Table:
        schema = TABLES[name].schema
        if isinstance(data, pa.Table):
            return data.select(schema.names).cast(schema)
        return pa.Table.from_pandas(data[schema.names], schema=schema, preserve_index=False)

    def merge_upsert(
        self,
        name: str,
        data: pd.DataFrame | pa.Table,
        *,
        key: str,
        target_filter: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Upsert by ``key``: a stored row is replaced only by a newer version
        (``_version_ts``, then ``_row_hash``), so order and repetition do not matter."""
        source = self._arrow(name, data)
        predicate = f"t.{key} = s.{key}"
        if target_filter:
            predicate += f" AND ({target_filter})"
        newer = (
            "s._version_ts > t._version_ts OR "
            "(s._version_ts = t._version_ts AND s._row_hash > t._row_hash)"
        )
        return self._merge(name, source, predicate, newer, metadata)

    def merge_lines(
        self,
        lines: pd.DataFrame,
        deletes: pd.DataFrame,
        *,
        dates: Iterable[date],
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Replace the lines of updated orders: upsert ``lines`` by (order_id, line_no) and
        delete the (order_id, line_no) pairs in ``deletes`` (lines an order no longer has)."""
        name = "silver_order_lines"
        new = self._arrow(name, lines).append_column(
            "_delete", pa.array([False] * len(lines), pa.bool_())
        )
        gone = self._arrow(name, deletes).append_column(
            "_delete", pa.array([True] * len(deletes), pa.bool_())
        )
        source = pa.concat_tables([new, gone])
        predicate = (
            "t.order_id = s.order_id AND t.line_no = s.line_no"
            f" AND t.order_month IN ({months_literal(dates)})"
        )
        cols = S.ORDER_LINES_SCHEMA.names
        dt = self.table(name)
        with self._errors("merge into", name):
            metrics = (
                dt.merge(
                    source,
                    predicate,
                    source_alias="s",
                    target_alias="t",
                    streamed_exec=False,
                    commit_properties=_commit((), metadata),
                )
                .when_matched_delete(predicate="s._delete")
                .when_matched_update(updates={c: f"s.{c}" for c in cols}, predicate="NOT s._delete")
                .when_not_matched_insert(
                    updates={c: f"s.{c}" for c in cols}, predicate="NOT s._delete"
                )
                .execute()
            )
        dt.update_incremental()
        return dict(metrics)

    def _merge(
        self,
        name: str,
        source: pa.Table,
        predicate: str,
        newer: str,
        metadata: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        dt = self.table(name)
        with self._errors("merge into", name):
            metrics = (
                dt.merge(
                    source,
                    predicate,
                    source_alias="s",
                    target_alias="t",
                    # Materialise the (small) source so Delta derives a pruning predicate from
                    # its statistics; the streamed default scans the whole target.
                    streamed_exec=False,
                    commit_properties=_commit((), metadata),
                )
                .when_matched_update_all(predicate=newer)
                .when_not_matched_insert_all()
                .execute()
            )
        dt.update_incremental()
        return dict(metrics)

    # -- silver lookups -------------------------------------------------------------------
    def lookup(
        self, entity: str, keys: Sequence[int], columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """The stored silver rows for ``keys`` (files pruned by key statistics)."""
        key = S.KEYS[entity]
        if len(keys) == 0:
            return pd.DataFrame(columns=list(columns or TABLES[SILVER[entity]].schema.names))
        table = self.read(
            SILVER[entity],
            columns=columns,
            files=key_ranges_predicate(key, keys),
            rows=pads.field(key).isin(pa.array(sorted(set(keys)), pa.int64())),
        )
        return table.to_pandas()

    def read_for_dates(
        self, name: str, dates: Iterable[date], columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Rows of a day-partitioned table for the given days only (partition pruning)."""
        dates = sorted(set(dates))
        if not dates:
            return (
                self._arrow(name, pd.DataFrame(columns=TABLES[name].schema.names))
                .select(list(columns or TABLES[name].schema.names))
                .to_pandas()
            )
        return self.read(
            name,
            columns=columns,
            files=f"order_month IN ({months_literal(dates)})",
            rows=pads.field("order_date").isin(pa.array(dates, pa.date32())),
        ).to_pandas()

    def order_dates_of_products(self, product_ids: Sequence[int]) -> set[date]:
        """Days with an order line of one of ``product_ids`` (projected scan of two columns)."""
        if len(product_ids) == 0:
            return set()
        table = self.read(
            "silver_order_lines",
            columns=["order_date"],
            rows=pads.field("product_id").isin(pa.array(sorted(set(product_ids)), pa.int64())),
        )
        return set(table.column("order_date").unique().to_pylist())

    # -- gold watermark -------------------------------------------------------------------
    def gold_watermark(self) -> dict[str, int | None]:
        """The silver versions gold was last brought up to date with."""
        dt = self.table("revenue_anomalies")
        return {
            t: dt.transaction_version(GOLD_WATERMARK_APP.format(table=t))
            for t in ("silver_orders", "silver_products")
        }

    def watermark_txns(self, versions: Mapping[str, int]) -> list[str]:
        return [f"{GOLD_WATERMARK_APP.format(table=t)}={v}" for t, v in versions.items()]

    def commit_metadata_since(self, name: str, version: int) -> list[dict[str, Any]] | None:
        """Commit infos of versions after ``version``, or None when the log no longer has them."""
        dt = self.table(name)
        current = dt.version()
        if current <= version:
            return []
        try:
            history = dt.history(limit=current - version)
        except (DeltaError, OSError):
            return None
        found = {h.get("version") for h in history}
        if not all(v in found for v in range(version + 1, current + 1)):
            return None
        return [h for h in history if h.get("version", -1) > version]

    # -- files ----------------------------------------------------------------------------
    def store_raw(self, batch_id: str, name: str, data: bytes, meta: Mapping[str, Any]) -> Path:
        """Keep an immutable copy of a received file (content addressed; written once)."""
        target = self.raw_path(batch_id, name)
        if not target.exists():
            try:
                self.write_raw_file(batch_id, name, data)
                meta_json = json.dumps(dict(meta), indent=2).encode()
                self.write_raw_file(batch_id, "meta.json", meta_json)
            except OSError as exc:
                raise LakeError(
                    f"cannot keep the raw copy {target}: {exc.strerror or exc}; the file "
                    "stays in landing (if the lake's disk is full, free space on it)"
                ) from exc
        return target

    def raw_batches(self) -> list[tuple[Path, dict[str, Any]]]:
        """Every raw copy with its metadata, in file-name order."""
        found = []
        if self.raw_dir.exists():
            for meta_path in self.raw_dir.glob("*/*/meta.json"):
                meta = json.loads(meta_path.read_text())
                found.append((meta_path.parent / meta["name"], meta))
        return sorted(found, key=lambda item: (item[1]["name"], item[1]["batch_id"]))

    @staticmethod
    def stored_name(name: str) -> str:
        """A safe name to store ``name`` (valid UTF-8, one line) under: itself when short
        enough, else its start and a digest of the whole (distinct names stay distinct)."""
        raw = name.encode("utf-8", "backslashreplace")
        if len(raw) <= MAX_STORED_NAME_BYTES and not name.startswith("."):
            return name
        digest = hashlib.sha256(raw).hexdigest()[:12]
        head = raw[: MAX_STORED_NAME_BYTES - 64].decode("utf-8", "ignore").lstrip(".")
        return f"{head}-{digest}"

    def store_quarantined(
        self, source: Path, data: bytes | None, name: str, reason: Mapping[str, Any]
    ) -> Path:
        """Copy a rejected file into quarantine/ with its ``.reason.json``; returns the new path.

        ``name`` is the file's display name (``read.display_name``); the file is stored under
        ``stored_name(name)``."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target, other = self._quarantine_targets(name, str(reason["batch_id"]))
        if os.path.lexists(target) and not _same_entry(target, source, data):
            target = other
        reason_path = target.with_name(target.name + ".reason.json")
        text = json.dumps(dict(reason), indent=2, default=str).encode()
        if source.is_symlink():
            if not target.is_symlink():
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.unlink(missing_ok=True)
                os.symlink(os.readlink(source), tmp)
                os.replace(tmp, target)
        elif data is not None:
            atomic_write(target, data)
        else:
            # Not read (too large, unreadable, not a regular file): the reason goes first, so
            # the file is never in quarantine without it, then the file itself, whole.
            atomic_write(reason_path, text)
            if not _same_entry(target, source, None) and not _keep_unread(source, target):
                left = {
                    **reason,
                    "location": str(source),
                    "fix": "it stays in landing (it could not be moved here): fix the cause "
                    "the reason names; the file is then read by the next scan of landing",
                }
                atomic_write(reason_path, json.dumps(left, indent=2, default=str).encode())
            return target
        atomic_write(reason_path, text)
        return target

    def _quarantine_targets(self, name: str, batch_id: str) -> tuple[Path, Path]:
        """Where a file of this display name is stored, and where if another file holds that."""
        target = self.quarantine_dir / self.stored_name(name)
        stem, dot, ext = target.name.partition(".")
        return target, self.quarantine_dir / f"{stem}.{batch_id[:12]}{dot}{ext}"

    def left_in_landing(self, name: str, batch_id: str) -> bool:
        """Whether the file recorded as quarantined under ``batch_id`` could not be moved into
        quarantine and stays in landing (its reason file says where)."""
        for target in self._quarantine_targets(name, batch_id):
            try:
                reason = json.loads(target.with_name(target.name + ".reason.json").read_text())
            except (OSError, ValueError):
                continue
            if reason.get("batch_id") == batch_id:
                return bool(reason.get("location"))
        return False

    def remove_stale_temp_files(self) -> int:
        """Delete the partial files a writer that died (or hit a full disk) left in ``raw/``
        and ``quarantine/``; returns how many. Only for the process holding the writer lock:
        no other process writes there, and this one's own temporary files are kept.

        Two flat folders are listed (raw files are written in ``raw/.tmp``), so this does not
        grow with the lake; a lake written before that is swept in full once (a marker)."""
        removed = 0
        mine = str(os.getpid())
        folders = [self.raw_tmp_dir, self.quarantine_dir]
        swept = self.daemon_dir / "raw-temp-files-swept"
        if not swept.exists() and self.raw_dir.is_dir():
            folders += [Path(f) for f, _, _ in os.walk(self.raw_dir)]
        for folder in folders:
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                match = TEMP_NAME.match(name)
                if match and match.group(1) != mine:
                    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                        os.unlink(os.path.join(folder, name))
                        removed += 1
        if not swept.exists():
            with contextlib.suppress(OSError):  # swept again next time
                swept.parent.mkdir(parents=True, exist_ok=True)
                swept.touch()
        if removed:
            logger.info("removed %d partial file(s) left by an interrupted write", removed)
        return removed

    def quarantined_files(self) -> list[Path]:
        if not self.quarantine_dir.exists():
            return []
        # Every quarantined entry is listed (a name starting with "_" too); not the reason
        # files, temporary files (".") or folders (the _records table). A file that could not
        # be moved here is listed by its reason file while it is still in landing.
        found = []
        for p in self.quarantine_dir.iterdir():
            if p.name.startswith(".") or (p.is_dir() and not p.is_symlink()):
                continue
            if not p.name.endswith(".reason.json"):
                found.append(p)
                continue
            entry = p.with_name(p.name.removesuffix(".reason.json"))
            if not os.path.lexists(entry):
                try:
                    location = json.loads(p.read_text()).get("location")
                except (OSError, ValueError):
                    continue
                if location and os.path.lexists(location):
                    found.append(entry)
        return sorted(found)


def _same_entry(target: Path, source: Path, data: bytes | None) -> bool:
    """Whether quarantine's ``target`` already holds this file (a retry after a crash)."""
    try:
        st, src = os.lstat(target), os.lstat(source)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) == (src.st_dev, src.st_ino):
        return True  # a hard link to the very file
    if data is None or not stat.S_ISREG(st.st_mode) or stat.S_ISLNK(src.st_mode):
        return False
    return st.st_size == len(data) and target.read_bytes() == data


def _keep_unread(source: Path, target: Path) -> bool:
    """Put a file that was not read into quarantine whole, never through memory: a hard link
    (landing's name is removed after the ledger row, like any handled file), else a copy by
    the kernel (a readable regular file, e.g. one over the size limit, on another disk),
    else a rename (needs no read permission). False when it must stay in landing."""
    with contextlib.suppress(OSError):
        os.link(source, target, follow_symlinks=False)
        return True
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(source).st_mode):
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                shutil.copyfile(source, tmp, follow_symlinks=False)
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, target)
                return True
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
    try:
        os.rename(source, target)
    except OSError as exc:
        # %r: the name may hold a line break
        logger.warning("cannot move %r into quarantine (%s): it stays in landing", str(source), exc)
        return False
    return True


INCOMPLETE_REBUILD = "incomplete rebuild (`ecom-stream rebuild --into` did not finish)"


def incomplete_rebuild_fix(root: Path) -> str:
    return f"rerun `ecom-stream rebuild --into NEW` into a new folder, or remove {root}"


def incomplete_rebuild_message(root: Path) -> str:
    return f"{root} is an {INCOMPLETE_REBUILD}: {incomplete_rebuild_fix(root)}"


_PARQUET_NAME = re.compile(r"[^\s/'\"]+\.parquet")


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _log_cause(exc: BaseException) -> str:
    """Why Delta could not load a table's log, in a few words."""
    text = str(exc)
    if "contiguous" in text or "gap" in text:
        return "its _delta_log has a gap (a commit file was deleted)"
    return f"its _delta_log cannot be read ({_short(exc)})"


def _file_cause(exc: BaseException) -> str | None:
    """The damage behind a read error (a data file missing or unreadable), or None when the
    error is of another kind."""
    text = str(exc)
    found = _PARQUET_NAME.search(text)
    name = found.group(0) if found else None
    if isinstance(exc, FileNotFoundError) or (
        "parquet" in text.lower() and ("not found" in text or "No such file" in text)
    ):
        return f"a data file is missing ({name or _short(exc)})"
    if "parquet" in text.lower():
        return f"a data file cannot be read, truncated or corrupt ({name or _short(exc)})"
    return None


def atomic_write(
    target: Path, data: bytes, *, durable: bool = True, tmp_dir: Path | None = None
) -> None:
    """Write to a temporary name (fsync'd when ``durable``), then rename: readers never see
    half a file, and a durable file survives a power cut once this returns. ``tmp_dir`` (on
    the same filesystem) holds the temporary file instead of the target's folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if tmp_dir is None:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    else:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f".{target.parent.name[:16]}-{target.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        # A full disk or an I/O error: leave no partial file behind (a kill is cleaned up by
        # the next writer, Lake.remove_stale_temp_files).
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _commit(txns: Iterable[str], metadata: Mapping[str, str] | None) -> CommitProperties:
    transactions = []
    now_ms = int(time.time() * 1000)
    for txn in txns:
        app_id, _, version = txn.partition("=")
        # lastUpdated lets Delta expire the transaction (tables with a retention, see TABLES).
        transactions.append(
            Transaction(app_id=app_id, version=int(version or 1), last_updated=now_ms)
        )
    return CommitProperties(
        app_transactions=transactions or None,
        custom_metadata=dict(metadata) if metadata else None,
    )

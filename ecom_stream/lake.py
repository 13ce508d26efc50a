"""The only module that knows the lake layout (paths, table names) and imports ``deltalake``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import (
    CommitProperties,
    DeltaTable,
    Field,
    PostCommitHookProperties,
    Transaction,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from ecom_stream import schema as S
from ecom_stream.errors import LakeCommitError, LakeError

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
MAX_KEY_RANGES = 16


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
    return ", ".join(f"'{m}'" for m in sorted({d.strftime("%Y-%m") for d in dates}))


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
    def lines_inflight_path(self) -> Path:
        """The order ids of an orders / order-lines merge pair in flight (see refresh.py)."""
        return self.daemon_dir / "lines_inflight.json"

    def raw_path(self, batch_id: str, name: str) -> Path:
        return self.raw_dir / batch_id[:2] / batch_id / name

    # -- tables ---------------------------------------------------------------------------
    def ensure_tables(self) -> None:
        """Create every missing table (empty, with its schema and partitioning)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for name, spec in TABLES.items():
            if name in self._handles:
                continue
            path = self.path(name)
            try:
                if DeltaTable.is_deltatable(str(path)):
                    self._handles[name] = _upgraded(DeltaTable(str(path)), spec)
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
            try:
                handle = DeltaTable(str(self.path(name)))
            except TableNotFoundError:
                raise LakeError(
                    f"no table at {self.path(name)}: run a backfill or the daemon first"
                ) from None
            self._handles[name] = handle
        else:
            handle.update_incremental()
        return handle

    def version(self, name: str) -> int:
        return self.table(name).version()

    def versions(self) -> dict[str, int]:
        return {name: self.version(name) for name in TABLES}

    def _fs(self, name: str) -> pafs.FileSystem:
        # A native filesystem: deltalake's default Python filesystem can abort the
        # interpreter at exit (see TECH_NOTES "terminate called without an active exception").
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
        if version is None:
            dt = self.table(name, refresh=refresh)
        else:
            dt = DeltaTable(str(self.path(name)), version=version)
        dataset = dt.to_pyarrow_dataset(filesystem=self._fs(name), file_pruning_predicate=files)
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
            atomic_write(target, data, durable=False)  # the pipeline syncs once per micro-batch
            atomic_write(
                target.parent / "meta.json",
                json.dumps(dict(meta), indent=2).encode(),
                durable=False,
            )
        return target

    def raw_batches(self) -> list[tuple[Path, dict[str, Any]]]:
        """Every raw copy with its metadata, in file-name order."""
        found = []
        if self.raw_dir.exists():
            for meta_path in self.raw_dir.glob("*/*/meta.json"):
                meta = json.loads(meta_path.read_text())
                found.append((meta_path.parent / meta["name"], meta))
        return sorted(found, key=lambda item: (item[1]["name"], item[1]["batch_id"]))

    def store_quarantined(
        self, source: Path, data: bytes | None, name: str, reason: Mapping[str, Any]
    ) -> Path:
        """Copy a rejected file into quarantine/ with its ``.reason.json``; returns the new path."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_dir / name
        if target.exists() or target.is_symlink():
            same = (
                data is not None
                and target.is_file()
                and not target.is_symlink()
                and target.read_bytes() == data
            )
            if not same:
                stem, dot, ext = name.partition(".")
                target = self.quarantine_dir / f"{stem}.{str(reason['batch_id'])[:12]}{dot}{ext}"
        if source.is_symlink():
            if not target.is_symlink():
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.unlink(missing_ok=True)
                os.symlink(os.readlink(source), tmp)
                os.replace(tmp, target)
        elif data is not None:
            atomic_write(target, data)
        atomic_write(
            target.with_name(target.name + ".reason.json"),
            json.dumps(dict(reason), indent=2, default=str).encode(),
        )
        return target

    def quarantined_files(self) -> list[Path]:
        if not self.quarantine_dir.exists():
            return []
        return sorted(
            p
            for p in self.quarantine_dir.iterdir()
            if not p.name.endswith(".reason.json") and not p.name.startswith((".", "_"))
        )


def atomic_write(target: Path, data: bytes, *, durable: bool = True) -> None:
    """Write to a temporary name (fsync'd when ``durable``), then rename: readers never see
    half a file, and a durable file survives a power cut once this returns."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, target)


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

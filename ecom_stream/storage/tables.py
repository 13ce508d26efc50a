"""Delta table handles, reads, writes, merges and schema migration. With ``maintenance``
(compaction, checkpoints, vacuum of these handles), the only importer of ``deltalake``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import (
    CommitProperties,
    DeltaTable,
    Field,
    Transaction,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from ecom_stream.contract import schema as S
from ecom_stream.errors import LakeCommitError, LakeDamagedError, LakeError
from ecom_stream.storage.faults import damaged, file_cause, log_cause, short
from ecom_stream.storage.layout import TABLES, Layout, TableSpec, table_configuration
from ecom_stream.storage.predicates import months_literal

__all__ = ["Tables"]

logger = logging.getLogger(__name__)


def _upgraded(dt: DeltaTable, spec: TableSpec, configuration: Mapping[str, str]) -> DeltaTable:
    """Bring a table written by an older ecom-stream up to ``spec``: add the (nullable) columns
    and set the table properties ``configuration`` declares."""
    have = set(dt.schema().to_arrow().names)
    missing = [f for f in spec.schema if f.name not in have]
    if missing:
        dt.alter.add_columns([Field.from_arrow(f.with_nullable(True)) for f in missing])
        logger.info("%s: added columns %s", dt.table_uri, [f.name for f in missing])
    current = dt.metadata().configuration
    changed = {k: v for k, v in configuration.items() if current.get(k) != v}
    if changed:
        dt.alter.set_table_properties(changed, raise_if_not_exists=False)
        logger.info("%s: set table properties %s", dt.table_uri, changed)
    return dt


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


class Tables:
    """The Delta tables of one lake, through cached handles."""

    def __init__(
        self, layout: Layout, *, writer: bool = False, log_retention: str | None = None
    ) -> None:
        self.layout = layout
        # A Delta interval ("interval 7 days", Settings.log_retention_interval) set on every
        # table; None keeps what each table has (LOG_RETENTION for a new one), so that a
        # command without the setting never undoes the daemon's.
        self.log_retention = log_retention
        self.handles: dict[str, DeltaTable] = {}
        # The single writer keeps its handles current through its own commits, so it skips
        # re-reading the log before every use (dozens of times per batch otherwise).
        self.writer = writer

    def path(self, name: str) -> str:
        return str(self.layout.path(name))

    def is_table(self, name: str) -> bool:
        return DeltaTable.is_deltatable(self.path(name))

    def is_created(self, name: str) -> bool:
        """Whether the table's folder exists (a table being created may not load yet)."""
        return self.layout.path(name).is_dir()

    def open_existing(self) -> None:
        """Load the log of every table that exists (damage in a log raises here)."""
        for name in TABLES:
            if name not in self.handles and self.is_table(name):
                self.handles[name] = self._open(name)

    def create_missing(self) -> None:
        """Upgrade every open table to its spec and create every missing one (empty, with
        its schema and partitioning)."""
        for name, spec in TABLES.items():
            path = self.layout.path(name)
            try:
                if name in self.handles:
                    current = self.handles[name].metadata().configuration
                    self.handles[name] = _upgraded(
                        self.handles[name], spec, self._configuration(spec, current)
                    )
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    self.handles[name] = DeltaTable.create(
                        str(path),
                        spec.schema,
                        partition_by=list(spec.partition_by) or None,
                        configuration=self._configuration(spec, {}) or None,
                        mode="ignore",
                    )
            except (DeltaError, OSError) as exc:
                raise LakeError(f"cannot open or create table {path}: {exc}") from exc

    def _configuration(self, spec: TableSpec, current: Mapping[str, str]) -> dict[str, str]:
        return table_configuration(spec, self.log_retention, current)

    def exists(self) -> bool:
        return self.is_table("ledger")

    def open_versions(self) -> dict[str, int]:
        """The current version of every open handle (no log read)."""
        return {name: dt.version() for name, dt in self.handles.items()}

    def add_actions(self, name: str, *, cached: bool = False) -> pa.Table:
        """The log's add actions (one row per data file) of the current version; ``cached``
        uses the open handle as it is."""
        dt = self.handles[name] if cached else self.table(name)
        return dt.get_add_actions(flatten=True)

    def _damaged(self, name: str, problem: str) -> str:
        return damaged(self.layout.path(name), problem)

    def table(self, name: str, *, refresh: bool = False) -> DeltaTable:
        """A cached handle, brought up to date with the log (cheap: reads new commits only);
        a writer's handles are current already, unless ``refresh`` asks for others' commits."""
        handle = self.handles.get(name)
        if handle is not None and self.writer and not refresh:
            return handle
        if handle is None:
            handle = self._open(name)
            self.handles[name] = handle
        else:
            try:
                handle.update_incremental()
            except DeltaError as exc:
                raise LakeDamagedError(self._damaged(name, log_cause(exc))) from exc
        return handle

    def _open(self, name: str, version: int | None = None) -> DeltaTable:
        """Load a table's log; a log Delta cannot load (a gap, a broken commit) is damage."""
        try:
            return DeltaTable(self.path(name), version=version)
        except TableNotFoundError:
            raise LakeError(
                f"no table at {self.path(name)}: run a backfill or the daemon first"
            ) from None
        except DeltaError as exc:
            if version is not None:
                # Old versions expire with their commit files (see LOG_RETENTION): not damage.
                raise LakeError(
                    f"cannot load version {version} of {self.path(name)}: {short(exc)}"
                ) from exc
            raise LakeDamagedError(self._damaged(name, log_cause(exc))) from exc
        except OSError as exc:
            raise LakeError(f"cannot open table {self.path(name)}: {exc}") from exc

    @contextlib.contextmanager
    def reading(self, name: str) -> Iterator[None]:
        """Turn a data file that cannot be read (missing, truncated) into a one-line error
        naming the table and the way out; other errors pass unchanged."""
        try:
            yield
        except (OSError, pa.ArrowException, DeltaError) as exc:
            cause = file_cause(exc)
            if cause is None:
                if isinstance(exc, OSError | DeltaError):
                    raise LakeError(f"cannot read {self.path(name)}: {exc}") from exc
                raise
            raise LakeDamagedError(self._damaged(name, cause)) from exc

    def version(self, name: str) -> int:
        return self.table(name).version()

    def versions(self) -> dict[str, int]:
        return {name: self.version(name) for name in TABLES}

    def _fs(self, name: str) -> pafs.FileSystem:
        # A native filesystem: deltalake's default Python filesystem can abort the
        # interpreter at exit: Arrow's I/O threads call back into it and, wanting the GIL
        # during finalization, end in std::terminate ("terminate called without an active
        # exception", SIGABRT).
        return pafs.SubTreeFileSystem(self.path(name), pafs.LocalFileSystem())

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
        with self.reading(name):
            dataset = dt.to_pyarrow_dataset(filesystem=self._fs(name), file_pruning_predicate=files)
            return dataset.to_table(columns=list(columns) if columns else None, filter=rows)

    def read_pandas(self, name: str, **kwargs: Any) -> pd.DataFrame:
        return self.read(name, **kwargs).to_pandas()

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
        table = self.arrow(name, data)
        dt = self.table(name)
        with self.errors("write to", name):
            write_deltalake(
                dt,
                table,
                mode=mode,  # type: ignore[arg-type]
                predicate=predicate,
                commit_properties=_commit(txns, metadata),
            )
        dt.update_incremental()

    @contextlib.contextmanager
    def errors(self, action: str, name: str) -> Iterator[None]:
        """Map Delta errors to ours, naming the table (commit conflicts are retryable)."""
        try:
            yield
        except CommitFailedError as exc:
            raise LakeCommitError(f"{action} {self.path(name)} failed: {exc}") from exc
        except (DeltaError, OSError) as exc:
            # A merge or compaction reads the table's data files: one missing or truncated is
            # damage, not a transient failure.
            cause = file_cause(exc)
            if cause is not None:
                raise LakeDamagedError(self._damaged(name, cause)) from exc
            raise LakeError(f"{action} {self.path(name)} failed: {exc}") from exc

    def arrow(self, name: str, data: pa.Table | pd.DataFrame) -> pa.Table:
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
        source = self.arrow(name, data)
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
        new = self.arrow(name, lines).append_column(
            "_delete", pa.array([False] * len(lines), pa.bool_())
        )
        gone = self.arrow(name, deletes).append_column(
            "_delete", pa.array([True] * len(deletes), pa.bool_())
        )
        source = pa.concat_tables([new, gone])
        predicate = (
            "t.order_id = s.order_id AND t.line_no = s.line_no"
            f" AND t.order_month IN ({months_literal(dates)})"
        )
        cols = S.ORDER_LINES_SCHEMA.names
        dt = self.table(name)
        with self.errors("merge into", name):
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
        with self.errors("merge into", name):
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

"""Other engines read the lake's tables: Polars (``read_delta``) and DuckDB (``delta_scan``)
get the same rows as deltalake, at rest and while a daemon writes.

The tables stay at Delta protocol (1, 2) with tz-aware timestamps only, so any Delta reader
opens them. DuckDB's delta extension is loaded from the ``duckdb-extension-delta`` pip
package (``INSTALL delta`` would download it): nothing here touches the network.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import duckdb_extensions
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from ecom_stream.api import PUBLIC_TABLES, process_files, read_table
from ecom_stream.config import Settings
from ecom_stream.service.daemon import Daemon
from ecom_stream.storage.lake import Lake
from ecom_stream.tools.generate import GenerateOptions, generate

# Read while the daemon writes; the ledger and bronze only ever gain rows.
CONCURRENT = (
    "bronze.orders", "silver.orders", "silver.order_lines", "gold.daily_revenue", "ledger"
)
APPEND_ONLY = ("bronze.orders", "ledger")


def generate_files(folder: Path, *, batches: int, seed: int) -> list[Path]:
    """Product files first, then the order files, in name order."""
    paths = generate(GenerateOptions(out=folder, batches=batches, orders_per_batch=40,
                                     products=30, product_batches=1, seed=seed))
    return sorted(paths, key=lambda p: (not p.name.startswith("products"), p.name))


def table_path(lake_dir: Path, public: str) -> str:
    return str(Lake(lake_dir).layout.path(PUBLIC_TABLES[public]))


def duck() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the delta extension from its pip package (no download)."""
    con = duckdb.connect()
    duckdb_extensions.import_extension("delta", con)
    return con


def read_polars(path: str) -> pa.Table:
    return pl.read_delta(path).to_arrow()


def read_duckdb(con: duckdb.DuckDBPyConnection, path: str) -> pa.Table:
    # A cursor per read: its own result set on the one connection.
    result = con.cursor().sql("SELECT * FROM delta_scan(?)", params=[path]).arrow()
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result


def normalised(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in deltalake's schema and a stable row order.

    The engines differ only in types that hold the same values: large_string / string,
    large_list / list, ``Etc/UTC`` / ``UTC``. Rows are sorted by every scalar column (the keys
    among them), so equal tables compare equal whatever file order an engine scanned.
    """
    assert sorted(table.column_names) == sorted(schema.names)
    table = table.select(schema.names).cast(schema)
    keys = [(f.name, "ascending") for f in schema if not pa.types.is_list(f.type)]
    return table.sort_by(keys)


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    return duck()


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake fed by the pipeline: products, orders (with a rejected row or more) and a
    malformed file (a quarantine record)."""
    root = tmp_path_factory.mktemp("readers")
    files = generate_files(root / "source", batches=3, seed=5)
    bad = root / "source" / "orders-999999.json"
    bad.write_text("[{not json")
    lake = root / "lake"
    settings = Settings(landing_dir=root / "source", lake_dir=lake)
    summary = process_files(lake, [*files, bad], settings)
    assert summary.counts["merged"] == len(files) and summary.counts["quarantined"] == 1
    return lake


@pytest.mark.parametrize("public", list(PUBLIC_TABLES))
def test_polars_and_duckdb_read_the_same_rows_as_deltalake(
    lake_dir: Path, con: duckdb.DuckDBPyConnection, public: str
) -> None:
    expected = Lake(lake_dir).tables.read(PUBLIC_TABLES[public])
    assert len(read_table(lake_dir, public)) == expected.num_rows
    path = table_path(lake_dir, public)
    want = normalised(expected, expected.schema)
    assert normalised(read_polars(path), expected.schema).equals(want), public
    assert normalised(read_duckdb(con, path), expected.schema).equals(want), public


def test_the_tables_that_should_hold_rows_do(lake_dir: Path) -> None:
    """So the comparison above compares rows, not empty tables (``sources.pulls`` is
    written by ``ecom-stream pull`` only)."""
    empty = {p for p in PUBLIC_TABLES if Lake(lake_dir).tables.read(PUBLIC_TABLES[p]).num_rows == 0}
    assert empty == {"sources.pulls"}


def _timestamp_ntz(schema: pa.Schema) -> list[str]:
    """Columns holding timestamps without a time zone, at any depth."""

    def naive(t: pa.DataType) -> bool:
        if pa.types.is_timestamp(t):
            return t.tz is None
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return naive(t.value_type)
        if pa.types.is_struct(t):
            return any(naive(t.field(i).type) for i in range(t.num_fields))
        return False

    return [f.name for f in schema if naive(f.type)]


@pytest.mark.parametrize("public", list(PUBLIC_TABLES))
def test_every_table_is_at_protocol_1_2_without_timestamp_ntz(lake_dir: Path, public: str) -> None:
    dt = DeltaTable(table_path(lake_dir, public))
    protocol = dt.protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2), protocol
    assert not protocol.reader_features and not protocol.writer_features, protocol
    assert _timestamp_ntz(pa.schema(dt.schema().to_arrow())) == [], public
    assert "timestamp_ntz" not in json.dumps(json.loads(dt.schema().to_json())), public


# -- while a daemon writes -----------------------------------------------------------------
@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Settings, Callable[[], None]]]:
    """A real daemon (the full pipeline) on a thread, watching ``tmp_path/landing``, and a
    function that stops it; commit history is kept, so every version's row count can be
    looked up afterwards."""
    settings = Settings(landing_dir=tmp_path / "landing", lake_dir=tmp_path / "lake",
                        quiet_seconds=0.2, log_retention="1 day")
    settings.landing_dir.mkdir()
    lock = Lake(settings.lake_dir).writer_lock("test daemon")
    lock.acquire()
    running = Daemon(settings)
    running.open()
    ready, codes = threading.Event(), []
    thread = threading.Thread(target=lambda: codes.append(running.run(ready.set)))
    thread.start()
    assert ready.wait(60)

    def stop() -> None:
        running.stop()
        thread.join(60)

    try:
        yield settings, stop
    finally:
        stop()
        lock.release()
    assert codes == [0]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def counts_at_every_version(lake_dir: Path, public: str) -> set[int]:
    name, tables = PUBLIC_TABLES[public], Lake(lake_dir).tables
    last = tables.version(name)
    return {tables.read(name, version=v).num_rows for v in range(last + 1)}


def test_readers_see_whole_commits_while_a_daemon_writes(
    daemon: tuple[Settings, Callable[[], None]], con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """Every Polars and DuckDB read during a stream of files succeeds and finds a row count the
    table had at some version (never half a commit); append-only tables never shrink; once
    the stream is in, both engines read what deltalake reads."""
    settings, stop = daemon
    lake_dir, landing = settings.lake_dir, settings.landing_dir
    files = generate_files(tmp_path / "source", batches=8, seed=11)
    seen: dict[tuple[str, str], list[int]] = {}
    wait_until(lambda: Lake(lake_dir).tables.exists(), 30, "the lake's tables")

    def read_all() -> None:
        for public in CONCURRENT if Lake(lake_dir).tables.exists() else ():
            path = table_path(lake_dir, public)
            seen.setdefault((public, "polars"), []).append(read_polars(path).num_rows)
            seen.setdefault((public, "duckdb"), []).append(read_duckdb(con, path).num_rows)

    for f in files:  # deliver one by one (write a hidden name, then rename), reading between
        (landing / f".{f.name}.part").write_bytes(f.read_bytes())
        (landing / f".{f.name}.part").rename(landing / f.name)
        read_all()
    names = {f.name for f in files}

    def all_recorded() -> bool:
        read_all()
        ledger = Lake(lake_dir).tables.read("ledger", columns=["file_name"], refresh=True)
        return names <= set(ledger["file_name"].to_pylist())

    wait_until(all_recorded, 120, "every file in the ledger")
    stop()  # gold may commit after the ledger row: the final reads come once it is done
    outcomes = Lake(lake_dir).tables.read("ledger", columns=["outcome"])["outcome"]
    assert set(outcomes.to_pylist()) == {"merged"}
    for public in CONCURRENT:
        possible = counts_at_every_version(lake_dir, public)
        for engine in ("polars", "duckdb"):
            counts = seen[(public, engine)]
            assert set(counts) <= possible, (public, engine, counts, possible)
            if public in APPEND_ONLY:
                assert counts == sorted(counts), (public, engine, counts)
    for public in CONCURRENT:
        expected = Lake(lake_dir).tables.read(PUBLIC_TABLES[public])
        path = table_path(lake_dir, public)
        want = normalised(expected, expected.schema)
        assert normalised(read_polars(path), expected.schema).equals(want), public
        assert normalised(read_duckdb(con, path), expected.schema).equals(want), public

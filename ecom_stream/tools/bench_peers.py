"""The peers of ``ecom-stream bench``: the code that runs inside each peer's child process.

``python -m ecom_stream.tools.bench_peers --runner N`` runs one peer over the files of ``--source``
(``floor``: the I/O floor; ``naive`` and ``tutorial``: the loops people write instead of
ecom-stream), appends one JSON line per file to ``--progress`` and writes its own peak RSS to
``--result``. ``ecom_stream.tools.bench`` starts and supervises it and imports the file helpers from
here, so the top-level imports stay light: pandas, pyarrow and deltalake load inside the peers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PEERS", "file_entity", "load_records", "ordered_files"]


# -- the files ----------------------------------------------------------------------------
def file_entity(path: Path) -> str:
    """``products`` for a products file, else ``orders``."""
    return "products" if path.name.lower().startswith("products") else "orders"


def ordered_files(folder: Path) -> list[Path]:
    """Batch files of ``folder``: products first, then orders, each in name order."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (file_entity(p) != "products", p.name))


def load_records(path: Path) -> list[dict[str, Any]]:
    """A file's records, or [] when it is not a JSON array (the peers skip such files)."""
    try:
        value = json.loads(path.read_bytes())
    except ValueError:
        return []
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


# -- the peers ----------------------------------------------------------------------------
class _Reporter:
    """Appends one JSON line per processed file to the progress file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def file_done(self, path: Path, rows: int, start: float) -> None:
        end = time.time()
        line = {
            "file": path.name,
            "entity": file_entity(path),
            "rows": rows,
            "ms": (end - start) * 1000,
            "start": start,
            "end": end,
        }
        with open(self.path, "a") as fh:
            fh.write(json.dumps(line) + "\n")


def _floor(files: list[Path], out: Path, report: _Reporter) -> None:
    """Read each file and append it to a Parquet dataset per entity."""
    import pyarrow.dataset as pads

    for i, path in enumerate(files):
        start = time.time()
        records = load_records(path)
        if records:
            pads.write_dataset(
                _arrow_records(records),
                out / file_entity(path),
                format="parquet",
                basename_template=f"part-{i:06d}-{{i}}.parquet",
                existing_data_behavior="overwrite_or_ignore",
            )
        report.file_done(path, len(records), start)


def _arrow_records(records: list[dict[str, Any]]) -> Any:
    """Records as an Arrow table; columns of mixed JSON types are kept as JSON text."""
    import pyarrow as pa

    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        columns = {}
        for key in dict.fromkeys(k for r in records for k in r):
            values = [r.get(key) for r in records]
            try:
                columns[key] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                columns[key] = pa.array(
                    [v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
                    pa.string(),
                )
        return pa.table(columns)


_TEXT = ("name", "category", "status", "payment_method", "shipping_city")


def _naive_schema(entity: str) -> Any:
    """The columns the naive and tutorial loops keep (unpartitioned tables)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    if entity == "products":
        return pa.schema(
            [
                ("product_id", pa.int64()),
                ("name", pa.string()),
                ("category", pa.string()),
                ("price", pa.float64()),
                ("rating", pa.float64()),
                ("stock", pa.float64()),
                ("created_at", ts),
                ("updated_at", ts),
            ]
        )
    return pa.schema(
        [
            ("order_id", pa.int64()),
            ("customer_id", pa.int64()),
            ("product_ids", pa.list_(pa.int64())),
            ("quantities", pa.list_(pa.int64())),
            ("total", pa.float64()),
            ("status", pa.string()),
            ("payment_method", pa.string()),
            ("shipping_city", pa.string()),
            ("created_at", ts),
            ("updated_at", ts),
            ("order_date", pa.date32()),
        ]
    )


def _naive_clean(entity: str, records: list[dict[str, Any]]) -> Any:
    """What a competent user writes: parse numbers and times, drop bad rows, dedupe keys."""
    import pandas as pd
    import pyarrow as pa

    schema = _naive_schema(entity)
    columns = [c for c in schema.names if c != "order_date"]
    raw = pd.DataFrame.from_records(records).reindex(columns=columns)
    df = pd.DataFrame(index=raw.index)
    for col in columns:
        values = raw[col].astype(object)
        if col.endswith("_at"):
            text = values.where(values.map(lambda v: isinstance(v, str)))
            df[col] = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        elif col in _TEXT:
            df[col] = values.where(values.map(lambda v: isinstance(v, str)))
        elif col in ("product_ids", "quantities"):
            df[col] = values.where(values.map(lambda v: isinstance(v, list) and len(v) > 0))
        else:
            df[col] = pd.to_numeric(values, errors="coerce").astype("float64")
    key, amount = ("product_id", "price") if entity == "products" else ("order_id", "total")
    required = [key, amount, "created_at"] + (
        ["customer_id", "product_ids", "quantities"] if entity == "orders" else []
    )
    df = df.dropna(subset=required)
    if entity == "orders":
        df = df[df["product_ids"].map(len) == df["quantities"].map(len)]
    df = df[(df[amount] > 0) if entity == "products" else (df[amount] >= 0)]
    if entity == "orders":
        df["order_date"] = df["created_at"].dt.date
    df = df.assign(_version=df["updated_at"].fillna(df["created_at"]))
    df = df.sort_values("_version", kind="stable").drop_duplicates(key, keep="last")
    return pa.Table.from_pandas(df[schema.names], preserve_index=False).cast(schema)


def _daily_revenue(orders: Any, products: Any) -> Any:
    """Revenue per day and category: each order's total split over its lines by price x qty.

    The same definition as ecom-stream's gold table, written the straightforward way: over
    the whole silver table, every time.
    """
    import numpy as np

    df = orders[orders["status"] != "cancelled"].reset_index(drop=True)
    lines = df[["order_id", "order_date", "total", "product_ids", "quantities"]].explode(
        ["product_ids", "quantities"]
    )
    lines = lines.rename(columns={"product_ids": "product_id", "quantities": "quantity"})
    lines["product_id"] = lines["product_id"].astype("int64")
    lines["quantity"] = lines["quantity"].astype("int64")
    lines = lines.merge(products[["product_id", "price", "category"]], on="product_id", how="left")
    lines["category"] = lines["category"].fillna("Unknown")
    lines["weight"] = (lines["price"] * lines["quantity"]).fillna(0.0)
    lines["weight"] = np.where(
        lines.groupby("order_id")["weight"].transform("sum") > 0, lines["weight"], lines["quantity"]
    )
    lines["revenue"] = (
        lines["total"] * lines["weight"] / lines.groupby("order_id")["weight"].transform("sum")
    )
    by_cat = lines.groupby(["order_date", "category"], as_index=False).agg(
        revenue=("revenue", "sum"), orders=("order_id", "nunique"), units=("quantity", "sum")
    )
    return by_cat


def _read_delta(path: Path, columns: list[str]) -> Any:
    import pyarrow.fs as pafs
    from deltalake import DeltaTable

    # A native filesystem: the default one can abort the interpreter at exit: Arrow's I/O
    # threads call back into it and hit std::terminate during finalization.
    fs = pafs.SubTreeFileSystem(str(path), pafs.LocalFileSystem())
    return DeltaTable(str(path)).to_pandas(columns=columns, filesystem=fs)


def _naive(files: list[Path], out: Path, report: _Reporter) -> None:
    """Per file: clean, default MERGE into silver, full gold recompute and overwrite."""
    from deltalake import DeltaTable, write_deltalake

    for path in files:
        start = time.time()
        records = load_records(path)
        entity = file_entity(path)
        key = "product_id" if entity == "products" else "order_id"
        silver = out / "silver" / entity
        if records:
            batch = _naive_clean(entity, records)
            if not DeltaTable.is_deltatable(str(silver)):
                write_deltalake(str(silver), batch)
            else:
                (
                    DeltaTable(str(silver))
                    .merge(batch, f"t.{key} = s.{key}", source_alias="s", target_alias="t")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute()
                )
            products_path = out / "silver" / "products"
            if entity == "orders" and DeltaTable.is_deltatable(str(products_path)):
                orders = _read_delta(
                    silver,
                    ["order_id", "order_date", "total", "status", "product_ids", "quantities"],
                )
                products = _read_delta(products_path, ["product_id", "price", "category"])
                write_deltalake(
                    str(out / "gold" / "daily_revenue"),
                    _daily_revenue(orders, products),
                    mode="overwrite",
                )
        report.file_done(path, len(records), start)


def _tutorial(files: list[Path], out: Path, report: _Reporter) -> None:
    """Per new file: re-run the whole batch job over every file so far and overwrite outputs."""
    import pyarrow as pa
    from deltalake import write_deltalake

    for i, path in enumerate(files):
        start = time.time()
        received = {p: load_records(p) for p in files[: i + 1]}
        tables = {}
        for entity in ("products", "orders"):
            records = [r for p, recs in received.items() if file_entity(p) == entity for r in recs]
            if not records:
                continue
            tables[entity] = _naive_clean(entity, records)
            write_deltalake(str(out / "silver" / entity), tables[entity], mode="overwrite")
        if "orders" in tables and "products" in tables:
            daily = _daily_revenue(tables["orders"].to_pandas(), tables["products"].to_pandas())
            write_deltalake(
                str(out / "gold" / "daily_revenue"),
                pa.Table.from_pandas(daily, preserve_index=False),
                mode="overwrite",
            )
        report.file_done(path, len(received[path]), start)


_PEER_FUNCTIONS: dict[str, Callable[[list[Path], Path, _Reporter], None]] = {
    "floor": _floor,
    "naive": _naive,
    "tutorial": _tutorial,
}
PEERS = tuple(_PEER_FUNCTIONS)


def _child_main(argv: Sequence[str]) -> int:
    """Entry point of a peer child: process every file, then write the result JSON."""
    parser = argparse.ArgumentParser(prog="python -m ecom_stream.tools.bench_peers")
    parser.add_argument("--runner", choices=PEERS, required=True)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--progress", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    import resource

    args.out.mkdir(parents=True, exist_ok=True)
    _PEER_FUNCTIONS[args.runner](ordered_files(args.source), args.out, _Reporter(args.progress))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    args.result.write_text(json.dumps({"maxrss_kb": maxrss}))
    return 0


if __name__ == "__main__":
    code = 1
    try:
        code = _child_main(sys.argv[1:])
    except Exception:
        import traceback

        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown, where Arrow/Delta native threads can abort with SIGABRT.
    os._exit(code)

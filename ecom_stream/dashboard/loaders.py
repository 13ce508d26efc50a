"""Lake reads of the dashboard: small frames at an explicit table version.

Every loader takes a :class:`Lake` and a table version, so a frame always matches the version
it is cached under even while the daemon commits, and reads only the columns (and, for silver
orders, only the date partitions) a view needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as pads

from ecom_stream.contract import schema as S
from ecom_stream.dashboard.aggregates import apply_filters
from ecom_stream.dashboard.model import (
    LEDGER_COLUMNS,
    MISSING,
    ORDER_COLUMNS,
    PREVIEW_COLUMNS,
    PRODUCT_COLUMNS,
    QUALITY_COLUMNS,
    DateWindow,
    Filters,
    Health,
)
from ecom_stream.service.status import backlog, heartbeat
from ecom_stream.sources.reconcile import reconciliation
from ecom_stream.storage.lake import TABLES, Lake


# -- versions and options ------------------------------------------------------------------
def table_versions(
    lake: Lake, names: Sequence[str] = tuple(TABLES), previous: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Current version of each table: ``previous`` (or ``MISSING``) where it cannot be read."""
    versions = {}
    for name in names:
        try:
            versions[name] = lake.tables.version(name)
        except Exception:  # not created yet, or a transient read error: keep what we had
            versions[name] = (previous or {}).get(name, MISSING)
    return versions



# -- loaders (explicit versions) -----------------------------------------------------------
def _read(lake: Lake, name: str, version: int, columns: Sequence[str], **kw: Any) -> pd.DataFrame:
    if version == MISSING:
        table = TABLES[name].schema.empty_table().select(list(columns))
    else:
        table = lake.tables.read(name, columns=list(columns), version=version, **kw)
    return table.to_pandas()


def load_orders(lake: Lake, version: int, window: DateWindow) -> pd.DataFrame:
    """Silver orders: only the charted columns of the partitions in ``window``.

    Text columns come back as categoricals and ``order_date`` as datetime64, which makes the
    aggregations several times faster on millions of rows.
    """
    if version == MISSING:
        table = TABLES["silver_orders"].schema.empty_table().select(list(ORDER_COLUMNS))
    else:
        table = lake.tables.read("silver_orders", columns=ORDER_COLUMNS, version=version,
                          files=window.predicate(), rows=window.rows())  # fmt: skip
    return table.to_pandas(strings_to_categorical=True, date_as_object=False)


def load_order_categories(
    lake: Lake, lines_version: int, products: pd.DataFrame, window: DateWindow
) -> pd.DataFrame:
    """Distinct (order_id, category) pairs: the categories each order contains."""
    kw = {} if lines_version == MISSING else {"files": window.predicate(), "rows": window.rows()}
    cols = ("order_id", "product_id")
    lines = _read(lake, "silver_order_lines", lines_version, cols, **kw)
    pairs = lines.merge(products[["product_id", "category"]], on="product_id", how="left")
    pairs["category"] = pairs["category"].fillna(S.UNKNOWN_CATEGORY)
    return pairs[["order_id", "category"]].drop_duplicates().reset_index(drop=True)


def load_products(lake: Lake, version: int) -> pd.DataFrame:
    """The product catalogue (small: read whole)."""
    return _read(lake, "silver_products", version, PRODUCT_COLUMNS)


def load_daily_revenue(lake: Lake, version: int) -> pd.DataFrame:
    """Gold daily revenue by category (one row per day and category, plus "All")."""
    return _read(lake, "daily_revenue", version, TABLES["daily_revenue"].schema.names)


def load_anomalies(lake: Lake, version: int) -> pd.DataFrame:
    """Gold anomaly scores of the flagged days only."""
    rows = None if version == MISSING else pads.field("is_anomaly")
    df = _read(lake, "revenue_anomalies", version, TABLES["revenue_anomalies"].schema.names,
               rows=rows)  # fmt: skip
    return df.sort_values(["order_date", "category"]).reset_index(drop=True)


def load_ledger(lake: Lake, version: int) -> pd.DataFrame:
    """One row per processed file: its outcome and timestamps."""
    return _read(lake, "ledger", version, LEDGER_COLUMNS)


def load_quality(lake: Lake, version: int) -> pd.DataFrame:
    """Validation results: one row per batch and expectation."""
    return _read(lake, "quality_validations", version, QUALITY_COLUMNS)


def load_quarantine(lake: Lake, version: int) -> pd.DataFrame:
    """Quarantined batches with their reasons, newest first, marked if still in quarantine."""
    cols = ("source_file", "quarantined_as", "entity", "reason", "quarantined_at")
    df = _read(lake, "quarantine_records", version, cols)
    df = df.sort_values("quarantined_at", ascending=False).reset_index(drop=True)
    df["in_quarantine"] = [bool(n) and lake.blobs.holds(str(n)) for n in df["quarantined_as"]]
    return df


def load_rejected(lake: Lake, version: int) -> pd.DataFrame:
    """Rejected rows counted by entity and reason, most frequent first."""
    df = _read(lake, "rejected_rows", version, ("entity", "reason"))
    counts = df.groupby(["entity", "reason"], dropna=False).size().rename("rows").reset_index()
    return counts.sort_values("rows", ascending=False).reset_index(drop=True)


def preview_orders(
    lake: Lake,
    version: int,
    newest: date | None,
    filters: Filters,
    order_categories: pd.DataFrame | None = None,
    *,
    days: int = 3,
    limit: int = 200,
) -> pd.DataFrame:
    """The most recent matching orders; reads only the newest ``days`` date partitions."""
    end = min(d for d in (filters.end, newest) if d) if (filters.end or newest) else None
    if end is None or version == MISSING:
        return _read(lake, "silver_orders", MISSING, PREVIEW_COLUMNS)
    start = max(d for d in (filters.start, end - timedelta(days=days - 1)) if d)
    window = DateWindow(start, end)
    df = _read(lake, "silver_orders", version, PREVIEW_COLUMNS,
               files=window.predicate(), rows=window.rows())  # fmt: skip
    df = apply_filters(df, Filters(filters.categories, filters.statuses), order_categories)
    return df.sort_values("created_at", ascending=False).head(limit).reset_index(drop=True)



def health(
    lake: Lake,
    landing: Path,
    summary: tuple[dict[str, int], dict[str, Any] | None],
    versions: dict[str, int],
    stale_after: float,
) -> Health:
    """Daemon heartbeat, batch outcomes, the last batch, backlog in landing, table versions."""
    return Health(
        daemon=heartbeat(lake, stale_after),
        outcomes=summary[0],
        last_batch=summary[1],
        backlog=len(backlog(landing)),
        versions={TABLES[n].path: v for n, v in versions.items()},
        sources=reconciliation(lake)["endpoints"],
    )



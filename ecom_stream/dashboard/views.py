"""Read-side data access for the dashboard: small, filtered DataFrames from the lake.

Loaders (``load_*``) take a :class:`Lake` and an explicit table version, so a frame always
matches the version it is cached under even while the daemon commits, and read only the
columns (and, for silver orders, only the date partitions) a view needs. The other functions
are pure aggregations of what the loaders return, vectorised so that a lake of millions of
orders stays quick. Nothing here imports Streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from ecom_stream.contract import schema as S
from ecom_stream.service.status import backlog, heartbeat
from ecom_stream.storage.lake import TABLES, Lake
from ecom_stream.transform import insights

__all__ = [
    "MISSING",
    "STATUSES",
    "WINDOWS",
    "DateWindow",
    "Filters",
    "Health",
    "Kpi",
    "Overview",
    "anomalies_view",
    "apply_filters",
    "category_options",
    "checks_summary",
    "daily_revenue_view",
    "date_bounds",
    "health",
    "kpis",
    "ledger_summary",
    "load_anomalies",
    "load_daily_revenue",
    "load_ledger",
    "load_order_categories",
    "load_orders",
    "load_products",
    "load_quality",
    "load_quarantine",
    "load_rejected",
    "overview",
    "pass_rate",
    "preview_orders",
    "resolve_window",
    "table_versions",
]

ORDER_COLUMNS = tuple(dict.fromkeys((
    "order_id", "customer_id", "total", "status", "shipping_city",
    "order_date", "order_month", "order_dow", "order_hour", *insights.ORDER_COLUMNS,
)))  # fmt: skip
PRODUCT_COLUMNS = ("product_id", "name", "category", "price", "price_tier", "rating", "stock")
PREVIEW_COLUMNS = (
    "order_id", "created_at", "customer_id", "status", "total", "n_items",
    "payment_method", "shipping_city", "order_date",
)  # fmt: skip
LEDGER_COLUMNS = ("file_name", "outcome", "received_at", "finished_at")
QUALITY_COLUMNS = ("batch_id", "source_file", "expectation", "policy", "success", "validated_at")
STATUSES = (*S.ORDER_STATUSES, S.UNKNOWN_STATUS)
WINDOWS = {"All time": None, "Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90}
MISSING = -1
"""Version of a table that does not exist (yet): it reads as empty."""
KPI_LABELS = ("Revenue", "Orders", "Avg order value", "Unique customers")


@dataclass(frozen=True)
class Filters:
    """Sidebar selections; ``None`` means "everything"."""

    categories: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    start: date | None = None
    end: date | None = None


@dataclass(frozen=True)
class DateWindow:
    """An inclusive range of order dates (``None``: open)."""

    start: date | None
    end: date | None

    def predicate(self) -> str | None:
        """SQL predicate on ``order_date`` that prunes files (month partitions and date
        statistics), or None for all. It keeps a superset: pair it with :meth:`rows`."""
        parts = []
        if self.start:
            parts.append(f"order_date >= '{self.start.isoformat()}'")
        if self.end:
            parts.append(f"order_date <= '{self.end.isoformat()}'")
        return " AND ".join(parts) or None

    def rows(self) -> pads.Expression | None:
        """The exact row filter of the window."""
        expr = None
        if self.start:
            expr = pads.field("order_date") >= pa.scalar(self.start, pa.date32())
        if self.end:
            upper = pads.field("order_date") <= pa.scalar(self.end, pa.date32())
            expr = upper if expr is None else expr & upper
        return expr


@dataclass(frozen=True)
class Kpi:
    """One KPI: value over the selection, change the newest day made, daily sparkline."""

    label: str
    value: float
    delta: float | None
    daily: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Overview:
    """Everything the order charts show for one selection (small frames only)."""

    rows: int
    kpis: list[Kpi]
    latest_day: date | None
    monthly: pd.DataFrame
    by_status: pd.DataFrame
    by_city: pd.DataFrame
    heatmap: pd.DataFrame
    insights: dict[str, Any]


@dataclass(frozen=True)
class Health:
    """Pipeline health: daemon heartbeat, ledger outcomes, landing backlog, table versions."""

    daemon: dict[str, Any] | None
    outcomes: dict[str, int]
    last_batch: dict[str, Any] | None
    backlog: int
    versions: dict[str, int]


# -- versions and options ------------------------------------------------------------------
def table_versions(
    lake: Lake, names: Sequence[str] = tuple(TABLES), previous: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Current version of each table: ``previous`` (or ``MISSING``) where it cannot be read."""
    versions = {}
    for name in names:
        try:
            versions[name] = lake.version(name)
        except Exception:  # not created yet, or a transient read error: keep what we had
            versions[name] = (previous or {}).get(name, MISSING)
    return versions


def category_options(products: pd.DataFrame) -> list[str]:
    """The known categories plus any other category found in the catalogue."""
    seen = set(products["category"].dropna()) if not products.empty else set()
    return [*S.CATEGORIES, *sorted(seen - set(S.CATEGORIES))]


def date_bounds(daily: pd.DataFrame) -> tuple[date | None, date | None]:
    """First and last order date with revenue (from gold, so it is cheap)."""
    if daily.empty:
        return None, None
    return daily["order_date"].min(), daily["order_date"].max()


def resolve_window(
    preset: str, custom: tuple[date, date] | None, newest: date | None
) -> DateWindow:
    """The sidebar's date choice as a window; relative presets end at the newest order date."""
    if preset == "Custom" and custom:
        return DateWindow(custom[0], custom[1])
    days = WINDOWS.get(preset)
    if days is None or newest is None:
        return DateWindow(None, None)
    return DateWindow(newest - timedelta(days=days - 1), None)


# -- loaders (explicit versions) -----------------------------------------------------------
def _read(lake: Lake, name: str, version: int, columns: Sequence[str], **kw: Any) -> pd.DataFrame:
    if version == MISSING:
        table = TABLES[name].schema.empty_table().select(list(columns))
    else:
        table = lake.read(name, columns=list(columns), version=version, **kw)
    return table.to_pandas()


def load_orders(lake: Lake, version: int, window: DateWindow) -> pd.DataFrame:
    """Silver orders: only the charted columns of the partitions in ``window``.

    Text columns come back as categoricals and ``order_date`` as datetime64, which makes the
    aggregations several times faster on millions of rows.
    """
    if version == MISSING:
        table = TABLES["silver_orders"].schema.empty_table().select(list(ORDER_COLUMNS))
    else:
        table = lake.read("silver_orders", columns=ORDER_COLUMNS, version=version,
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
    folder = lake.quarantine_dir
    df["in_quarantine"] = [bool(n) and (folder / str(n)).exists() for n in df["quarantined_as"]]
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


# -- order views (pure) --------------------------------------------------------------------
def apply_filters(
    orders: pd.DataFrame, filters: Filters, order_categories: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Orders matching the filters (an order is in a category if one of its products is)."""
    keep = np.ones(len(orders), dtype=bool)
    if filters.statuses is not None:
        keep &= orders["status"].isin(filters.statuses).to_numpy()
    if filters.start is not None or filters.end is not None:
        dates = pd.to_datetime(orders["order_date"])
        if filters.start is not None:
            keep &= (dates >= pd.Timestamp(filters.start)).to_numpy()
        if filters.end is not None:
            keep &= (dates <= pd.Timestamp(filters.end)).to_numpy()
    if filters.categories is not None and order_categories is not None:
        chosen = order_categories["category"].isin(filters.categories)
        keep &= orders["order_id"].isin(order_categories.loc[chosen, "order_id"]).to_numpy()
    return orders[keep]


def kpis(
    orders: pd.DataFrame, excluded: Sequence[str], spark_days: int = 30
) -> tuple[list[Kpi], date | None]:
    """Revenue, orders, average order value and unique customers over ``orders``, each with
    the change the newest order day made (value minus the value without that day) and a
    sparkline of its last ``spark_days`` days. Revenue, its average and customers count only
    orders whose status earns revenue (as ``insights.order_insights`` does)."""
    if orders.empty:
        return [Kpi(label, 0.0, None) for label in KPI_LABELS], None
    day = pd.to_datetime(orders["order_date"]).to_numpy()
    paid = ~orders["status"].isin(list(excluded)).to_numpy()
    total = orders["total"].to_numpy(dtype=float)
    customer = orders["customer_id"].to_numpy()
    latest = day.max()

    def measures(mask: np.ndarray) -> tuple[float, float, float, float]:
        earning = mask & paid
        revenue = float(np.nansum(total[earning]))
        aov = revenue / earning.sum() if earning.any() else 0.0
        return revenue, float(mask.sum()), aov, float(len(pd.unique(customer[earning])))

    now = measures(np.ones(len(day), dtype=bool))
    before = day < latest
    prev = measures(before) if before.any() else None
    recent = day > latest - np.timedelta64(spark_days, "D")
    daily = _daily(day[recent], paid[recent], total[recent], customer[recent])
    found = [
        Kpi(label, now[i], None if prev is None else now[i] - prev[i], daily[:, i].tolist())
        for i, label in enumerate(KPI_LABELS)
    ]
    return found, pd.Timestamp(latest).date()


def _daily(
    day: np.ndarray, paid: np.ndarray, total: np.ndarray, customer: np.ndarray
) -> np.ndarray:
    """Per day (sorted): revenue, orders, average order value, unique customers."""
    days, index = np.unique(day, return_inverse=True)
    n = len(days)
    revenue = np.bincount(index, weights=np.where(paid, np.nan_to_num(total), 0.0), minlength=n)
    orders = np.bincount(index, minlength=n).astype(float)
    earning = np.bincount(index, weights=paid.astype(float), minlength=n)
    aov = np.divide(revenue, earning, out=np.zeros(n), where=earning > 0)
    keys = index[paid].astype(np.int64) * (1 << 40) + customer[paid].astype(np.int64)
    pairs = pd.unique(keys)
    customers = np.bincount(pairs >> 40, minlength=n).astype(float)
    return np.column_stack([revenue, orders, aov, customers]).round(2)


def overview(orders: pd.DataFrame, excluded: Sequence[str]) -> Overview:
    """KPIs and the tutorial's order charts for already filtered orders."""
    found, latest = kpis(orders, excluded)
    earning = ~orders["status"].isin(list(excluded)).to_numpy()
    paid = orders.loc[earning, ["order_id", "total", "order_month", "shipping_city"]]
    monthly = paid.groupby("order_month", observed=True).agg(
        revenue=("total", "sum"), orders=("order_id", "size")
    )
    status = orders.groupby("status", observed=True).size().rename("orders")
    by_status = status.reindex([s for s in STATUSES if s in status.index]).reset_index()
    by_city = (
        paid.groupby("shipping_city", observed=True, dropna=False)
        .agg(revenue=("total", "sum"), orders=("order_id", "size"))
        .reset_index()
        .rename(columns={"shipping_city": "city"})
    )
    by_city["city"] = by_city["city"].astype(object).fillna("(unknown)")
    return Overview(
        rows=len(orders),
        kpis=found,
        latest_day=latest,
        monthly=_by_month(monthly.reset_index()),
        by_status=by_status,
        by_city=by_city.sort_values("revenue", ascending=False).reset_index(drop=True),
        heatmap=_heatmap(orders),
        insights=insights.order_insights(orders, excluded),
    )


def _by_month(monthly: pd.DataFrame) -> pd.DataFrame:
    monthly["order_month"] = monthly["order_month"].astype(str)  # categorical order is arbitrary
    return monthly.sort_values("order_month").reset_index(drop=True)


def _heatmap(orders: pd.DataFrame) -> pd.DataFrame:
    """Orders per weekday (rows, Monday first) and hour of day (columns 0-23)."""
    codes = pd.Categorical(orders["order_dow"], categories=list(S.WEEKDAYS)).codes
    weekday = codes.astype(np.int64)
    hour = orders["order_hour"].to_numpy(dtype=np.int64)
    ok = (weekday >= 0) & (hour >= 0) & (hour < 24)
    counts = np.bincount(weekday[ok] * 24 + hour[ok], minlength=7 * 24).reshape(7, 24)
    return pd.DataFrame(counts, index=list(S.WEEKDAYS), columns=range(24))


# -- gold views (pure) ---------------------------------------------------------------------
def daily_revenue_view(daily: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """Gold daily revenue of the selected categories and dates: the total ("All") first when
    no category is filtered out, then the categories in their usual order."""
    if filters.categories is not None:
        daily = daily[daily["category"].isin(filters.categories)]
    rank = {c: i for i, c in enumerate((S.ALL_CATEGORIES, *S.CATEGORIES))}
    df = _dated(daily, filters)
    df = df.assign(_rank=df["category"].map(rank).fillna(len(rank)))
    df = df.sort_values(["_rank", "category", "order_date"]).drop(columns="_rank")
    return df.reset_index(drop=True)


def anomalies_view(anomalies: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """Flagged days of the selected categories (and of "All" unless categories are filtered)."""
    if filters.categories is not None:
        anomalies = anomalies[anomalies["category"].isin(filters.categories)]
    return _dated(anomalies, filters).reset_index(drop=True)


def _dated(df: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    if filters.start is not None:
        df = df[df["order_date"] >= filters.start]
    if filters.end is not None:
        df = df[df["order_date"] <= filters.end]
    return df


# -- pipeline views ------------------------------------------------------------------------
def ledger_summary(ledger: pd.DataFrame) -> tuple[dict[str, int], dict[str, Any] | None]:
    """Batches per outcome, and the newest batch with its latency (read to ledger commit)."""
    outcomes = {str(k): int(v) for k, v in ledger["outcome"].value_counts().items()}
    if ledger.empty:
        return outcomes, None
    row = (
        ledger.iloc[-1]
        if ledger["finished_at"].is_monotonic_increasing
        else ledger.sort_values(["finished_at", "file_name"], kind="stable").iloc[-1]
    )
    latency = (row["finished_at"] - row["received_at"]).total_seconds()
    last = {"file": row["file_name"], "outcome": row["outcome"],
            "finished_at": row["finished_at"], "latency_s": round(latency, 2)}  # fmt: skip
    return outcomes, last


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
    )


def pass_rate(quality: pd.DataFrame, buckets: int = 40) -> pd.DataFrame:
    """Per bucket of validation time: the share of checks passed and of batches accepted
    (no failed quarantine-batch check)."""
    if quality.empty:
        cols = ["validated_at", "batches", "checks_passed", "batches_accepted"]
        return pd.DataFrame(columns=cols)
    ok = quality["success"].fillna(False).astype(bool)
    blocking = ~ok & (quality["policy"] == "quarantine-batch")
    per_batch = (
        quality.assign(_ok=ok, _blocking=blocking)
        .groupby(["batch_id", "source_file"])
        .agg(
            validated_at=("validated_at", "min"),
            checks=("_ok", "size"),
            passed=("_ok", "sum"),
            blocked=("_blocking", "any"),
        )
    )
    span = per_batch["validated_at"].max() - per_batch["validated_at"].min()
    freq = _round_freq(max(pd.Timedelta(seconds=1), span / buckets))
    g = per_batch.groupby(per_batch["validated_at"].dt.floor(freq))
    out = pd.DataFrame({
        "batches": g.size(),
        "checks_passed": g["passed"].sum() / g["checks"].sum() * 100,
        "batches_accepted": (1 - g["blocked"].mean()) * 100,
    })  # fmt: skip
    return out.reset_index()


def _round_freq(step: pd.Timedelta) -> str:
    for freq in ("1s", "10s", "1min", "5min", "15min", "1h", "6h", "1D", "7D"):
        if pd.Timedelta(freq) >= step:
            return freq
    return "30D"


def checks_summary(quality: pd.DataFrame) -> pd.DataFrame:
    """Runs, failures and pass rate per expectation, most failing first."""
    if quality.empty:
        return pd.DataFrame(columns=["expectation", "policy", "runs", "failed", "pass_rate"])
    failed = ~quality["success"].fillna(False).astype(bool)
    g = quality.assign(_failed=failed).groupby(["expectation", "policy"])["_failed"]
    out = pd.DataFrame({"runs": g.size(), "failed": g.sum().astype(int)})
    out["pass_rate"] = (1 - out["failed"] / out["runs"]) * 100
    out = out.reset_index().sort_values(["failed", "expectation"], ascending=[False, True])
    return out.reset_index(drop=True)

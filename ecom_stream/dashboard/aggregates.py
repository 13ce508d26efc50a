"""Pure aggregations of the frames the loaders return, vectorised for millions of orders."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from ecom_stream.contract import schema as S
from ecom_stream.dashboard.model import (
    KPI_LABELS,
    STATUSES,
    WINDOWS,
    DateWindow,
    Filters,
    Kpi,
    Overview,
)
from ecom_stream.transform import insights


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

"""The tutorial's exploratory analysis as pure functions over silver DataFrames.

Both functions return plain JSON-serialisable dicts (Python ints, floats and strings; None
instead of NaN) and only read the columns listed in ``PRODUCT_COLUMNS`` / ``ORDER_COLUMNS``, so
callers can read just those from the lake. Everything is vectorised (value counts, group-bys).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd

from ecom_stream.contract.schema import PRICE_TIERS, WEEKDAYS

__all__ = ["ORDER_COLUMNS", "PRODUCT_COLUMNS", "order_insights", "product_insights"]

PRODUCT_COLUMNS = ("product_id", "category", "price", "rating", "stock", "price_tier")
"""Silver product columns ``product_insights`` reads."""
ORDER_COLUMNS = (
    "order_id", "customer_id", "total", "status", "payment_method", "shipping_city",
    "order_month", "order_dow", "order_hour", "n_items",
)
"""Silver order columns ``order_insights`` reads."""

MISSING = "unknown"
"""Distribution key of null values (payment method, city, category)."""


def _float(value: Any) -> float | None:
    """A Python float, or None for null/NaN/inf."""
    if value is None or value is pd.NA:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _counts(values: pd.Series) -> dict[str, int]:
    """Value counts (nulls as ``"unknown"``), most frequent first, ties by name."""
    merged: dict[str, int] = {}
    for key, count in values.value_counts(dropna=True).items():
        merged[str(key)] = merged.get(str(key), 0) + int(count)
    missing = int(values.isna().sum())
    if missing:
        merged[MISSING] = merged.get(MISSING, 0) + missing
    return dict(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0])))


def product_insights(products: pd.DataFrame) -> dict[str, Any]:
    """Catalogue statistics of silver products (needs ``PRODUCT_COLUMNS``).

    Keys: ``count``; ``by_category`` (counts); ``price`` (mean, median, sample std, min, max);
    ``price_mean_by_category``; ``rating`` (mean of known ratings, share of null ratings);
    ``stock`` (total, number of products with zero stock); ``price_tiers`` (counts in tier
    order, zeros included). Empty input gives zeros and None.
    """
    price = products["price"].astype("float64")
    rating = products["rating"].astype("float64")
    stock = products["stock"].astype("Float64")
    n = len(products)
    mean_by_cat = price.groupby(products["category"].fillna(MISSING)).mean()
    tiers = products["price_tier"].value_counts()
    return {
        "count": n,
        "by_category": _counts(products["category"]),
        "price": {
            "mean": _float(price.mean()),
            "median": _float(price.median()),
            "std": _float(price.std()) if price.count() > 1 else None,
            "min": _float(price.min()),
            "max": _float(price.max()),
        },
        "price_mean_by_category": {str(k): _float(v) for k, v in sorted(mean_by_cat.items())},
        "rating": {
            "mean": _float(rating.mean()),
            "null_share": _float(rating.isna().mean()) if n else None,
        },
        "stock": {
            "total": int(stock.sum()),
            "zero_stock": int((stock == 0).sum()),
        },
        "price_tiers": {label: int(tiers.get(label, 0)) for _, label in PRICE_TIERS},
    }


def order_insights(
    orders: pd.DataFrame, excluded_statuses: Collection[str] = ("cancelled",)
) -> dict[str, Any]:
    """Sales statistics of silver orders (needs ``ORDER_COLUMNS``).

    Revenue figures and customer figures count only orders whose status is not in
    ``excluded_statuses`` ("revenue orders"); distributions and activity patterns count all
    orders. Keys: ``orders`` (all), ``revenue_orders``, ``revenue``, ``average_order_value``;
    ``status``, ``payment_method``, ``shipping_city`` (counts, nulls as ``"unknown"``);
    ``monthly`` ({"YYYY-MM": {"revenue", "orders"}} of revenue orders, by month);
    ``customers`` (unique, repeat = more than one revenue order, repeat_rate, and
    top_10pct_spend_threshold = 90th percentile of revenue per customer); ``busiest_weekday``
    and ``busiest_hour`` (ties: earliest), ``orders_by_weekday``; ``average_items_per_order``.
    Empty input gives zeros and None.

    """
    n = len(orders)
    earning = ~orders["status"].isin(list(excluded_statuses)).to_numpy(dtype=bool)
    paid = orders.loc[earning, ["customer_id", "total", "order_month"]]
    total = paid["total"].astype("float64")
    revenue = float(total.sum()) if len(paid) else 0.0

    dow = orders["order_dow"].value_counts()
    by_weekday = {d: int(dow.get(d, 0)) for d in WEEKDAYS}
    hours = orders["order_hour"].dropna().astype("int64").value_counts()
    busiest_day = max(WEEKDAYS, key=lambda d: by_weekday[d]) if dow.sum() else None
    busiest_hour = int(min(hours[hours == hours.max()].index)) if len(hours) else None

    return {
        "orders": n,
        "revenue_orders": int(earning.sum()),
        "revenue": revenue,
        "average_order_value": revenue / len(paid) if len(paid) else None,
        "status": _counts(orders["status"]),
        "payment_method": _counts(orders["payment_method"]),
        "shipping_city": _counts(orders["shipping_city"]),
        "monthly": _monthly(paid, total),
        "customers": _customers(paid, total),
        "busiest_weekday": busiest_day,
        "busiest_hour": busiest_hour,
        "orders_by_weekday": by_weekday,
        "average_items_per_order": _float(orders["n_items"].mean()) if n else None,
    }


def _monthly(paid: pd.DataFrame, total: pd.Series) -> dict[str, dict[str, Any]]:
    """Revenue and order count of the revenue orders per ``order_month``, by month."""
    if not len(paid):
        return {}
    by_month = total.groupby(paid["order_month"].fillna(MISSING)).agg(["sum", "size"])
    return {
        str(m): {"revenue": float(row["sum"]), "orders": int(row["size"])}
        for m, row in by_month.sort_index().iterrows()
    }


def _customers(paid: pd.DataFrame, total: pd.Series) -> dict[str, Any]:
    """Customer figures of the revenue orders (see ``order_insights``)."""
    spend = total.groupby(paid["customer_id"].to_numpy()).agg(["sum", "size"])
    customers = len(spend)
    repeat = int((spend["size"] > 1).sum())
    return {
        "unique": customers,
        "repeat": repeat,
        "repeat_rate": repeat / customers if customers else None,
        "top_10pct_spend_threshold": (
            float(np.quantile(spend["sum"].to_numpy(dtype=np.float64), 0.9))
            if customers else None
        ),
    }

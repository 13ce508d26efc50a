"""Shared pieces of the gold transforms: column lists, day numbers, grouped sums."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ecom_stream.errors import EcomStreamError

ORDER_COLUMNS = ("order_id", "total", "status", "order_date")
"""Silver order columns ``daily_revenue`` needs (``n_items`` is checked when present)."""
LINE_COLUMNS = ("order_id", "line_no", "product_id", "quantity")
"""Order line columns ``daily_revenue`` needs (``order_date`` is checked when present)."""
PRODUCT_COLUMNS = ("product_id", "price", "category")
"""Silver product columns ``daily_revenue`` needs."""
DAILY_COLUMNS = ("order_date", "category", "revenue", "revenue_cents", "orders", "units")
ANOMALY_COLUMNS = (
    "order_date", "category", "revenue", "rolling_mean", "rolling_std", "z_score", "is_anomaly",
)

_EPOCH = date(1970, 1, 1)
SAFE = float(2**62)  # int64 products below this cannot overflow


class GoldConsistencyError(EcomStreamError, AssertionError):
    """Silver inputs are inconsistent (duplicate keys, orphan or missing lines) or a gold
    invariant (cents add up) was violated. Never caused by ordinary bad data."""


# -- dates -----------------------------------------------------------------------------------
def day_numbers(values: Any) -> np.ndarray:
    """Days since 1970-01-01 (int64) of date objects, datetime64 values or Arrow dates."""
    if len(values) == 0:
        return np.empty(0, np.int64)
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
    if pa.types.is_timestamp(arr.type) or pa.types.is_date64(arr.type):
        arr = arr.cast(pa.date32())
    if not pa.types.is_date32(arr.type):
        raise TypeError(f"expected dates, got {arr.type}")
    if arr.null_count:
        raise GoldConsistencyError("null order_date")
    return np.asarray(arr.cast(pa.int32()).to_numpy(zero_copy_only=False), dtype=np.int64)


def day_number(value: date) -> int:
    """Days since 1970-01-01 of a date (or datetime / pandas Timestamp: its calendar day)."""
    return value.toordinal() - _EPOCH.toordinal()


def day_date(day: int) -> date:
    """The date of a day number (days since 1970-01-01)."""
    return _EPOCH + timedelta(days=int(day))


def day_dates(days: np.ndarray) -> pd.Series:
    """An object Series of ``datetime.date`` (what Arrow ``date32`` reads back as)."""
    arr = pa.array(np.asarray(days, dtype=np.int32), type=pa.int32()).cast(pa.date32())
    return pd.Series(arr.to_pandas(), dtype=object)


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise ``KeyError`` naming the ``columns`` that ``df`` (called ``what``) lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{what} lacks column(s): {', '.join(missing)}")


def _segments(sorted_keys: np.ndarray) -> np.ndarray:
    """Start positions of the runs of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.empty(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def group_sums(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Unique keys (sorted) and the exact int64 sums of each value array per key."""
    if len(keys) == 0:
        return keys.astype(np.int64), [np.empty(0, np.int64) for _ in values]
    lo, hi = int(keys.min()), int(keys.max())
    exact = all(np.abs(v.astype(np.float64)).sum() < 2.0**52 for v in values)
    if exact and hi - lo <= 4 * len(keys) + 1024:
        # Dense keys: bincount (float sums of integers below 2**52 are exact).
        shifted = keys - lo
        present = np.bincount(shifted, minlength=hi - lo + 1) > 0
        size = hi - lo + 1
        sums = [
            np.rint(np.bincount(shifted, weights=v, minlength=size)[present]).astype(np.int64)
            for v in values
        ]
        return np.flatnonzero(present).astype(np.int64) + lo, sums
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    starts = _segments(ks)
    return ks[starts], [np.add.reduceat(v[order], starts) for v in values]


# -- daily revenue ---------------------------------------------------------------------------

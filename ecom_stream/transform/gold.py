"""Gold transforms: daily revenue per category and revenue anomalies. Pure, no I/O.

``daily_revenue`` turns silver orders, order lines and products into one row per (day,
category) plus one ``"All"`` row per day, splitting every order's total over its lines in
integer cents so that categories always add up to ``"All"`` to the cent.

``anomalies`` scores each day of each category's calendar series against the ``window`` days
before it. Each day's statistics are computed from its own window values only, so a day scored
from a slice of the series is bit-identical to the same day scored from the whole series: this
is what lets the lake recompute only the days a change can reach.

``affected_dates_for_orders`` and ``anomaly_recompute_range`` say which days an incremental
update must recompute (see their docstrings for why each piece is needed).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.lib.stride_tricks import sliding_window_view

from ecom_stream.contract.schema import ALL_CATEGORIES, UNKNOWN_CATEGORY
from ecom_stream.errors import EcomStreamError

__all__ = [
    "ANOMALY_COLUMNS",
    "DAILY_COLUMNS",
    "LINE_COLUMNS",
    "ORDER_COLUMNS",
    "PRODUCT_COLUMNS",
    "AnomalyRange",
    "GoldConsistencyError",
    "affected_dates_for_orders",
    "anomalies",
    "anomaly_recompute_range",
    "category_first_dates",
    "daily_revenue",
    "newest_date",
]

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
_SAFE = float(2**62)  # int64 products below this cannot overflow


class GoldConsistencyError(EcomStreamError, AssertionError):
    """Silver inputs are inconsistent (duplicate keys, orphan or missing lines) or a gold
    invariant (cents add up) was violated. Never caused by ordinary bad data."""


# -- dates -----------------------------------------------------------------------------------
def _days(values: Any) -> np.ndarray:
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


def _day(value: date) -> int:
    """Days since 1970-01-01 of a date (or datetime / pandas Timestamp: its calendar day)."""
    return value.toordinal() - _EPOCH.toordinal()


def _date(day: int) -> date:
    return _EPOCH + timedelta(days=int(day))


def _dates(days: np.ndarray) -> pd.Series:
    """An object Series of ``datetime.date`` (what Arrow ``date32`` reads back as)."""
    arr = pa.array(np.asarray(days, dtype=np.int32), type=pa.int32()).cast(pa.date32())
    return pd.Series(arr.to_pandas(), dtype=object)


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{what} lacks column(s): {', '.join(missing)}")


def _segments(sorted_keys: np.ndarray) -> np.ndarray:
    """Start positions of the runs of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.empty(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _group_sums(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
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
def daily_revenue(
    orders: pd.DataFrame,
    lines: pd.DataFrame,
    products: pd.DataFrame,
    excluded_statuses: Collection[str] = ("cancelled",),
) -> pd.DataFrame:
    """Revenue, orders and units per (order_date, category), plus an ``"All"`` row per day.

    Needs ``ORDER_COLUMNS`` of ``orders``, ``LINE_COLUMNS`` of ``lines`` (every line of every
    order given; lines of excluded orders may be there or not) and ``PRODUCT_COLUMNS`` of
    ``products``. Orders whose status is in ``excluded_statuses`` count nowhere.

    Each order's total (in cents) is split over its lines in proportion to price (in cents)
    x quantity with the largest-remainder method, remainder cents going to the largest
    remainders, ties to the lowest ``line_no``. Lines of unknown products go to ``"Unknown"``
    and get no share when other lines have a price; an order without any priced line is split
    by quantity. A price below half a cent counts as no price. Missing product categories,
    and a category named ``"All"`` (reserved for the day total), are reported as ``"Unknown"``.

    Raises ``GoldConsistencyError`` on duplicate keys, lines without their order, orders
    without lines, or when the cents do not add up (per order and per day).
    """
    _require(orders, ORDER_COLUMNS, "orders")
    _require(lines, LINE_COLUMNS, "lines")
    _require(products, PRODUCT_COLUMNS, "products")

    # Orders, in order_id order; keep the revenue-earning ones.
    oid = orders["order_id"].to_numpy(dtype=np.int64)
    o_order = np.argsort(oid, kind="stable")
    oid = oid[o_order]
    if len(oid) > 1 and (oid[1:] == oid[:-1]).any():
        raise GoldConsistencyError("duplicate order_id in orders")
    excluded = orders["status"].isin(list(excluded_statuses)).to_numpy(dtype=bool)[o_order]
    kept = ~excluded
    o_day = _days(orders["order_date"])[o_order]
    total = orders["total"].to_numpy(dtype=np.float64)[o_order]
    if not np.isfinite(total[kept]).all():
        raise GoldConsistencyError("order without a total")
    too_big = kept & ~(np.abs(total) * 100 < _SAFE)
    if too_big.any():
        first = int(np.flatnonzero(too_big)[0])
        raise GoldConsistencyError(
            f"order {int(oid[first])} of {_date(o_day[first])} has a total of "
            f"{total[first]:g}, too large for exact cents in int64"
        )
    cents = np.where(kept, np.rint(np.where(kept, total, 0.0) * 100), 0).astype(np.int64)

    # Lines: attach each to its order (no join that could multiply rows).
    lid = lines["order_id"].to_numpy(dtype=np.int64)
    pos = pd.Index(oid).get_indexer(lid) if len(oid) else np.full(len(lid), -1)
    found = pos >= 0
    if not found.all():
        raise GoldConsistencyError(f"{int((~found).sum())} order line(s) without their order")
    keep_line = kept[pos]
    pos = pos[keep_line]
    line_no = lines["line_no"].to_numpy(dtype=np.int64)[keep_line]
    pid = lines["product_id"].to_numpy(dtype=np.int64)[keep_line]
    qty = lines["quantity"].to_numpy(dtype=np.int64)[keep_line]
    l_day = _days(lines["order_date"])[keep_line] if "order_date" in lines.columns else None
    top_line = int(line_no.max(initial=0)) + 1
    if len(oid) * float(top_line) < _SAFE and line_no.min(initial=0) >= 0:
        l_order = np.argsort(pos * top_line + line_no, kind="stable")
    else:
        l_order = np.lexsort((line_no, pos))
    pos, line_no, pid, qty = pos[l_order], line_no[l_order], pid[l_order], qty[l_order]

    # Compact index of kept orders; every kept order needs lines 1..n, each exactly once.
    k_of = np.cumsum(kept) - 1
    seg = k_of[pos]
    n_kept = int(kept.sum())
    day = o_day[kept]
    tot = cents[kept]
    if len(seg) > 1 and ((seg[1:] == seg[:-1]) & (line_no[1:] == line_no[:-1])).any():
        raise GoldConsistencyError("duplicate (order_id, line_no) in order lines")
    counts = np.bincount(seg, minlength=n_kept)
    if (counts == 0).any():
        raise GoldConsistencyError(f"{int((counts == 0).sum())} order(s) without lines")
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    if n_kept and ((line_no[starts] < 1) | (line_no[starts + counts - 1] != counts)).any():
        raise GoldConsistencyError("order line numbers are not 1..n_items")
    if "n_items" in orders.columns:
        n_items = orders["n_items"].to_numpy(dtype=np.int64)[o_order][kept]
        if (n_items != counts).any():
            raise GoldConsistencyError("order lines disagree with n_items")
    if l_day is not None and (l_day[l_order] != day[seg]).any():
        raise GoldConsistencyError("order line order_date differs from its order's")

    # Sums never wrap: every later sum (per order, per day, per category) is bounded by
    # these per-day sums of magnitudes.
    _check_day_sums(day, tot, "revenue in cents")
    _check_day_sums(day[seg], qty, "units")

    # Products: price and category of each line.
    cat_names, line_cat, price_cents, priced = _line_products(products, pid)

    # Weights: price cents x quantity; orders without any priced weight split by quantity.
    weight = np.where(priced, price_cents.astype(np.float64) * qty, 0.0)
    if n_kept and np.add.reduceat(weight, starts).max(initial=0.0) >= _SAFE:
        w: np.ndarray = np.where(priced, price_cents.astype(object) * qty.astype(object), 0)
    else:
        w = np.where(priced, price_cents * qty, 0).astype(np.int64)
    if n_kept:
        by_qty = (np.add.reduceat(w, starts) == 0)[seg]
        w = np.where(by_qty, qty, w)
    shares = _largest_remainder(tot, w, seg, starts, line_no)
    if n_kept and not np.array_equal(np.add.reduceat(shares, starts), tot):
        raise GoldConsistencyError("line shares do not add up to the order totals")

    # Per (day, category): cents, units, and orders with a line in the category.
    n_cat = len(cat_names)
    pair = seg * n_cat + line_cat
    u_pair, (_one,) = _group_sums(pair, np.ones(len(pair), np.int64))
    key = day[seg] * n_cat + line_cat
    u_key, (cat_cents, cat_units) = _group_sums(key, shares, qty)
    pair_key = day[u_pair // n_cat] * n_cat + u_pair % n_cat
    _, (cat_orders,) = _group_sums(pair_key, np.ones(len(pair_key), np.int64))

    # "All" per day.
    order_units = np.add.reduceat(qty, starts) if n_kept else np.empty(0, np.int64)
    u_day, (all_cents, all_orders, all_units) = _group_sums(
        day, tot, np.ones(n_kept, np.int64), order_units
    )
    check_days, (check_cents,) = _group_sums(u_key // n_cat, cat_cents)
    if not (np.array_equal(check_days, u_day) and np.array_equal(check_cents, all_cents)):
        raise GoldConsistencyError("category revenues do not add up to the day's revenue")

    names = np.array(cat_names, dtype=object)
    out = pd.DataFrame(
        {
            "_day": np.r_[u_key // n_cat, u_day].astype(np.int64),
            "category": np.r_[names[u_key % n_cat], np.full(len(u_day), ALL_CATEGORIES, object)],
            "revenue_cents": np.r_[cat_cents, all_cents].astype(np.int64),
            "orders": np.r_[cat_orders, all_orders].astype(np.int64),
            "units": np.r_[cat_units, all_units].astype(np.int64),
        }
    )
    out["category"] = out["category"].astype(str)
    out = out.sort_values(["_day", "category"], kind="stable", ignore_index=True)
    out.insert(0, "order_date", _dates(out["_day"].to_numpy()))
    out.insert(2, "revenue", out["revenue_cents"].to_numpy() / 100)
    return out.drop(columns="_day")[list(DAILY_COLUMNS)]


def _check_day_sums(days: np.ndarray, values: np.ndarray, what: str) -> None:
    """Raise ``GoldConsistencyError`` naming the day when a day's sum of ``|values|`` could
    leave int64 (summed in float64 first; one pass when the whole sum is small)."""
    mag = np.abs(values.astype(np.float64))
    if float(mag.sum()) < _SAFE:
        return
    u_days, inverse = np.unique(days, return_inverse=True)
    sums = np.bincount(inverse.reshape(-1), weights=mag, minlength=len(u_days))
    bad = np.flatnonzero(sums >= _SAFE)
    if len(bad):
        raise GoldConsistencyError(
            f"{what} of {_date(u_days[bad[0]])} add up to about {sums[bad[0]]:.3g}, "
            "beyond what int64 holds exactly; gold refuses to wrap around"
        )


def _line_products(
    products: pd.DataFrame, pid: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Category names, and per line: category code, price in cents and whether it is priced."""
    p_id = products["product_id"].to_numpy(dtype=np.int64)
    p_order = np.argsort(p_id, kind="stable")
    p_id = p_id[p_order]
    if len(p_id) > 1 and (p_id[1:] == p_id[:-1]).any():
        raise GoldConsistencyError("duplicate product_id in products")
    category = products["category"].astype(object).to_numpy()[p_order]
    reserved = pd.isna(category) | (category == ALL_CATEGORIES)
    category = np.where(reserved, UNKNOWN_CATEGORY, category).astype(str)
    price = products["price"].to_numpy(dtype=np.float64, na_value=np.nan)[p_order]
    cat_names, p_cat = np.unique(np.r_[category, [UNKNOWN_CATEGORY]], return_inverse=True)
    unknown_code = p_cat[-1]
    idx = pd.Index(p_id).get_indexer(pid) if len(p_id) else np.full(len(pid), -1)
    known = idx >= 0
    idx = np.where(known, idx, 0)
    line_cat = np.where(known, p_cat[:-1][idx] if len(p_id) else unknown_code, unknown_code)
    line_price = np.where(known, price[idx] if len(p_id) else np.nan, np.nan)
    price_cents = np.rint(np.where(np.isfinite(line_price), line_price, 0.0) * 100)
    priced = (price_cents >= 1) & (price_cents < _SAFE)
    price_cents = np.where(priced, price_cents, 0).astype(np.int64)
    return [str(c) for c in cat_names], line_cat.astype(np.int64), price_cents, priced


def _largest_remainder(
    totals: np.ndarray, weights: np.ndarray, seg: np.ndarray, starts: np.ndarray,
    line_no: np.ndarray,
) -> np.ndarray:
    """Split ``totals[k]`` over the lines of segment ``k`` in proportion to ``weights``.

    Exact integer arithmetic (int64, or Python ints when int64 could overflow); remainder
    units go to the largest remainders, ties to the lowest ``line_no``.
    """
    if len(seg) == 0:
        return np.empty(0, np.int64)
    whole_f = np.add.reduceat(np.abs(weights.astype(np.float64)), starts)
    big = weights.dtype == object or (
        max(np.abs(totals.astype(np.float64)).max(initial=0.0), 1.0)
        * whole_f.max(initial=0.0) >= _SAFE
    )
    if big:
        w = weights.astype(object)
        t = totals.astype(object)
    else:
        w = weights.astype(np.int64)
        t = totals.astype(np.int64)
    whole = np.add.reduceat(w, starts)
    num = t[seg] * w
    q = num // whole[seg]
    r = num % whole[seg]
    left = (t - np.add.reduceat(q, starts)).astype(np.int64)
    # Only lines of orders with remainder units left need ranking (lines come in
    # (order, line_no) order, so a stable sort by remainder breaks ties by line_no).
    todo = np.flatnonzero(left[seg] > 0)
    bonus = np.zeros(len(seg), np.int64)
    if len(todo):
        if big:
            ranked = sorted(todo.tolist(), key=lambda i: (seg[i], -r[i], line_no[i]))
            order = np.array(ranked, dtype=np.int64)
        else:
            # One int64 key (order, then remainder descending) when it fits; lines are in
            # (order, line_no) order, so a stable sort breaks remainder ties by line_no.
            span = int(whole.max()) + 1
            if (int(seg[-1]) + 1) * float(span) < _SAFE:
                key = seg[todo] * span + (span - 1 - r[todo])
                order = todo[np.argsort(key, kind="stable")]
            else:
                order = todo[np.lexsort((line_no[todo], -r[todo], seg[todo]))]
        first = np.r_[0, np.flatnonzero(seg[order][1:] != seg[order][:-1]) + 1]
        run = np.repeat(first, np.diff(np.r_[first, len(order)]))
        bonus[order] = (np.arange(len(order)) - run) < left[seg[order]]
    return (q + bonus).astype(np.int64)


# -- anomalies -------------------------------------------------------------------------------
def category_first_dates(daily: pd.DataFrame) -> dict[str, date]:
    """Each category's first ``order_date`` in a (whole) daily revenue table."""
    if daily.empty:
        return {}
    days = _days(daily["order_date"])
    cats = daily["category"].astype(str).to_numpy()
    firsts = pd.Series(days).groupby(cats).min()
    return {str(c): _date(d) for c, d in firsts.items()}


def newest_date(daily: pd.DataFrame) -> date | None:
    """The newest ``order_date`` of a (whole) daily revenue table, None when empty."""
    return None if daily.empty else _date(int(_days(daily["order_date"]).max()))


def anomalies(
    daily: pd.DataFrame,
    *,
    window: int = 30,
    min_history: int = 7,
    threshold: float = 2.0,
    start: date | None = None,
    end: date | None = None,
    first_dates: Mapping[str, date] | None = None,
    newest: date | None = None,
) -> pd.DataFrame:
    """Anomaly scores (``ANOMALIES_SCHEMA`` columns) of the days in [start, end] (None: open).

    Each category's series runs over calendar days from its first date to the newest date
    of the whole table (days without a row are 0). A day is scored against the mean and
    sample standard deviation of the ``window`` days before it (never itself), once at least
    ``min_history`` of them are in the series; it is an anomaly when
    |revenue - mean| > threshold x std. Unscored days and days with std 0 have null z-scores
    and are not flagged.

    ``daily`` may be the whole daily revenue table, or a slice of it holding at least every
    row with order_date in [start - window, end]; a slice needs ``first_dates`` (every
    category's first date in the whole table) and ``newest`` (its newest date), which are
    otherwise taken from ``daily``. A day's values depend only on its own window, so they are
    bit-identical whichever valid slice they are computed from.
    """
    if window < 1 or min_history < 1:
        raise ValueError("need window >= 1 and min_history >= 1")
    if min_history > window:
        raise ValueError("min_history > window: no day could ever be scored")
    _require(daily, ("order_date", "category"), "daily")
    days = _days(daily["order_date"])
    cat_col = daily["category"].astype(str).to_numpy()
    if "revenue_cents" in daily.columns:
        cents = daily["revenue_cents"].to_numpy(dtype=np.int64)
    else:
        cents = np.rint(daily["revenue"].to_numpy(dtype=np.float64) * 100).astype(np.int64)
    firsts = dict(first_dates) if first_dates is not None else _first_days(days, cat_col)
    firsts = {str(c): d if isinstance(d, int) else _day(d) for c, d in firsts.items()}
    if newest is not None:
        top = _day(newest)
    elif len(days):
        top = int(days.max())
    else:
        return _empty_anomalies()
    unknown = set(np.unique(cat_col).tolist()) - set(firsts)
    if unknown:
        raise ValueError(f"first_dates lacks categories {sorted(unknown)}")
    if not firsts:
        return _empty_anomalies()
    cats = sorted(firsts)
    first = np.array([firsts[c] for c in cats], dtype=np.int64)
    lo = int(first.min()) if start is None else max(int(first.min()), _day(start))
    hi = top if end is None else min(top, _day(end))
    if lo > hi:
        return _empty_anomalies()

    rows = pd.Categorical(cat_col, categories=cats).codes.astype(np.int64)
    if len(days) and ((days < first[rows]) | (days > top)).any():
        raise ValueError("daily has rows before their category's first date or after newest")
    # Only the rows that can reach the output days (a slice's cost stays the slice's).
    near = (days >= lo - window) & (days <= hi)
    days, rows, cents = days[near], rows[near], cents[near]
    if len(np.unique(rows * (hi + 1 - (lo - window)) + (days - (lo - window)))) != len(days):
        raise ValueError("daily has duplicate (order_date, category) rows")
    if len(cents) and float(np.abs(cents).max()) * window >= _SAFE:
        worst = int(np.argmax(np.abs(cents)))
        raise GoldConsistencyError(
            f"daily revenue of {_date(days[worst])} ({int(cents[worst])} cents) is too large "
            f"to sum over a {window}-day window in int64; gold refuses to wrap around"
        )
    order = np.argsort(days, kind="stable")
    days, rows, cents = days[order], rows[order], cents[order]
    scorer = _Scorer(days, rows, cents, first, window, min_history, threshold)
    parts = [scorer.score(a, b) for a, b in _live_spans(days, window, lo, hi)]
    if not parts:
        return _empty_anomalies()
    di = np.concatenate([p[0] for p in parts])
    ci = np.concatenate([p[1] for p in parts])
    stats = [np.concatenate([p[2][k] for p in parts]) for k in range(5)]
    return pd.DataFrame(
        {
            "order_date": _dates(di),
            "category": pd.Series(np.array(cats, dtype=object)[ci], dtype=str),
            "revenue": stats[0] / 100,
            "rolling_mean": stats[1] / 100,
            "rolling_std": stats[2] / 100,
            "z_score": stats[3],
            "is_anomaly": stats[4].astype(bool),
        }
    )


def _live_spans(days: np.ndarray, window: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The runs of days in [lo, hi] that have a day holding data (``days``, sorted) among
    themselves and the ``window`` days before them.

    Any other day is 0 and so is its whole window: it would only ever be stored as an
    unflagged zero row, so it is left out. This bounds gold by the days that hold data
    (at most ``window + 1`` rows per category per such day), however far apart two dates
    are (an order of year 1 and one of year 9999 in silver).
    """
    d = np.unique(days)
    if not len(d):
        return []
    breaks = np.flatnonzero(d[1:] > d[:-1] + window + 1) + 1
    starts = d[np.r_[0, breaks]]
    ends = d[np.r_[breaks - 1, len(d) - 1]] + window
    return [
        (max(int(a), lo), min(int(b), hi))
        for a, b in zip(starts, ends, strict=True)
        if max(int(a), lo) <= min(int(b), hi)
    ]


@dataclass(frozen=True)
class _Scorer:
    """Scores runs of days of every category (rows sorted by day)."""

    days: np.ndarray
    rows: np.ndarray
    cents: np.ndarray
    first: np.ndarray
    window: int
    min_history: int
    threshold: float

    def score(
        self, lo: int, hi: int
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        """Days, category codes and (revenue, mean, std, z, flag) of days lo..hi, day-major."""
        window, first = self.window, self.first
        # Dense grid: categories x days [g0 - window, hi]; column j + window is day g0 + j.
        g0 = max(int(first.min()), lo - window)
        n = hi - g0 + 1
        grid = np.zeros((len(first), n + window), np.int64)
        i, j = np.searchsorted(self.days, [g0, hi + 1])
        flat = self.rows[i:j] * grid.shape[1] + (self.days[i:j] - g0 + window)
        grid.ravel()[flat] = self.cents[i:j]
        col_days = np.arange(g0 - window, hi + 1, dtype=np.int64)
        valid = col_days[None, :] >= first[:, None]

        # Windows of the output days only: days lo..hi are grid columns lo-g0+window ...
        j0 = lo - g0
        win = sliding_window_view(grid, window, axis=1)[:, j0 : j0 + hi - lo + 1]
        win_ok = sliding_window_view(valid, window, axis=1)[:, j0 : j0 + hi - lo + 1]
        x = grid[:, window + j0 : window + j0 + hi - lo + 1]
        exists = valid[:, window + j0 : window + j0 + hi - lo + 1]
        count = win_ok.sum(axis=-1)
        sums = np.where(win_ok, win, 0).sum(axis=-1)  # exact int64, order-free
        scored = exists & (count >= self.min_history)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(scored, sums / np.maximum(count, 1), np.nan)
            # Sum of squared deviations in a fixed order (window position 0..window-1): the
            # result depends only on the day's own window, never on where the grid starts.
            acc = np.zeros(mean.shape, np.float64)
            for k in range(window):
                dev = np.where(win_ok[..., k], win[..., k] - mean, 0.0)
                acc += dev * dev
            std = np.where(
                scored & (count >= 2), np.sqrt(acc / np.maximum(count - 1, 1)), np.nan
            )
            diff = x - mean
            usable = scored & (std > 0)
            z = np.where(usable, diff / np.where(usable, std, 1.0), np.nan)
            flag = usable & (np.abs(diff) > self.threshold * np.where(usable, std, 0.0))

        di, ci = np.nonzero(exists.T)  # day-major: sorted by order_date, then category name
        return lo + di, ci, (x[ci, di], mean[ci, di], std[ci, di], z[ci, di], flag[ci, di])


def _first_days(days: np.ndarray, cats: np.ndarray) -> dict[str, int]:
    if len(days) == 0:
        return {}
    firsts = pd.Series(days).groupby(cats).min()
    return {str(c): int(d) for c, d in firsts.items()}


def _empty_anomalies() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_date": pd.Series([], dtype=object),
            "category": pd.Series([], dtype=str),
            "revenue": pd.Series([], dtype=np.float64),
            "rolling_mean": pd.Series([], dtype=np.float64),
            "rolling_std": pd.Series([], dtype=np.float64),
            "z_score": pd.Series([], dtype=np.float64),
            "is_anomaly": pd.Series([], dtype=bool),
        }
    )


# -- incremental helpers ---------------------------------------------------------------------
def affected_dates_for_orders(
    incoming: pd.DataFrame,
    stored: pd.DataFrame,
    excluded_statuses: Collection[str] | None = None,
) -> set[date]:
    """Days whose daily revenue can change when ``incoming`` orders replace ``stored`` ones.

    ``incoming``: the winning new versions (order_id, order_date, status, total, product_ids,
    quantities), one per order_id. ``stored``: the current silver rows of those ids (ids
    not yet stored are new; extra stored ids are ignored).

    A new order affects its date. A changed order affects its old and its new date when
    anything gold reads changed: date, total (in cents), lines (products, quantities and
    their order, which decides remainder ties) or status. With ``excluded_statuses`` given,
    orders with an excluded status contribute nothing, so moves between two excluded or two
    non-excluded statuses do not matter and new excluded orders affect no date (the gold
    tables then have to be rebuilt if that setting changes). Re-sent identical orders affect
    nothing.
    """
    cols = ("order_id", "order_date", "status", "total", "product_ids", "quantities")
    _require(incoming, cols, "incoming")
    if incoming.empty:
        return set()
    new_id = incoming["order_id"].to_numpy(dtype=np.int64)
    if len(np.unique(new_id)) != len(new_id):
        raise ValueError("incoming has duplicate order_id")
    if not stored.empty:
        _require(stored, cols, "stored")
        old_id_all = stored["order_id"].to_numpy(dtype=np.int64)
        if len(np.unique(old_id_all)) != len(old_id_all):
            raise ValueError("stored has duplicate order_id")
        stored = stored[np.isin(old_id_all, new_id)]
    old_id = stored["order_id"].to_numpy(dtype=np.int64) if not stored.empty else new_id[:0]
    # Position of each incoming order's stored version (-1: new order).
    old_pos = pd.Index(old_id).get_indexer(new_id) if len(old_id) else np.full(len(new_id), -1)
    has_old = old_pos >= 0

    new_day = _days(incoming["order_date"])
    new_status = incoming["status"].astype(object).to_numpy()
    new_cents = np.rint(incoming["total"].to_numpy(dtype=np.float64) * 100)
    m = has_old
    op = old_pos[m]
    old_day = np.zeros(len(new_id), np.int64)
    old_status = np.full(len(new_id), None, dtype=object)
    old_cents = np.full(len(new_id), np.nan)
    if m.any():
        old_day[m] = _days(stored["order_date"])[op]
        old_status[m] = stored["status"].astype(object).to_numpy()[op]
        old_cents[m] = np.rint(stored["total"].to_numpy(dtype=np.float64)[op] * 100)

    if excluded_statuses is None:
        new_on = np.ones(len(new_id), bool)
        old_on = has_old.copy()
        status_changed = new_status != old_status
    else:
        ex = list(excluded_statuses)
        new_on = ~pd.Series(new_status).isin(ex).to_numpy()
        old_on = has_old & ~pd.Series(old_status).isin(ex).to_numpy()
        status_changed = np.zeros(len(new_id), bool)

    same_lines = np.zeros(len(new_id), bool)
    if m.any():
        same_lines[m] = _lists_equal(
            incoming["product_ids"][m], stored["product_ids"].iloc[op]
        ) & _lists_equal(incoming["quantities"][m], stored["quantities"].iloc[op])
    same_cents = (new_cents == old_cents) | (np.isnan(new_cents) & np.isnan(old_cents))
    unchanged = (
        has_old & (new_on == old_on) & (new_day == old_day) & same_cents & same_lines
        & ~status_changed
    )
    days = np.r_[new_day[new_on & ~unchanged], old_day[old_on & ~unchanged]]
    return {_date(d) for d in np.unique(days)}


def _lists_equal(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Row-wise equality of two Series of integer lists (lists, arrays or None)."""
    la, fa = _flat(a)
    lb, fb = _flat(b)
    same = la == lb
    n = np.where(same & (la > 0), la, 0)
    if n.sum():
        row = np.repeat(np.arange(len(n)), n)
        offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        sa = (np.cumsum(np.maximum(la, 0)) - np.maximum(la, 0))[row] + offset
        sb = (np.cumsum(np.maximum(lb, 0)) - np.maximum(lb, 0))[row] + offset
        differs = np.bincount(row[fa[sa] != fb[sb]], minlength=len(n)) > 0
        same &= ~differs
    return same


def _flat(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Lengths (-1 for null) and flattened values of a Series of integer lists."""
    if len(values) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    arr = pa.array(values.to_numpy(dtype=object), type=pa.list_(pa.int64()), from_pandas=True)
    lengths = pc.fill_null(pc.list_value_length(arr), -1).to_numpy().astype(np.int64)
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    return lengths, flat


@dataclass(frozen=True)
class AnomalyRange:
    """What an incremental anomaly refresh must rewrite.

    Replace every stored anomaly row with ``start <= order_date <= delete_until`` by
    ``anomalies(new_daily, start=start, end=end, ...)``. ``end`` is never after the new newest
    date and may be before ``start`` (nothing to score, only rows to delete);
    ``delete_until >= end`` also covers rows that must disappear (the newest date moved back,
    a category vanished).
    """

    start: date
    end: date
    delete_until: date

    @property
    def delete_after(self) -> date | None:
        """Rows after this day (up to ``delete_until``) are deleted, not rescored."""
        return self.end if self.delete_until > self.end else None


def anomaly_recompute_range(
    affected: Iterable[date],
    old_newest: date | None,
    new_newest: date | None,
    old_first: Mapping[str, date],
    new_first: Mapping[str, date],
    window: int,
) -> AnomalyRange | None:
    """The smallest single range of days whose anomaly rows can differ, or None.

    ``affected``: the days whose daily revenue rows were recomputed; ``old_*`` / ``new_*``:
    newest date and per-category first dates of daily revenue before / after. Why each part:

    * a changed day ``a`` is the scored value of ``a`` and in the window of the ``window``
      days after it: [a, a + window];
    * a category's series starts at its first date: if it moved, the rows between old and
      new first date appear or disappear, and the history (count of prior days) of the
      ``window`` days after the later of the two changes: [min, max + window - 1];
    * a new category has rows (zeros included) up to the newest date: [first, new_newest];
      a vanished one loses all its rows: [first, old_newest];
    * when the newest date moves forward every category gains the days
      old_newest + 1 .. new_newest (zero days, not in ``affected``); when it moves back, the
      rows of new_newest + 1 .. old_newest must be deleted (``delete_until``).

    Rows after the newer of the two newest dates never exist, so everything is clipped there.
    """
    spans: list[tuple[int, int]] = [(_day(a), _day(a) + window) for a in affected]
    for cat in set(old_first) | set(new_first):
        o, n = old_first.get(cat), new_first.get(cat)
        if o == n:
            continue
        if o is None and n is not None:
            spans.append((_day(n), _day(new_newest) if new_newest is not None else _day(n)))
        elif n is None and o is not None:
            spans.append((_day(o), _day(old_newest) if old_newest is not None else _day(o)))
        elif o is not None and n is not None:
            spans.append((min(_day(o), _day(n)), max(_day(o), _day(n)) + window - 1))
    old_top = _day(old_newest) if old_newest is not None else None
    new_top = _day(new_newest) if new_newest is not None else None
    if new_top is not None and (old_top is None or new_top > old_top):
        spans.append(((old_top + 1) if old_top is not None else new_top, new_top))
    if old_top is not None and (new_top is None or new_top < old_top):
        spans.append(((new_top + 1) if new_top is not None else old_top, old_top))
    tops = [t for t in (old_top, new_top) if t is not None]
    if not spans or not tops:
        return None
    start = min(s for s, _ in spans)
    until = min(max(e for _, e in spans), max(tops))
    if start > until:
        return None
    end = min(until, new_top) if new_top is not None else start - 1
    return AnomalyRange(start=_date(start), end=_date(end), delete_until=_date(until))

"""``daily_revenue``: silver orders, lines and products -> one row per (day, category)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecom_stream.contract.schema import ALL_CATEGORIES, UNKNOWN_CATEGORY
from ecom_stream.transform.gold.common import (
    DAILY_COLUMNS,
    LINE_COLUMNS,
    ORDER_COLUMNS,
    PRODUCT_COLUMNS,
    SAFE,
    GoldConsistencyError,
    day_date,
    day_dates,
    day_numbers,
    group_sums,
    require_columns,
)


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
    require_columns(orders, ORDER_COLUMNS, "orders")
    require_columns(lines, LINE_COLUMNS, "lines")
    require_columns(products, PRODUCT_COLUMNS, "products")
    kept = _kept_orders(orders, lines, excluded_statuses)
    # Sums never wrap: every later sum (per order, per day, per category) is bounded by
    # these per-day sums of magnitudes.
    _check_day_sums(kept.day, kept.tot, "revenue in cents")
    _check_day_sums(kept.day[kept.seg], kept.qty, "units")
    cat_names, line_cat, price_cents, priced = _line_products(products, kept.pid)
    shares = _line_shares(kept, price_cents, priced)
    return _daily_rows(kept, cat_names, line_cat, shares)


@dataclass(frozen=True)
class _Kept:
    """The revenue-earning orders (in order_id order) and their lines, in (order, line_no)
    order: per order its day and total in cents, per line its order's index ``seg``."""

    day: np.ndarray
    tot: np.ndarray
    starts: np.ndarray  # position of each order's first line
    seg: np.ndarray
    line_no: np.ndarray
    pid: np.ndarray
    qty: np.ndarray

    @property
    def n(self) -> int:
        return len(self.day)


def _sorted_orders(
    orders: pd.DataFrame, excluded_statuses: Collection[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Orders in order_id order: ids, the sort order, which earn revenue, days and totals in
    cents (0 when excluded). Raises on duplicate ids and totals missing or too large."""
    oid = orders["order_id"].to_numpy(dtype=np.int64)
    o_order = np.argsort(oid, kind="stable")
    oid = oid[o_order]
    if len(oid) > 1 and (oid[1:] == oid[:-1]).any():
        raise GoldConsistencyError("duplicate order_id in orders")
    excluded = orders["status"].isin(list(excluded_statuses)).to_numpy(dtype=bool)[o_order]
    kept = ~excluded
    o_day = day_numbers(orders["order_date"])[o_order]
    total = orders["total"].to_numpy(dtype=np.float64)[o_order]
    if not np.isfinite(total[kept]).all():
        raise GoldConsistencyError("order without a total")
    too_big = kept & ~(np.abs(total) * 100 < SAFE)
    if too_big.any():
        first = int(np.flatnonzero(too_big)[0])
        raise GoldConsistencyError(
            f"order {int(oid[first])} of {day_date(o_day[first])} has a total of "
            f"{total[first]:g}, too large for exact cents in int64"
        )
    cents = np.where(kept, np.rint(np.where(kept, total, 0.0) * 100), 0).astype(np.int64)
    return oid, o_order, kept, o_day, cents


def _sorted_lines(
    lines: pd.DataFrame, oid: np.ndarray, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Lines of kept orders in (order, line_no) order: their order's position in ``oid``,
    line_no, product_id, quantity and order_date (None when lines have none). Each line is
    attached to its order by position (no join that could multiply rows)."""
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
    l_day = day_numbers(lines["order_date"])[keep_line] if "order_date" in lines.columns else None
    top_line = int(line_no.max(initial=0)) + 1
    if len(oid) * float(top_line) < SAFE and line_no.min(initial=0) >= 0:
        l_order = np.argsort(pos * top_line + line_no, kind="stable")
    else:
        l_order = np.lexsort((line_no, pos))
    l_day = l_day[l_order] if l_day is not None else None
    return pos[l_order], line_no[l_order], pid[l_order], qty[l_order], l_day


def _kept_orders(
    orders: pd.DataFrame, lines: pd.DataFrame, excluded_statuses: Collection[str]
) -> _Kept:
    """The kept orders with their lines; every kept order needs lines 1..n, each exactly once
    (and as many as its ``n_items``, on its ``order_date``, when those columns are given)."""
    oid, o_order, kept, o_day, cents = _sorted_orders(orders, excluded_statuses)
    pos, line_no, pid, qty, l_day = _sorted_lines(lines, oid, kept)
    # Compact index of kept orders.
    seg = (np.cumsum(kept) - 1)[pos]
    n_kept = int(kept.sum())
    day = o_day[kept]
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
    if l_day is not None and (l_day != day[seg]).any():
        raise GoldConsistencyError("order line order_date differs from its order's")
    return _Kept(day, cents[kept], starts, seg, line_no, pid, qty)


def _line_shares(kept: _Kept, price_cents: np.ndarray, priced: np.ndarray) -> np.ndarray:
    """Each line's cents of its order's total, weighted by price cents x quantity (orders
    without any priced line by quantity); raises when they do not add up."""
    qty, seg, starts = kept.qty, kept.seg, kept.starts
    weight = np.where(priced, price_cents.astype(np.float64) * qty, 0.0)
    if kept.n and np.add.reduceat(weight, starts).max(initial=0.0) >= SAFE:
        w: np.ndarray = np.where(priced, price_cents.astype(object) * qty.astype(object), 0)
    else:
        w = np.where(priced, price_cents * qty, 0).astype(np.int64)
    if kept.n:
        by_qty = (np.add.reduceat(w, starts) == 0)[seg]
        w = np.where(by_qty, qty, w)
    shares = _largest_remainder(kept.tot, w, seg, starts, kept.line_no)
    if kept.n and not np.array_equal(np.add.reduceat(shares, starts), kept.tot):
        raise GoldConsistencyError("line shares do not add up to the order totals")
    return shares


def _daily_rows(
    kept: _Kept, cat_names: list[str], line_cat: np.ndarray, shares: np.ndarray
) -> pd.DataFrame:
    """The daily revenue table: per (day, category) cents, units and orders with a line in
    the category, plus the day's ``"All"`` row; raises when categories miss a cent."""
    day, seg, qty = kept.day, kept.seg, kept.qty
    n_cat = len(cat_names)
    pair = seg * n_cat + line_cat
    u_pair, (_one,) = group_sums(pair, np.ones(len(pair), np.int64))
    key = day[seg] * n_cat + line_cat
    u_key, (cat_cents, cat_units) = group_sums(key, shares, qty)
    pair_key = day[u_pair // n_cat] * n_cat + u_pair % n_cat
    _, (cat_orders,) = group_sums(pair_key, np.ones(len(pair_key), np.int64))

    # "All" per day.
    order_units = np.add.reduceat(qty, kept.starts) if kept.n else np.empty(0, np.int64)
    u_day, (all_cents, all_orders, all_units) = group_sums(
        day, kept.tot, np.ones(kept.n, np.int64), order_units
    )
    check_days, (check_cents,) = group_sums(u_key // n_cat, cat_cents)
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
    out.insert(0, "order_date", day_dates(out["_day"].to_numpy()))
    out.insert(2, "revenue", out["revenue_cents"].to_numpy() / 100)
    return out.drop(columns="_day")[list(DAILY_COLUMNS)]


def _check_day_sums(days: np.ndarray, values: np.ndarray, what: str) -> None:
    """Raise ``GoldConsistencyError`` naming the day when a day's sum of ``|values|`` could
    leave int64 (summed in float64 first; one pass when the whole sum is small)."""
    mag = np.abs(values.astype(np.float64))
    if float(mag.sum()) < SAFE:
        return
    u_days, inverse = np.unique(days, return_inverse=True)
    sums = np.bincount(inverse.reshape(-1), weights=mag, minlength=len(u_days))
    bad = np.flatnonzero(sums >= SAFE)
    if len(bad):
        raise GoldConsistencyError(
            f"{what} of {day_date(u_days[bad[0]])} add up to about {sums[bad[0]]:.3g}, "
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
    priced = (price_cents >= 1) & (price_cents < SAFE)
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
        * whole_f.max(initial=0.0) >= SAFE
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
            if (int(seg[-1]) + 1) * float(span) < SAFE:
                key = seg[todo] * span + (span - 1 - r[todo])
                order = todo[np.argsort(key, kind="stable")]
            else:
                order = todo[np.lexsort((line_no[todo], -r[todo], seg[todo]))]
        first = np.r_[0, np.flatnonzero(seg[order][1:] != seg[order][:-1]) + 1]
        run = np.repeat(first, np.diff(np.r_[first, len(order)]))
        bonus[order] = (np.arange(len(order)) - run) < left[seg[order]]
    return (q + bonus).astype(np.int64)



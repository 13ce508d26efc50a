"""``affected_dates_for_orders``: which days an order change can reach."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ecom_stream.transform.gold.common import (
    day_date,
    day_numbers,
    require_columns,
)

# -- incremental helpers ---------------------------------------------------------------------
# The order columns whose change can reach gold.
_ORDER_FIELDS = ("order_id", "order_date", "status", "total", "product_ids", "quantities")


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
    require_columns(incoming, _ORDER_FIELDS, "incoming")
    if incoming.empty:
        return set()
    stored, old_pos = _stored_versions(incoming, stored)
    has_old = old_pos >= 0
    op = old_pos[has_old]
    new_day = day_numbers(incoming["order_date"])
    new_status = incoming["status"].astype(object).to_numpy()
    new_cents = np.rint(incoming["total"].to_numpy(dtype=np.float64) * 100)
    old_day, old_status, old_cents = _old_values(stored, old_pos)
    new_on, old_on, status_changed = _counted(new_status, old_status, has_old, excluded_statuses)
    same_lines = np.zeros(len(old_pos), bool)
    if has_old.any():
        same_lines[has_old] = _lists_equal(
            incoming["product_ids"][has_old], stored["product_ids"].iloc[op]
        ) & _lists_equal(incoming["quantities"][has_old], stored["quantities"].iloc[op])
    same_cents = (new_cents == old_cents) | (np.isnan(new_cents) & np.isnan(old_cents))
    unchanged = (
        has_old & (new_on == old_on) & (new_day == old_day) & same_cents & same_lines
        & ~status_changed
    )
    days = np.r_[new_day[new_on & ~unchanged], old_day[old_on & ~unchanged]]
    return {day_date(d) for d in np.unique(days)}


def _stored_versions(
    incoming: pd.DataFrame, stored: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray]:
    """The stored rows of the incoming ids, and per incoming order the position of its stored
    version among them (-1: a new order); raises on duplicate ids on either side."""
    new_id = incoming["order_id"].to_numpy(dtype=np.int64)
    if len(np.unique(new_id)) != len(new_id):
        raise ValueError("incoming has duplicate order_id")
    if not stored.empty:
        require_columns(stored, _ORDER_FIELDS, "stored")
        old_id_all = stored["order_id"].to_numpy(dtype=np.int64)
        if len(np.unique(old_id_all)) != len(old_id_all):
            raise ValueError("stored has duplicate order_id")
        stored = stored[np.isin(old_id_all, new_id)]
    old_id = stored["order_id"].to_numpy(dtype=np.int64) if not stored.empty else new_id[:0]
    old_pos = pd.Index(old_id).get_indexer(new_id) if len(old_id) else np.full(len(new_id), -1)
    return stored, old_pos


def _old_values(
    stored: pd.DataFrame, old_pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per incoming order the stored day, status and total in cents (0, None and NaN for a
    new order)."""
    m = old_pos >= 0
    op = old_pos[m]
    old_day = np.zeros(len(old_pos), np.int64)
    old_status = np.full(len(old_pos), None, dtype=object)
    old_cents = np.full(len(old_pos), np.nan)
    if m.any():
        old_day[m] = day_numbers(stored["order_date"])[op]
        old_status[m] = stored["status"].astype(object).to_numpy()[op]
        old_cents[m] = np.rint(stored["total"].to_numpy(dtype=np.float64)[op] * 100)
    return old_day, old_status, old_cents


def _counted(
    new_status: np.ndarray,
    old_status: np.ndarray,
    has_old: np.ndarray,
    excluded_statuses: Collection[str] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whether the new and the old version count in gold, and whether a status change alone
    matters (only when ``excluded_statuses`` is not given: any change may move an order
    in or out of gold)."""
    if excluded_statuses is None:
        return np.ones(len(new_status), bool), has_old.copy(), new_status != old_status
    ex = list(excluded_statuses)
    new_on = ~pd.Series(new_status).isin(ex).to_numpy()
    old_on = has_old & ~pd.Series(old_status).isin(ex).to_numpy()
    return new_on, old_on, np.zeros(len(new_status), bool)


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



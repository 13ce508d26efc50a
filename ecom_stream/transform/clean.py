"""Pure transforms: records -> typed view -> row rules -> cleaned silver rows. No I/O here.

The typed view is built in ``transform/typed.py`` (re-exported here); the row rules come from
the rule catalogue (``contract/rules.py``).
"""

from __future__ import annotations

import functools
import itertools
import re

import numpy as np
import pandas as pd

from ecom_stream.contract.rules import row_masks, rules_of
from ecom_stream.contract.schema import (
    ORDER_LINES_SCHEMA,
    ORDER_STATUSES,
    PRICE_TIERS,
    UNKNOWN_CATEGORY,
    UNKNOWN_STATUS,
    WEEKDAYS,
)
from ecom_stream.transform.typed import (
    EPOCH,
    created_in_window,
    lines_valid,
    parse_key,
    parse_number,
    parse_timestamp,
    quantities_below,
    records_frame,
    typed_view,
)

__all__ = [
    "EPOCH",
    "clean_orders",
    "clean_products",
    "created_in_window",
    "lines_valid",
    "newer_than_stored",
    "newest_per_key",
    "order_lines",
    "parse_key",
    "parse_number",
    "parse_timestamp",
    "quantities_below",
    "records_frame",
    "removed_lines",
    "row_rules",
    "title_case",
    "typed_view",
]


def row_rules(entity: str, typed: pd.DataFrame) -> dict[str, np.ndarray]:
    """The cleaning rules as boolean masks of failing rows, named like the expectations (the
    catalogue's rules that have a mask)."""
    return row_masks(rules_of(entity), typed)


def newest_per_key(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """Reduce duplicate keys to the newest version (newest ``_version_ts``, then largest hash)."""
    if df.empty or df[key].is_unique:
        return df
    # Only the rows of duplicated keys are sorted (a few percent of a micro-batch).
    dup = df[key].duplicated(keep=False).to_numpy()
    contested = df[dup].sort_values([key, "_version_ts", "_row_hash"], kind="stable")
    keep = ~dup
    keep[df.index.get_indexer(contested.drop_duplicates(key, keep="last").index)] = True
    return df[keep].reset_index(drop=True)


def clean_products(typed: pd.DataFrame) -> pd.DataFrame:
    """Silver products from accepted typed rows (rejected rows already removed)."""
    category = typed["category"].map(title_case, na_action="ignore")
    price = typed["price"].astype("float64")
    return pd.DataFrame(
        {
            "product_id": typed["product_id"].astype("int64"),
            "name": typed["name"].map(title_case, na_action="ignore").astype(object),
            "category": category.where(
                category.notna() & (category != ""), UNKNOWN_CATEGORY
            ).astype(object),
            "price": price,
            "price_tier": price_tier(price),
            "rating": typed["rating"].clip(1.0, 5.0),
            "stock": typed["stock"].astype("Int64"),
            "created_at": typed["created_at"],
            "updated_at": typed["updated_at"],
            "_version_ts": typed["_version_ts"],
            "_row_hash": typed["_row_hash"].astype(object),
        }
    ).reset_index(drop=True)


# A word: letters and digits, apostrophes inside it included ("children's", "o'neil").
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


# Where str.title starts a word and title_case does not.
_TITLE_DIFFERS = re.compile(r"[\d'\u2019]")


@functools.lru_cache(maxsize=1 << 16)
def title_case(text: str) -> str:
    """White space collapsed, each word's first character upper case and the rest lower.

    Unlike ``str.title`` an apostrophe does not start a word ("Children's", not
    "Children'S") and neither does a digit, so letters after digits stay lower case
    ("3d Printer", "2nd-Gen"). The one title-casing of names and categories, used by
    validation and cleaning alike; cached, since names and categories repeat across rows.
    """
    collapsed = " ".join(text.split())
    if _TITLE_DIFFERS.search(collapsed) is None:
        return collapsed.title()  # same result without digits or apostrophes, 5x faster
    return _WORD.sub(_capitalised, collapsed)


def _capitalised(match: re.Match[str]) -> str:
    return match.group(0).capitalize()


def price_tier(price: pd.Series) -> pd.Series:
    """(0,25] Budget, (25,100] Mid-Range, (100,500] Premium, above 500 Luxury."""
    bounds = np.array([b for b, _ in PRICE_TIERS[:-1]])
    labels = np.array([label for _, label in PRICE_TIERS], dtype=object)
    tiers = labels[np.searchsorted(bounds, price.to_numpy(), side="left")]
    return pd.Series(tiers, index=price.index, dtype=object).where(price.notna())


def clean_orders(typed: pd.DataFrame) -> pd.DataFrame:
    """Silver orders from accepted typed rows: known statuses, derived date parts."""
    created = typed["created_at"]
    status = typed["status"].str.strip().str.lower()
    status = status.where(status.isin(ORDER_STATUSES), UNKNOWN_STATUS)
    return pd.DataFrame(
        {
            "order_id": typed["order_id"].astype("int64"),
            "customer_id": typed["customer_id"].astype("int64"),
            "product_ids": typed["product_ids"],
            "quantities": typed["quantities"],
            "total": typed["total"].round(2),
            "status": status.astype(object),
            "payment_method": typed["payment_method"],
            "shipping_city": typed["shipping_city"],
            "created_at": created,
            "updated_at": typed["updated_at"],
            "order_date": _dates(created),
            "order_month": _months(created),
            "order_dow": pd.Series(
                np.array(WEEKDAYS, dtype=object)[created.dt.day_of_week.to_numpy()],
                index=typed.index,
            ),
            "order_hour": created.dt.hour.astype("int64"),
            "n_items": typed["product_ids"].map(len).astype("int64"),
            "_version_ts": typed["_version_ts"],
            "_row_hash": typed["_row_hash"].astype(object),
        }
    ).reset_index(drop=True)


def _dates(times: pd.Series) -> pd.Series:
    """UTC calendar dates as ``datetime.date`` objects (numpy converts day units to dates)."""
    days = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    return pd.Series(days.astype(object), index=times.index, dtype=object)


def _months(times: pd.Series) -> pd.Series:
    """``YYYY-MM`` of each UTC time (formatted once per distinct month, not per row)."""
    months = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[M]")
    distinct, where = np.unique(months, return_inverse=True)
    labels = np.array([None if np.isnat(m) else str(m) for m in distinct], dtype=object)
    return pd.Series(labels[where.reshape(-1)], index=times.index, dtype=object)


def order_lines(orders: pd.DataFrame) -> pd.DataFrame:
    """One row per order line (``line_no`` from 1) of cleaned orders."""
    n = orders["n_items"].to_numpy()
    starts = np.repeat(np.cumsum(n) - n, n)
    line_no = np.arange(int(n.sum()), dtype=np.int64) - starts + 1
    return pd.DataFrame(
        {
            "order_id": np.repeat(orders["order_id"].to_numpy(), n),
            "line_no": line_no,
            "product_id": np.fromiter(
                itertools.chain.from_iterable(orders["product_ids"].to_numpy()),
                np.int64,
                int(n.sum()),
            ),
            "quantity": np.fromiter(
                itertools.chain.from_iterable(orders["quantities"].to_numpy()),
                np.int64,
                int(n.sum()),
            ),
            "order_date": np.repeat(orders["order_date"].to_numpy(), n),
            "order_month": np.repeat(orders["order_month"].to_numpy(), n),
        }
    )


def newer_than_stored(batch: pd.DataFrame, stored: pd.DataFrame, key: str) -> pd.DataFrame:
    """The rows of ``batch`` newer than their stored version (``_version_ts``, then
    ``_row_hash``), or not stored at all."""
    if stored.empty:
        return batch
    old = stored[[key, "_version_ts", "_row_hash"]].rename(
        columns={"_version_ts": "_v_old", "_row_hash": "_h_old"}
    )
    joined = batch.merge(old, on=key, how="left")
    newer = (
        joined["_v_old"].isna()
        | (joined["_version_ts"] > joined["_v_old"])
        | ((joined["_version_ts"] == joined["_v_old"]) & (joined["_row_hash"] > joined["_h_old"]))
    )
    return batch[newer.to_numpy()].reset_index(drop=True)


def removed_lines(winners: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """(order_id, line_no) pairs of lines that updated orders no longer have."""
    if stored.empty:
        return ORDER_LINES_SCHEMA.empty_table().to_pandas()
    both = winners[["order_id", "n_items"]].merge(
        stored[["order_id", "n_items", "order_date", "order_month"]],
        on="order_id",
        suffixes=("", "_old"),
    )
    both = both[both["n_items_old"] > both["n_items"]]
    extra = (both["n_items_old"] - both["n_items"]).to_numpy()
    order_id = np.repeat(both["order_id"].to_numpy(), extra)
    first = np.repeat(both["n_items"].to_numpy() + 1, extra)
    offset = np.arange(int(extra.sum())) - np.repeat(np.cumsum(extra) - extra, extra)
    return pd.DataFrame(
        {
            "order_id": order_id,
            "line_no": first + offset,
            "product_id": np.zeros(len(order_id), dtype=np.int64),
            "quantity": np.zeros(len(order_id), dtype=np.int64),
            "order_date": np.repeat(both["order_date"].to_numpy(), extra),
            "order_month": np.repeat(both["order_month"].to_numpy(), extra),
        }
    )

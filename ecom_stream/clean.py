"""Pure transforms: records -> typed view -> row rules -> cleaned silver rows. No I/O here."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ecom_stream.read import row_hash
from ecom_stream.schema import (
    CATEGORIES,
    FIELDS,
    KEYS,
    ORDER_STATUSES,
    PRICE_TIERS,
    UNKNOWN_CATEGORY,
    UNKNOWN_STATUS,
    WEEKDAYS,
)

__all__ = [
    "clean_orders",
    "clean_products",
    "newest_per_key",
    "order_lines",
    "records_frame",
    "row_rules",
    "typed_view",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_PLAIN_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def records_frame(entity: str, files: Sequence[Sequence[dict[str, Any]]]) -> pd.DataFrame:
    """One row per record of the given files: raw values (object), file index, row number,
    row hash and the unknown fields as JSON (``_rescued``)."""
    known = FIELDS[entity]
    records = [rec for recs in files for rec in recs]
    cols: dict[str, Any] = {f: pd.Series([r.get(f) for r in records], dtype=object) for f in known}
    cols["_file"] = np.repeat(np.arange(len(files), dtype=np.int64), [len(r) for r in files])
    cols["_row_no"] = np.concatenate(
        [np.arange(len(r), dtype=np.int64) for r in files] or [np.empty(0, np.int64)]
    )
    cols["_row_hash"] = pd.Series([row_hash(r) for r in records], dtype=object)
    known_set = set(known)
    present = set().union(*map(dict.keys, records)) if records else set()
    if present - known_set:
        cols["_rescued"] = pd.Series(
            [_rescued(r, known_set) for r in records], dtype=object
        )
    else:
        cols["_rescued"] = pd.Series([None] * len(records), dtype=object)
    return pd.DataFrame(cols)


def _rescued(record: dict[str, Any], known: set[str]) -> str | None:
    extra = {k: v for k, v in record.items() if k not in known}
    return json.dumps(extra, sort_keys=True, ensure_ascii=False) if extra else None


def typed_view(entity: str, raw: pd.DataFrame) -> pd.DataFrame:
    """Parse the raw values into typed columns (invalid values become null), keeping
    ``_file``, ``_row_no``, ``_row_hash``. Adds ``<col>_raw_missing`` flags for gates."""
    out = pd.DataFrame(
        {"_file": raw["_file"], "_row_no": raw["_row_no"], "_row_hash": raw["_row_hash"]}
    )
    key = KEYS[entity]
    out[key] = parse_key(raw[key])
    out["created_at"] = parse_timestamp(raw["created_at"])
    out["updated_at"] = parse_timestamp(raw["updated_at"])
    version = out["updated_at"].fillna(out["created_at"])
    out["_version_ts"] = version.fillna(EPOCH)
    if entity == "products":
        out["name"] = _text(raw["name"])
        out["category"] = _text(raw["category"])
        out["price"] = parse_number(raw["price"])
        out["price_raw_missing"] = raw["price"].isna().to_numpy()
        out["rating"] = parse_number(raw["rating"])
        stock = parse_number(raw["stock"])
        out["stock"] = stock
        out["stock_valid"] = (raw["stock"].isna() | ((stock >= 0) & (stock == np.floor(stock)))).to_numpy()
    else:
        out["customer_id"] = parse_key(raw["customer_id"])
        out["total"] = parse_number(raw["total"])
        out["total_raw_missing"] = raw["total"].isna().to_numpy()
        out["status"] = _text(raw["status"])
        out["payment_method"] = _text(raw["payment_method"])
        out["shipping_city"] = _text(raw["shipping_city"])
        lines = [_lines(p, q) for p, q in zip(raw["product_ids"], raw["quantities"], strict=True)]
        out["product_ids"] = pd.Series([ln[0] if ln else None for ln in lines], dtype=object, index=raw.index)
        out["quantities"] = pd.Series([ln[1] if ln else None for ln in lines], dtype=object, index=raw.index)
        out["lines_valid"] = np.array([ln is not None for ln in lines], dtype=bool)
    return out


def parse_key(values: pd.Series) -> pd.Series:
    """JSON integers within int64; anything else (strings, floats, booleans) becomes null."""
    ok = np.array([type(v) is int and INT64_MIN <= v <= INT64_MAX for v in values], dtype=bool)
    out = pd.Series(pd.NA, index=values.index, dtype="Int64")
    if ok.any():
        out[ok] = values[ok].astype("int64")
    return out


def parse_number(values: pd.Series) -> pd.Series:
    """A JSON number, or a string holding a plain decimal number; anything else is NaN."""
    types = values.map(type)
    nums = values.where(types.isin([int, float]))
    strs = values.where(types == str)
    plain = strs.notna()
    if plain.any():
        plain[plain] = strs[plain].astype(str).str.fullmatch(_PLAIN_NUMBER.pattern)
    merged = nums.where(~plain, strs)
    out = pd.to_numeric(merged.where(types.isin([int, float]) | plain), errors="coerce").astype("float64")
    return out.where(np.isfinite(out))


def parse_timestamp(values: pd.Series) -> pd.Series:
    """ISO-8601 strings; without a zone they are UTC. Anything else is NaT."""
    strs = values.where(values.map(type) == str)
    parsed = pd.to_datetime(strs, utc=True, errors="coerce", format="ISO8601")
    return parsed.astype("datetime64[us, UTC]")


def _text(values: pd.Series) -> pd.Series:
    return values.where(values.map(type) == str).astype(object)


def _lines(pids: Any, qtys: Any) -> tuple[list[int], list[int]] | None:
    if not isinstance(pids, list) or not isinstance(qtys, list):
        return None
    if not pids or len(pids) != len(qtys):
        return None
    if not all(type(p) is int and INT64_MIN <= p <= INT64_MAX for p in pids):
        return None
    if not all(type(q) is int and 1 <= q <= INT64_MAX for q in qtys):
        return None
    return pids, qtys


def row_rules(entity: str, typed: pd.DataFrame) -> dict[str, np.ndarray]:
    """The cleaning rules as boolean masks of failing rows, named like the expectations."""
    key = KEYS[entity]
    if entity == "products":
        return {
            "products_product_id_valid_key": typed[key].isna().to_numpy(),
            "products_price_positive": ~(typed["price"] > 0).to_numpy(),
            "products_stock_non_negative_integer": ~typed["stock_valid"].to_numpy(),
        }
    total = typed["total"]
    return {
        "orders_order_id_valid_key": typed[key].isna().to_numpy(),
        "orders_customer_id_present": typed["customer_id"].isna().to_numpy(),
        "orders_total_non_negative": ~(total >= 0).to_numpy(),
        "orders_lines_well_formed": ~typed["lines_valid"].to_numpy(),
        "orders_created_at_parseable": typed["created_at"].isna().to_numpy(),
    }


def newest_per_key(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """Reduce duplicate keys to the newest version: newest ``_version_ts``, then largest ``_row_hash``."""
    if df.empty:
        return df
    ordered = df.sort_values([key, "_version_ts", "_row_hash"], kind="stable")
    return ordered.drop_duplicates(key, keep="last").reset_index(drop=True)


def clean_products(typed: pd.DataFrame) -> pd.DataFrame:
    """Silver products from accepted typed rows (rejected rows already removed)."""
    category = typed["category"].map(_title, na_action="ignore")
    price = typed["price"].astype("float64")
    return pd.DataFrame(
        {
            "product_id": typed["product_id"].astype("int64"),
            "name": typed["name"].map(_title, na_action="ignore").astype(object),
            "category": category.where(category.notna() & (category != ""), UNKNOWN_CATEGORY).astype(object),
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


def _title(text: str) -> str:
    return " ".join(text.split()).title()


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
            "order_date": created.dt.date,
            "order_month": created.dt.strftime("%Y-%m").astype(object),
            "order_dow": pd.Series(np.array(WEEKDAYS, dtype=object)[created.dt.day_of_week.to_numpy()], index=typed.index),
            "order_hour": created.dt.hour.astype("int64"),
            "n_items": typed["product_ids"].map(len).astype("int64"),
            "_version_ts": typed["_version_ts"],
            "_row_hash": typed["_row_hash"].astype(object),
        }
    ).reset_index(drop=True)


def order_lines(orders: pd.DataFrame) -> pd.DataFrame:
    """One row per order line (``line_no`` from 1) of cleaned orders."""
    n = orders["n_items"].to_numpy()
    starts = np.repeat(np.cumsum(n) - n, n)
    line_no = np.arange(int(n.sum()), dtype=np.int64) - starts + 1
    return pd.DataFrame(
        {
            "order_id": np.repeat(orders["order_id"].to_numpy(), n),
            "line_no": line_no,
            "product_id": np.fromiter((p for ps in orders["product_ids"] for p in ps), np.int64, int(n.sum())),
            "quantity": np.fromiter((q for qs in orders["quantities"] for q in qs), np.int64, int(n.sum())),
            "order_date": np.repeat(orders["order_date"].to_numpy(), n),
        }
    )


def known_category(category: pd.Series) -> np.ndarray:
    """True where the raw category, once cleaned, is one of the known categories."""
    cleaned = category.map(_title, na_action="ignore")
    return cleaned.isin(CATEGORIES).to_numpy()

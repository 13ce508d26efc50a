"""Product and order insights on small hand-built frames with known answers."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ecom_stream.contract.schema import SILVER_ORDERS_SCHEMA, SILVER_PRODUCTS_SCHEMA
from ecom_stream.transform import insights


def products() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": [1, 2, 3, 4, 5],
            "category": ["Books", "Books", "Home", "Electronics", "Unknown"],
            "price": [10.0, 30.0, 120.0, 800.0, 40.0],
            "rating": [4.0, None, 3.0, 5.0, None],
            "stock": pd.Series([0, 5, 10, 0, 3], dtype="Int64"),
            "price_tier": ["Budget", "Mid-Range", "Premium", "Luxury", "Mid-Range"],
        }
    )


def orders() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": [1, 2, 3, 4, 5, 6],
            "customer_id": [100, 100, 200, 300, 300, 300],
            "total": [50.0, 25.0, 100.0, 10.0, 20.0, 999.0],
            "status": ["delivered", "pending", "shipped", "delivered", "confirmed", "cancelled"],
            "payment_method": ["paypal", "credit_card", "paypal", None, "paypal", "crypto"],
            "shipping_city": ["Paris", "Paris", "Berlin", "Rome", "Berlin", "Paris"],
            "order_month": ["2024-01", "2024-02", "2024-01", "2024-02", "2024-02", "2024-03"],
            "order_dow": ["Monday", "Friday", "Friday", "Monday", "Sunday", "Tuesday"],
            "order_hour": [9, 14, 9, 20, 14, 3],
            "n_items": [1, 2, 3, 1, 1, 4],
        }
    )


def assert_json_clean(value: Any) -> None:
    """Only dicts with str keys, lists, str, int, float (finite), bool and None."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(k) is str
            assert_json_clean(v)
    elif isinstance(value, list):
        for v in value:
            assert_json_clean(v)
    else:
        assert value is None or type(value) in (str, int, float, bool), (value, type(value))
        if type(value) is float:
            assert math.isfinite(value)
    json.dumps(value, allow_nan=False)


def test_product_insights_known_answers() -> None:
    out = insights.product_insights(products())
    assert_json_clean(out)
    assert out["count"] == 5
    assert out["by_category"] == {"Books": 2, "Electronics": 1, "Home": 1, "Unknown": 1}
    assert list(out["by_category"]) == ["Books", "Electronics", "Home", "Unknown"]
    price = out["price"]
    assert price["mean"] == pytest.approx(200.0)
    assert price["median"] == 40.0
    assert price["std"] == pytest.approx(float(np.std([10, 30, 120, 800, 40], ddof=1)))
    assert (price["min"], price["max"]) == (10.0, 800.0)
    assert out["price_mean_by_category"] == {
        "Books": 20.0, "Electronics": 800.0, "Home": 120.0, "Unknown": 40.0,
    }
    assert out["rating"] == {"mean": 4.0, "null_share": 0.4}
    assert out["stock"] == {"total": 18, "zero_stock": 2}
    assert out["price_tiers"] == {"Budget": 1, "Mid-Range": 2, "Premium": 1, "Luxury": 1}


def test_product_insights_single_row_and_all_null_ratings() -> None:
    one = products().iloc[:1].assign(rating=[None])
    out = insights.product_insights(one)
    assert_json_clean(out)
    assert out["price"]["std"] is None
    assert out["rating"] == {"mean": None, "null_share": 1.0}


def test_order_insights_known_answers() -> None:
    out = insights.order_insights(orders(), ("cancelled",))
    assert_json_clean(out)
    assert out["orders"] == 6
    assert out["revenue_orders"] == 5
    assert out["revenue"] == pytest.approx(205.0)
    assert out["average_order_value"] == pytest.approx(41.0)
    assert out["status"] == {
        "cancelled": 1, "confirmed": 1, "delivered": 2, "pending": 1, "shipped": 1,
    } and next(iter(out["status"])) == "delivered"
    assert out["payment_method"] == {"paypal": 3, "credit_card": 1, "crypto": 1, "unknown": 1}
    assert out["shipping_city"] == {"Paris": 3, "Berlin": 2, "Rome": 1}
    assert out["monthly"] == {
        "2024-01": {"revenue": 150.0, "orders": 2},
        "2024-02": {"revenue": 55.0, "orders": 3},
    }
    customers = out["customers"]
    # Spend per customer (revenue orders): 100 -> 75, 200 -> 100, 300 -> 30.
    assert customers["unique"] == 3
    assert customers["repeat"] == 2
    assert customers["repeat_rate"] == pytest.approx(2 / 3)
    assert customers["top_10pct_spend_threshold"] == pytest.approx(
        float(np.quantile([75.0, 100.0, 30.0], 0.9))
    )
    assert out["busiest_weekday"] == "Monday"  # tie with Friday: the earlier weekday
    assert out["busiest_hour"] == 9  # tie with 14: the earlier hour
    assert out["orders_by_weekday"]["Friday"] == 2 and out["orders_by_weekday"]["Saturday"] == 0
    assert out["average_items_per_order"] == pytest.approx(2.0)


def test_order_insights_custom_exclusions() -> None:
    out = insights.order_insights(orders(), ("cancelled", "pending"))
    assert out["revenue_orders"] == 4
    assert out["revenue"] == pytest.approx(180.0)
    assert out["customers"]["repeat"] == 1


def test_empty_frames_give_zeros_and_none() -> None:
    empty_products = products().iloc[:0]
    out = insights.product_insights(empty_products)
    assert_json_clean(out)
    assert out["count"] == 0 and out["by_category"] == {}
    assert set(out["price"].values()) == {None}
    assert out["rating"] == {"mean": None, "null_share": None}
    assert out["stock"] == {"total": 0, "zero_stock": 0}
    assert set(out["price_tiers"].values()) == {0}

    out = insights.order_insights(orders().iloc[:0], ("cancelled",))
    assert_json_clean(out)
    assert (out["orders"], out["revenue_orders"], out["revenue"]) == (0, 0, 0.0)
    assert out["average_order_value"] is None
    assert out["status"] == {} and out["monthly"] == {}
    assert out["customers"] == {
        "unique": 0, "repeat": 0, "repeat_rate": None, "top_10pct_spend_threshold": None,
    }
    assert out["busiest_weekday"] is None and out["busiest_hour"] is None
    assert out["average_items_per_order"] is None

    only_cancelled = insights.order_insights(orders().iloc[5:], ("cancelled",))
    assert_json_clean(only_cancelled)
    assert only_cancelled["revenue"] == 0.0 and only_cancelled["monthly"] == {}
    assert only_cancelled["customers"]["unique"] == 0


def test_frames_read_back_from_the_silver_schemas_work() -> None:
    """The columns exist in silver and their Arrow types convert cleanly (as the report reads)."""
    assert set(insights.PRODUCT_COLUMNS) <= set(SILVER_PRODUCTS_SCHEMA.names)
    assert set(insights.ORDER_COLUMNS) <= set(SILVER_ORDERS_SCHEMA.names)
    p_schema = pa.schema([SILVER_PRODUCTS_SCHEMA.field(c) for c in insights.PRODUCT_COLUMNS])
    o_schema = pa.schema([SILVER_ORDERS_SCHEMA.field(c) for c in insights.ORDER_COLUMNS])
    p = pa.Table.from_pandas(products(), schema=p_schema, preserve_index=False).to_pandas()
    o = pa.Table.from_pandas(orders(), schema=o_schema, preserve_index=False).to_pandas()
    assert_json_clean(insights.product_insights(p))
    assert_json_clean(insights.order_insights(o, ("cancelled",)))
    assert insights.product_insights(p) == insights.product_insights(products())
    assert insights.order_insights(o) == insights.order_insights(orders())
    for empty in (p_schema.empty_table().to_pandas(), o_schema.empty_table().to_pandas()):
        result = (
            insights.product_insights(empty) if "price" in empty.columns
            else insights.order_insights(empty)
        )
        assert_json_clean(result)

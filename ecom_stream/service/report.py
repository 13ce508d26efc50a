"""``ecom-stream report``: the tutorial's EDA as JSON, computed from the lake."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ecom_stream.config import Settings
from ecom_stream.errors import EcomStreamError
from ecom_stream.storage.lake import Lake
from ecom_stream.transform import insights

__all__ = ["build_report"]


def build_report(settings: Settings) -> dict[str, Any]:
    """Product and order insights, reading only the columns they need."""
    lake = Lake(settings.lake_dir)
    if not lake.tables.exists():
        raise EcomStreamError(f"no lake at {lake.root}: run a backfill or the daemon first")
    products = lake.tables.read_pandas("silver_products", columns=list(insights.PRODUCT_COLUMNS))
    orders = lake.tables.read_pandas("silver_orders", columns=list(insights.ORDER_COLUMNS))
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "lake": str(lake.root),
        "versions": {
            "silver_products": lake.tables.version("silver_products"),
            "silver_orders": lake.tables.version("silver_orders"),
        },
        "products": insights.product_insights(products),
        "orders": insights.order_insights(orders, settings.excluded_statuses),
    }

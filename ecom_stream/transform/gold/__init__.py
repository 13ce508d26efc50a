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

from ecom_stream.transform.gold.affected import affected_dates_for_orders
from ecom_stream.transform.gold.anomalies import (
    AnomalyRange,
    anomalies,
    anomaly_recompute_range,
    category_first_dates,
    newest_date,
)
from ecom_stream.transform.gold.common import (
    ANOMALY_COLUMNS,
    DAILY_COLUMNS,
    LINE_COLUMNS,
    ORDER_COLUMNS,
    PRODUCT_COLUMNS,
    GoldConsistencyError,
)
from ecom_stream.transform.gold.daily import daily_revenue

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

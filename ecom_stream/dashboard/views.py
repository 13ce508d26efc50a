"""Read-side data access for the dashboard: small, filtered DataFrames from the lake.

Loaders (``load_*``, in ``loaders``) take a :class:`Lake` and an explicit table version and read
only the columns and partitions a view needs; the pure aggregations live in ``aggregates`` and
the value types in ``model``. This module gathers them so callers keep one import. Nothing
here imports Streamlit.
"""

from __future__ import annotations

from ecom_stream.dashboard.aggregates import (
    anomalies_view,
    apply_filters,
    category_options,
    checks_summary,
    daily_revenue_view,
    date_bounds,
    kpis,
    ledger_summary,
    overview,
    pass_rate,
    resolve_window,
)
from ecom_stream.dashboard.loaders import (
    health,
    load_anomalies,
    load_daily_revenue,
    load_ledger,
    load_order_categories,
    load_orders,
    load_products,
    load_quality,
    load_quarantine,
    load_rejected,
    preview_orders,
    table_versions,
)
from ecom_stream.dashboard.model import (
    MISSING,
    STATUSES,
    WINDOWS,
    DateWindow,
    Filters,
    Health,
    Kpi,
    Overview,
)

__all__ = [
    "MISSING",
    "STATUSES",
    "WINDOWS",
    "DateWindow",
    "Filters",
    "Health",
    "Kpi",
    "Overview",
    "anomalies_view",
    "apply_filters",
    "category_options",
    "checks_summary",
    "daily_revenue_view",
    "date_bounds",
    "health",
    "kpis",
    "ledger_summary",
    "load_anomalies",
    "load_daily_revenue",
    "load_ledger",
    "load_order_categories",
    "load_orders",
    "load_products",
    "load_quality",
    "load_quarantine",
    "load_rejected",
    "overview",
    "pass_rate",
    "preview_orders",
    "resolve_window",
    "table_versions",
]


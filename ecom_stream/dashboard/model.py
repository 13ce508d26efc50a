"""The dashboard's value types and constants: filters, date windows, KPI and health records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from ecom_stream.contract import schema as S
from ecom_stream.transform import insights

ORDER_COLUMNS = tuple(dict.fromkeys((
    "order_id", "customer_id", "total", "status", "shipping_city",
    "order_date", "order_month", "order_dow", "order_hour", *insights.ORDER_COLUMNS,
)))  # fmt: skip
PRODUCT_COLUMNS = ("product_id", "name", "category", "price", "price_tier", "rating", "stock")
PREVIEW_COLUMNS = (
    "order_id", "created_at", "customer_id", "status", "total", "n_items",
    "payment_method", "shipping_city", "order_date",
)  # fmt: skip
LEDGER_COLUMNS = ("file_name", "outcome", "received_at", "finished_at")
QUALITY_COLUMNS = ("batch_id", "source_file", "expectation", "policy", "success", "validated_at")
STATUSES = (*S.ORDER_STATUSES, S.UNKNOWN_STATUS)
WINDOWS = {"All time": None, "Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90}
MISSING = -1
"""Version of a table that does not exist (yet): it reads as empty."""
KPI_LABELS = ("Revenue", "Orders", "Avg order value", "Unique customers")


@dataclass(frozen=True)
class Filters:
    """Sidebar selections; ``None`` means "everything"."""

    categories: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    start: date | None = None
    end: date | None = None


@dataclass(frozen=True)
class DateWindow:
    """An inclusive range of order dates (``None``: open)."""

    start: date | None
    end: date | None

    def predicate(self) -> str | None:
        """SQL predicate on ``order_date`` that prunes files (month partitions and date
        statistics), or None for all. It keeps a superset: pair it with :meth:`rows`."""
        parts = []
        if self.start:
            parts.append(f"order_date >= '{self.start.isoformat()}'")
        if self.end:
            parts.append(f"order_date <= '{self.end.isoformat()}'")
        return " AND ".join(parts) or None

    def rows(self) -> pads.Expression | None:
        """The exact row filter of the window."""
        expr = None
        if self.start:
            expr = pads.field("order_date") >= pa.scalar(self.start, pa.date32())
        if self.end:
            upper = pads.field("order_date") <= pa.scalar(self.end, pa.date32())
            expr = upper if expr is None else expr & upper
        return expr


@dataclass(frozen=True)
class Kpi:
    """One KPI: value over the selection, change the newest day made, daily sparkline."""

    label: str
    value: float
    delta: float | None
    daily: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Overview:
    """Everything the order charts show for one selection (small frames only)."""

    rows: int
    kpis: list[Kpi]
    latest_day: date | None
    monthly: pd.DataFrame
    by_status: pd.DataFrame
    by_city: pd.DataFrame
    heatmap: pd.DataFrame
    insights: dict[str, Any]


@dataclass(frozen=True)
class Health:
    """Pipeline health: daemon heartbeat, ledger outcomes, landing backlog, table versions."""

    daemon: dict[str, Any] | None
    outcomes: dict[str, int]
    last_batch: dict[str, Any] | None
    backlog: int
    versions: dict[str, int]
    sources: list[dict[str, Any]] = field(default_factory=list)
    """The last pull of each REST source endpoint (reconciliation, ``ecom-stream pull``)."""



"""Brings gold up to date with silver, incrementally and crash-safely.

Every silver commit that changes orders or products carries, in its commit metadata, the
order dates it affects. Gold records (as Delta app transactions on its last commit) the silver
versions it reflects. Bringing gold up to date reads the silver commits since then, recomputes
daily revenue for exactly those dates (reading silver with partition pruning) and the anomaly
scores for the days whose window they touch. A crash anywhere is healed by the next call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterable
from datetime import date
from typing import Any

import pandas as pd

from ecom_stream import gold
from ecom_stream.config import Settings
from ecom_stream.lake import TABLES, Lake

__all__ = ["AFFECTED_KEY", "GoldRefresher", "affected_dates_for_orders"]

logger = logging.getLogger(__name__)
AFFECTED_KEY = "ecom_affected_dates"
SOURCES = ("silver_orders", "silver_products")
ORDER_COLS = ["order_id", "total", "status", "order_date", "n_items"]
LINE_COLS = ["order_id", "line_no", "product_id", "quantity", "order_date"]
PRODUCT_COLS = ["product_id", "price", "category"]


def affected_dates_for_orders(
    incoming: pd.DataFrame, stored: pd.DataFrame, excluded_statuses: Collection[str]
) -> set[date]:
    """Dates whose gold rows can change when ``incoming`` replaces ``stored``."""
    if stored.empty:
        return set(incoming["order_date"])
    return gold.affected_dates_for_orders(incoming, stored, excluded_statuses)


class GoldRefresher:
    """Keeps ``gold/daily_revenue`` and ``gold/revenue_anomalies`` equal to a full recompute."""

    def __init__(self, lake: Lake, settings: Settings) -> None:
        self.lake = lake
        self.settings = settings
        self._products: tuple[int, pd.DataFrame] | None = None
        # gold/daily_revenue as last written by this process, sorted: (version, frame). Only
        # the single writer refreshes gold, so its own last write is the table's content.
        self._daily: tuple[int, pd.DataFrame] | None = None

    def products(self) -> pd.DataFrame:
        """Current silver products (price, category), cached by table version."""
        version = self.lake.version("silver_products")
        if self._products is None or self._products[0] != version:
            self._products = (
                version,
                self.lake.read_pandas("silver_products", columns=PRODUCT_COLS),
            )
        return self._products[1]

    def bring_up_to_date(self) -> float:
        """Recompute what changed since gold was last refreshed; returns milliseconds spent."""
        started = time.perf_counter()
        mark = self.lake.gold_watermark()
        current = {t: self.lake.version(t) for t in SOURCES}
        if all(mark[t] == current[t] for t in SOURCES):
            return 0.0
        dates = self._pending_dates(mark)
        try:
            if dates is None:
                self.rebuild(current)
            else:
                self._update(dates, current)
        except BaseException:
            self._daily = None  # a write may have landed despite the error: re-read next time
            raise
        return (time.perf_counter() - started) * 1000

    def _pending_dates(self, mark: dict[str, int | None]) -> set[date] | None:
        dates: set[date] = set()
        for table in SOURCES:
            since = mark[table]
            if since is None:
                return None
            commits = self.lake.commit_metadata_since(table, since)
            if commits is None:
                logger.warning(
                    "silver log history before version %s is gone: rebuilding gold", since
                )
                return None
            for commit in commits:
                dates |= {date.fromisoformat(d) for d in json.loads(commit.get(AFFECTED_KEY, "[]"))}
        return dates

    def _update(self, dates: set[date], current: dict[str, int]) -> None:
        txns = self.lake.watermark_txns(current)
        if not dates:
            # Silver moved without touching gold (maintenance, no-op merge): record it only.
            self.lake.append("revenue_anomalies", _empty("revenue_anomalies"), txns=txns)
            return
        old_daily = self.daily()
        fresh = self._daily_for(dates)
        lo, hi = min(dates), max(dates)
        before = old_daily["order_date"] < lo
        after = old_daily["order_date"] > hi
        in_range = ~(before | after)
        kept_in_range = old_daily[in_range & ~old_daily["order_date"].isin(dates)]
        replacement = _sorted(pd.concat([kept_in_range, fresh], ignore_index=True))
        self.lake.replace_where(
            "daily_revenue", replacement, f"order_date >= '{lo}' AND order_date <= '{hi}'"
        )
        # old_daily is sorted by (order_date, category): the rows before and after the range
        # keep their order, so the new table needs no sort of its whole length.
        new_daily = pd.concat([old_daily[before], replacement, old_daily[after]], ignore_index=True)
        self._daily = (self.lake.version("daily_revenue"), new_daily)

        span = gold.anomaly_recompute_range(
            dates,
            old_newest=_newest(old_daily),
            new_newest=_newest(new_daily),
            old_first=_first_dates(old_daily),
            new_first=_first_dates(new_daily),
            window=self.settings.anomaly_window_days,
        )
        if span is None:
            self.lake.append("revenue_anomalies", _empty("revenue_anomalies"), txns=txns)
            return
        scores = self._anomalies(new_daily, span.start, span.end)
        vanished = sorted(set(old_daily["category"].unique()) - set(new_daily["category"].unique()))
        predicate = f"(order_date >= '{span.start}' AND order_date <= '{span.delete_until}')"
        if vanished:
            predicate += " OR category IN ({})".format(", ".join(_sql_str(c) for c in vanished))
        self.lake.replace_where("revenue_anomalies", scores, predicate, txns=txns)

    def daily(self) -> pd.DataFrame:
        """gold/daily_revenue sorted by (order_date, category); cached across batches."""
        version = self.lake.version("daily_revenue")
        if self._daily is None or self._daily[0] != version:
            self._daily = (version, _sorted(self.lake.read_pandas("daily_revenue")))
        return self._daily[1]

    def _daily_for(self, dates: Iterable[date]) -> pd.DataFrame:
        orders = self.lake.read_for_dates("silver_orders", dates, columns=ORDER_COLS)
        lines = self.lake.read_for_dates("silver_order_lines", dates, columns=LINE_COLS)
        return gold.daily_revenue(orders, lines, self.products(), self.settings.excluded_statuses)

    def _anomalies(self, daily: pd.DataFrame, start: date | None, end: date | None) -> pd.DataFrame:
        s = self.settings
        return gold.anomalies(
            daily,
            window=s.anomaly_window_days,
            min_history=s.anomaly_min_history_days,
            threshold=s.anomaly_threshold,
            start=start,
            end=end,
        )

    def rebuild(self, current: dict[str, int] | None = None) -> None:
        """Recompute both gold tables from all of silver (``rebuild-gold``, or first run)."""
        current = current or {t: self.lake.version(t) for t in SOURCES}
        orders = self.lake.read_pandas("silver_orders", columns=ORDER_COLS)
        lines = self.lake.read_pandas("silver_order_lines", columns=LINE_COLS)
        daily = gold.daily_revenue(orders, lines, self.products(), self.settings.excluded_statuses)
        self.lake.replace_where("daily_revenue", daily, "true")
        scores = self._anomalies(daily, None, None)
        self.lake.replace_where(
            "revenue_anomalies", scores, "true", txns=self.lake.watermark_txns(current)
        )


def _empty(table: str) -> pd.DataFrame:
    return TABLES[table].schema.empty_table().to_pandas()


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["order_date", "category"], kind="stable").reset_index(drop=True)


def _newest(daily: pd.DataFrame) -> date | None:
    return None if daily.empty else daily["order_date"].max()


def _first_dates(daily: pd.DataFrame) -> dict[str, Any]:
    """Each category's first date (``daily`` is sorted by date: first occurrence wins)."""
    if daily.empty:
        return {}
    firsts = daily.drop_duplicates("category")
    return dict(zip(firsts["category"].tolist(), firsts["order_date"].tolist(), strict=True))


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

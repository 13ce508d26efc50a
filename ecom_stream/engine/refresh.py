"""Brings gold up to date with silver, incrementally and crash-safely.

Every silver commit that changes orders or products carries, in its commit metadata, the
order dates it affects. Gold records (as Delta app transactions on its last commit) the silver
versions it reflects. Bringing gold up to date reads the silver commits since then, recomputes
daily revenue for exactly those dates (reading silver with partition pruning) and the anomaly
scores for the days whose window they touch. A crash anywhere is healed by the next call.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import time
from collections.abc import Collection, Iterable
from datetime import date

import pandas as pd
import pyarrow.dataset as pads

from ecom_stream.config import Settings
from ecom_stream.contract import schema as S
from ecom_stream.engine.observer import Anomaly, Observer
from ecom_stream.storage.lake import TABLES, Lake, key_ranges, ranges_predicate
from ecom_stream.transform import clean, gold

__all__ = [
    "AFFECTED_KEY",
    "GoldRefresher",
    "affected_dates_for_orders",
    "heal_order_lines",
    "lines_merge_done",
    "lines_merge_starting",
]

logger = logging.getLogger(__name__)
AFFECTED_KEY = "ecom_affected_dates"
SOURCES = ("silver_orders", "silver_products")
# What gold needs, plus the columns it checks when present (gold owns the lists).
ORDER_COLS = [*gold.ORDER_COLUMNS, "n_items"]
LINE_COLS = [*gold.LINE_COLUMNS, "order_date"]
PRODUCT_COLS = list(gold.PRODUCT_COLUMNS)
LINE_SOURCE_COLS = ["order_id", "n_items", "product_ids", "quantities", "order_date", "order_month"]
# The marker of an orders / order-lines merge pair names its order ids in at most this many
# ranges (a superset is harmless: healing an order whose lines already match changes nothing).
MARKER_RANGES = 64


def lines_merge_starting(lake: Lake, order_ids: Iterable[int]) -> None:
    """Record, before the orders and order-lines merges of a micro-batch, which orders they
    touch: the two commits are not one transaction, so one may land without the other."""
    ranges = key_ranges(order_ids, MARKER_RANGES)
    # Not fsync'd (5 ms a micro-batch): a killed process leaves it in the page cache, and the
    # merge commits it guards are made durable by the micro-batch's filesystem sync too.
    lake.markers.write("lines_inflight", {"order_ranges": ranges}, durable=False)


def lines_merge_done(lake: Lake) -> None:
    """Both merges committed: silver orders and their lines agree again."""
    lake.markers.remove("lines_inflight")


def heal_order_lines(lake: Lake) -> int:
    """Make the order lines of the orders named by a left-over merge marker equal the lines
    of the stored orders (silver/orders is the truth; lines derive from it).

    When one merge of the pair failed (permission denied, disk full, a kill), silver held
    lines without their order or orders without lines, and every gold refresh of those days
    failed its consistency check, including the writer's start-up catch-up that runs before
    the failed files can be retried. Healing first makes silver consistent (at the state
    before or after that micro-batch, whichever merge committed); the retry then merges as
    usual. Returns the number of lines written or deleted (0 when there was no marker).
    """
    marker = lake.markers.read("lines_inflight")
    if marker is None:
        return 0
    ranges = [tuple(r) for r in marker["order_ranges"]]
    files = ranges_predicate("order_id", ranges)
    oid = pads.field("order_id")
    rows = functools.reduce(
        operator.or_, [(oid >= lo) & (oid <= hi) for lo, hi in ranges], pads.scalar(False)
    )
    orders = lake.tables.read_pandas(
        "silver_orders", columns=LINE_SOURCE_COLS, files=files, rows=rows
    )
    present = lake.tables.read_pandas("silver_order_lines", files=files, rows=rows)
    cols = list(S.ORDER_LINES_SCHEMA.names)
    expected = clean.order_lines(orders)[cols] if len(orders) else present.iloc[:0]
    pair = ["order_id", "line_no"]
    both = expected.merge(present[cols], on=cols, how="left", indicator=True)
    upserts = both.loc[both["_merge"] == "left_only", cols]
    stale = present.merge(expected[pair], on=pair, how="left", indicator=True)
    deletes = stale.loc[stale["_merge"] == "left_only", cols]
    changed = len(upserts) + len(deletes)
    if changed:
        logger.warning(
            "healing a half-committed merge of orders and their lines: %d line(s) written, "
            "%d deleted",
            len(upserts),
            len(deletes),
        )
        dates = set(present["order_date"]) | set(expected["order_date"])
        lake.tables.merge_lines(upserts, deletes, dates=dates)
    lines_merge_done(lake)
    return changed


def affected_dates_for_orders(
    incoming: pd.DataFrame, stored: pd.DataFrame, excluded_statuses: Collection[str]
) -> set[date]:
    """Dates whose gold rows can change when ``incoming`` replaces ``stored``."""
    if stored.empty:
        return set(incoming["order_date"])
    return gold.affected_dates_for_orders(incoming, stored, excluded_statuses)


class GoldRefresher:
    """Keeps ``gold/daily_revenue`` and ``gold/revenue_anomalies`` equal to a full recompute."""

    def __init__(self, lake: Lake, settings: Settings, observer: Observer | None = None) -> None:
        self.lake = lake
        self.settings = settings
        self.observer = observer or Observer()
        # The anomalies gold flags, kept only for an observer that watches them.
        self._flagged: set[Anomaly] | None = None
        self._products: tuple[int, pd.DataFrame] | None = None
        # gold/daily_revenue as last written by this process, sorted: (version, frame). Only
        # the single writer refreshes gold, so its own last write is the table's content.
        self._daily: tuple[int, pd.DataFrame] | None = None

    def products(self) -> pd.DataFrame:
        """Current silver products (price, category), cached by table version."""
        version = self.lake.tables.version("silver_products")
        if self._products is None or self._products[0] != version:
            self._products = (
                version,
                self.lake.tables.read_pandas("silver_products", columns=PRODUCT_COLS),
            )
        return self._products[1]

    def bring_up_to_date(self) -> float:
        """Recompute what changed since gold was last refreshed; returns milliseconds spent."""
        started = time.perf_counter()
        heal_order_lines(self.lake)  # silver must be consistent before gold reads it
        mark = self.lake.queries.gold_watermark()
        current = {t: self.lake.tables.version(t) for t in SOURCES}
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
            self._flagged = None
            raise
        return (time.perf_counter() - started) * 1000

    def _pending_dates(self, mark: dict[str, int | None]) -> set[date] | None:
        dates: set[date] = set()
        for table in SOURCES:
            since = mark[table]
            if since is None:
                return None
            commits = self.lake.tables.commit_metadata_since(table, since)
            if commits is None:
                logger.warning(
                    "silver log history before version %s is gone: rebuilding gold", since
                )
                return None
            for commit in commits:
                dates |= {date.fromisoformat(d) for d in json.loads(commit.get(AFFECTED_KEY, "[]"))}
        return dates

    def _update(self, dates: set[date], current: dict[str, int]) -> None:
        txns = self.lake.queries.watermark_txns(current)
        if not dates:
            # Silver moved without touching gold (maintenance, no-op merge): record it only.
            self.lake.tables.append("revenue_anomalies", _empty("revenue_anomalies"), txns=txns)
            return
        old_daily = self.daily()
        fresh = self._daily_for(dates)
        lo, hi = min(dates), max(dates)
        before = old_daily["order_date"] < lo
        after = old_daily["order_date"] > hi
        in_range = ~(before | after)
        kept_in_range = old_daily[in_range & ~old_daily["order_date"].isin(dates)]
        replacement = _sorted(pd.concat([kept_in_range, fresh], ignore_index=True))
        self.lake.tables.replace_where(
            "daily_revenue", replacement, f"order_date >= '{lo}' AND order_date <= '{hi}'"
        )
        # old_daily is sorted by (order_date, category): the rows before and after the range
        # keep their order, so the new table needs no sort of its whole length.
        new_daily = pd.concat([old_daily[before], replacement, old_daily[after]], ignore_index=True)
        self._daily = (self.lake.tables.version("daily_revenue"), new_daily)

        span = gold.anomaly_recompute_range(
            dates,
            old_newest=gold.newest_date(old_daily),
            new_newest=gold.newest_date(new_daily),
            old_first=gold.category_first_dates(old_daily),
            new_first=gold.category_first_dates(new_daily),
            window=self.settings.anomaly_window_days,
        )
        if span is None:
            self.lake.tables.append("revenue_anomalies", _empty("revenue_anomalies"), txns=txns)
            return
        scores = self._anomalies(new_daily, span.start, span.end)
        vanished = sorted(set(old_daily["category"].unique()) - set(new_daily["category"].unique()))
        predicate = f"(order_date >= '{span.start}' AND order_date <= '{span.delete_until}')"
        if vanished:
            predicate += " OR category IN ({})".format(", ".join(_sql_str(c) for c in vanished))
        known = self._known_anomalies()
        self.lake.tables.replace_where("revenue_anomalies", scores, predicate, txns=txns)
        if known is not None:
            lo, hi = str(span.start), str(span.delete_until)
            kept = {a for a in known if not (lo <= a[0] <= hi or a[1] in vanished)}
            self._note_anomalies(known, kept | _flagged(scores))

    def daily(self) -> pd.DataFrame:
        """gold/daily_revenue sorted by (order_date, category); cached across batches."""
        version = self.lake.tables.version("daily_revenue")
        if self._daily is None or self._daily[0] != version:
            self._daily = (version, _sorted(self.lake.tables.read_pandas("daily_revenue")))
        return self._daily[1]

    def _daily_for(self, dates: Iterable[date]) -> pd.DataFrame:
        orders = self.lake.queries.read_for_dates("silver_orders", dates, columns=ORDER_COLS)
        lines = self.lake.queries.read_for_dates("silver_order_lines", dates, columns=LINE_COLS)
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
        heal_order_lines(self.lake)
        current = current or {t: self.lake.tables.version(t) for t in SOURCES}
        orders = self.lake.tables.read_pandas("silver_orders", columns=ORDER_COLS)
        lines = self.lake.tables.read_pandas("silver_order_lines", columns=LINE_COLS)
        daily = gold.daily_revenue(orders, lines, self.products(), self.settings.excluded_statuses)
        self.lake.tables.replace_where("daily_revenue", daily, "true")
        scores = self._anomalies(daily, None, None)
        known = self._known_anomalies()
        self.lake.tables.replace_where(
            "revenue_anomalies", scores, "true", txns=self.lake.queries.watermark_txns(current)
        )
        if known is not None:
            self._note_anomalies(known, _flagged(scores))

    def _known_anomalies(self) -> set[Anomaly] | None:
        """What gold flags now (None: no observer watches): read once, then kept."""
        if not self.observer.watches_anomalies:
            return None
        if self._flagged is None:
            if self.lake.tables.is_created("revenue_anomalies"):
                flagged = self.lake.tables.read_pandas(
                    "revenue_anomalies",
                    columns=["order_date", "category", "is_anomaly"],
                    rows=pads.field("is_anomaly") == True,  # noqa: E712 (an Arrow expression)
                )
                self._flagged = _flagged(flagged)
            else:
                self._flagged = set()
        return self._flagged

    def _note_anomalies(self, before: set[Anomaly], after: set[Anomaly]) -> None:
        self._flagged = after
        new = sorted(after - before)
        if new:
            self.observer.new_anomalies(new)


def _flagged(scores: pd.DataFrame) -> set[Anomaly]:
    """The (day, category) pairs a frame of anomaly scores flags."""
    if scores.empty:
        return set()
    hit = scores[scores["is_anomaly"].fillna(False).astype(bool)]
    days = pd.to_datetime(hit["order_date"]).dt.strftime("%Y-%m-%d")
    return set(zip(days, hit["category"].astype(str), strict=True))


def _empty(table: str) -> pd.DataFrame:
    return TABLES[table].schema.empty_table().to_pandas()


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["order_date", "category"], kind="stable").reset_index(drop=True)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

"""The dashboard's data: ``views`` behind Streamlit caches keyed by table version.

An idle refresh only reads the table versions (one shared :class:`Lake` whose handles are
brought up to date incrementally); everything else is a cache hit until a version changes.
Large frames (silver orders) are cached as resources, so a hit does not copy them; the small
derived frames are cached as data (copied per hit, so callers cannot corrupt the cache).
Every public function returns the last good value (or an empty one) instead of raising, so a
refresh that races a commit or a compaction never shows a traceback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from ecom_stream.dashboard import views
from ecom_stream.storage.lake import TABLES, Lake
from ecom_stream.transform import insights

__all__ = [
    "anomalies", "catalogue_insights", "daily", "guarded", "lake", "ledger_summary", "overview",
    "preview", "problems", "products", "quality", "quarantine", "rejected", "start_run",
    "versions",
]  # fmt: skip

logger = logging.getLogger("ecom_stream.dashboard")
T = TypeVar("T")
OrderKey = tuple[int, int, int]
"""Versions of silver orders, order lines and products."""


def lake(root: str) -> Lake:
    """A Lake handle for reads at explicit versions (cheap to create)."""
    return Lake(Path(root))


def _empty(name: str) -> pd.DataFrame:
    return TABLES[name].schema.empty_table().to_pandas()


def guarded(key: str, load: Callable[..., T], *args: Any, default: T) -> T:
    """``load(*args)``, or the last value that loaded under ``key`` in this session."""
    store: dict[str, Any] = st.session_state.setdefault("_last_good", {})
    try:
        value = load(*args)
    except Exception as exc:  # racing a commit or a compaction, a damaged or missing file
        logger.warning("dashboard: loading %s failed, showing the last good data: %s", key, exc)
        st.session_state.setdefault("_problems", []).append(f"{key} ({type(exc).__name__})")
        return store.get(key, default)
    store[key] = value
    return value


def start_run() -> None:
    """Forget the previous run's problems."""
    st.session_state["_problems"] = []


def problems() -> list[str]:
    """What could not be loaded in this run (the last good data is shown instead)."""
    return list(st.session_state.get("_problems", []))


# -- versions ------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _shared_lake(root: str) -> tuple[Lake, threading.Lock, dict[str, int]]:
    return lake(root), threading.Lock(), {}


def _versions(root: str) -> dict[str, int]:
    shared, lock, last = _shared_lake(root)
    with lock:  # sessions run in threads; a Lake's handles are not meant to be shared unlocked
        if not shared.tables.exists():
            return {}
        found = views.table_versions(shared, previous=last)
        last.update(found)
        return found


def versions(root: str) -> dict[str, int]:
    """Every table's version, or {} for an empty lake: the only work of an idle refresh."""
    return guarded("versions", _versions, root, default={})


# -- silver --------------------------------------------------------------------------------
@st.cache_resource(max_entries=3, show_spinner=False)
def _orders(root: str, version: int, start: date | None, end: date | None) -> pd.DataFrame:
    return views.load_orders(lake(root), version, views.DateWindow(start, end))


@st.cache_resource(max_entries=3, show_spinner=False)
def _order_categories(
    root: str, lines_v: int, products_v: int, start: date | None, end: date | None
) -> pd.DataFrame:
    catalogue = _products(root, products_v)
    window = views.DateWindow(start, end)
    return views.load_order_categories(lake(root), lines_v, catalogue, window)


@st.cache_data(max_entries=4, show_spinner=False)
def _products(root: str, version: int) -> pd.DataFrame:
    return views.load_products(lake(root), version)


@st.cache_data(max_entries=32, show_spinner=False)
def _overview(
    root: str, key: OrderKey, f: views.Filters, excluded: tuple[str, ...]
) -> views.Overview:
    orders = _orders(root, key[0], f.start, f.end)
    cats = None if f.categories is None else _order_categories(root, *key[1:], f.start, f.end)
    return views.overview(views.apply_filters(orders, f, cats), excluded)


@st.cache_data(max_entries=8, show_spinner=False)
def _preview(root: str, key: OrderKey, newest: date | None, f: views.Filters) -> pd.DataFrame:
    cats = None if f.categories is None else _order_categories(root, *key[1:], f.start, f.end)
    return views.preview_orders(lake(root), key[0], newest, f, cats)


def _order_key(v: dict[str, int]) -> OrderKey:
    names = ("silver_orders", "silver_order_lines", "silver_products")
    orders, lines, catalogue = (v.get(n, views.MISSING) for n in names)
    return orders, lines, catalogue


@st.cache_data(max_entries=8, show_spinner=False)
def _catalogue_insights(
    root: str, version: int, categories: tuple[str, ...] | None
) -> dict[str, Any]:
    catalogue = _products(root, version)
    if categories is not None:
        catalogue = catalogue[catalogue["category"].isin(categories)]
    return insights.product_insights(catalogue)


def catalogue_insights(root: str, v: dict[str, int], f: views.Filters) -> dict[str, Any] | None:
    """The tutorial's catalogue statistics for the selected categories."""
    version = v.get("silver_products", views.MISSING)
    return guarded("catalogue", _catalogue_insights, root, version, f.categories, default=None)


def products(root: str, v: dict[str, int]) -> pd.DataFrame:
    """The product catalogue."""
    version = v.get("silver_products", views.MISSING)
    return guarded("products", _products, root, version, default=_empty("silver_products"))


def overview(
    root: str, v: dict[str, int], f: views.Filters, excluded: tuple[str, ...]
) -> views.Overview | None:
    """KPIs and order charts for the filters (None if it never loaded)."""
    return guarded("overview", _overview, root, _order_key(v), f, excluded, default=None)


def preview(root: str, v: dict[str, int], newest: date | None, f: views.Filters) -> pd.DataFrame:
    """The newest matching orders."""
    return guarded("preview", _preview, root, _order_key(v), newest, f, default=pd.DataFrame())


# -- gold and pipeline tables --------------------------------------------------------------
@st.cache_data(max_entries=4, show_spinner=False)
def _daily(root: str, version: int) -> pd.DataFrame:
    return views.load_daily_revenue(lake(root), version)


@st.cache_data(max_entries=4, show_spinner=False)
def _anomalies(root: str, version: int) -> pd.DataFrame:
    return views.load_anomalies(lake(root), version)


@st.cache_data(max_entries=4, show_spinner=False)
def _ledger_summary(root: str, version: int) -> tuple[dict[str, int], dict[str, Any] | None]:
    return views.ledger_summary(views.load_ledger(lake(root), version))


@st.cache_data(max_entries=4, show_spinner=False)
def _quality(root: str, version: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    checks = views.load_quality(lake(root), version)
    return views.pass_rate(checks), views.checks_summary(checks)


@st.cache_data(max_entries=4, show_spinner=False)
def _quarantine(root: str, version: int) -> pd.DataFrame:
    return views.load_quarantine(lake(root), version)


@st.cache_data(max_entries=4, show_spinner=False)
def _rejected(root: str, version: int) -> pd.DataFrame:
    return views.load_rejected(lake(root), version)


def _version(v: dict[str, int], name: str) -> int:
    return v.get(name, views.MISSING)


def daily(root: str, v: dict[str, int]) -> pd.DataFrame:
    """Gold daily revenue by category."""
    default = _empty("daily_revenue")
    return guarded("daily", _daily, root, _version(v, "daily_revenue"), default=default)


def anomalies(root: str, v: dict[str, int]) -> pd.DataFrame:
    """Gold anomalies (flagged days only)."""
    default = _empty("revenue_anomalies")
    return guarded("anomalies", _anomalies, root, _version(v, "revenue_anomalies"), default=default)


def ledger_summary(root: str, v: dict[str, int]) -> tuple[dict[str, int], dict[str, Any] | None]:
    """Batches per outcome and the newest batch."""
    return guarded("ledger", _ledger_summary, root, _version(v, "ledger"), default=({}, None))


def quality(root: str, v: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation pass rates over time and per expectation."""
    default = (views.pass_rate(pd.DataFrame()), views.checks_summary(pd.DataFrame()))
    return guarded("quality", _quality, root, _version(v, "quality_validations"), default=default)


def quarantine(root: str, v: dict[str, int]) -> pd.DataFrame:
    """Quarantined batches with their reasons."""
    version = _version(v, "quarantine_records")
    return guarded("quarantine", _quarantine, root, version, default=pd.DataFrame())


def rejected(root: str, v: dict[str, int]) -> pd.DataFrame:
    """Rejected rows by reason."""
    version = _version(v, "rejected_rows")
    return guarded("rejected", _rejected, root, version, default=pd.DataFrame())


def prefetch(
    root: str, v: dict[str, int], f: views.Filters, newest: date | None, excluded: tuple[str, ...]
) -> None:
    """Load everything the page shows, before its first chart is sent.

    A chart whose figure changed gets a new element identity, and Streamlit keeps the old one
    beside it until the re-run ends; loading first keeps that window to the drawing itself.
    """
    overview(root, v, f, excluded)
    catalogue_insights(root, v, f)
    anomalies(root, v)
    quality(root, v)
    rejected(root, v)
    quarantine(root, v)
    preview(root, v, newest, f)

"""The ecom-stream dashboard: a live view of the lake (``ecom-stream dashboard``).

Layout only: data comes through ``data`` (version-keyed caches around ``views``)
and figures from ``figures``. The sidebar's filters are read on a full run; everything that
follows the lake lives in one fragment that re-runs every ``dashboard_refresh_seconds``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ecom_stream.config import Settings
from ecom_stream.dashboard import data, figures, views
from ecom_stream.dashboard.steady import STEADY_CSS
from ecom_stream.errors import ConfigError

WINDOW_CHOICES = [*views.WINDOWS, "Custom"]
KPI_HELP = (
    "Sum of order totals, cancelled orders excluded.",
    "Orders matching the filters.",
    "Revenue / orders that earn revenue.",
    "Distinct customers with an order that earns revenue.",
)


@dataclass(frozen=True)
class Selection:
    """The sidebar's raw choices (resolved against the newest data on every refresh)."""

    categories: tuple[str, ...]
    all_categories: tuple[str, ...]
    statuses: tuple[str, ...]
    window: str
    custom: tuple[date, ...]


# -- sidebar -------------------------------------------------------------------------------
def sidebar(categories: list[str], bounds: tuple[date | None, date | None]) -> Selection:
    """Filters: category, status and order dates."""
    bar = st.sidebar
    bar.header("Filters")
    chosen = bar.multiselect("Category", categories, default=categories, key="f_categories")
    statuses = list(views.STATUSES)
    status = bar.multiselect("Order status", statuses, default=statuses, key="f_statuses")
    relative = "Relative ranges end at the newest order date, as data arrives."
    window = bar.selectbox("Order dates", WINDOW_CHOICES, key="f_window", help=relative)
    custom: tuple[date, ...] = ()
    if window == "Custom" and bounds[0] is not None and bounds[1] is not None:
        picked = bar.date_input("From - to", value=bounds, min_value=bounds[0],
                                max_value=bounds[1], key="f_custom")  # fmt: skip
        custom = tuple(picked) if isinstance(picked, tuple | list) else (picked,)
    bar.divider()
    bar.caption(
        "An order belongs to a category when one of its products does. Revenue counts every "
        "status except cancelled. Pipeline health and data quality are not filtered."
    )
    return Selection(tuple(chosen), tuple(categories), tuple(status), window, custom)


def resolve(sel: Selection, newest: date | None) -> tuple[views.Filters | None, str | None]:
    """Filters for the views, or a message saying why nothing can be shown."""
    if not sel.categories:
        return None, "No category selected: pick at least one category in the sidebar."
    if not sel.statuses:
        return None, "No order status selected: pick at least one status in the sidebar."
    custom = (sel.custom[0], sel.custom[1]) if len(sel.custom) == 2 else None
    if sel.window == "Custom" and custom is None:
        return None, "Pick both a start and an end date for the custom date range."
    win = views.resolve_window(sel.window, custom, newest)
    cats = None if set(sel.categories) >= set(sel.all_categories) else tuple(sorted(sel.categories))
    stats = None if set(sel.statuses) >= set(views.STATUSES) else tuple(sorted(sel.statuses))
    return views.Filters(cats, stats, win.start, win.end), None


@st.cache_data(max_entries=32, show_spinner=False)
def _figure(name: str, *args: Any) -> go.Figure:
    # Building a figure costs up to 0.2 s (plotly validates every property); its inputs are
    # small frames, cheap to hash, which only change when a table version does.
    return getattr(figures, name)(*args)


def chart(where: Any, name: str, *args: Any, key: str) -> None:
    """Draw ``figures.<name>(*args)`` (cached) into ``where`` (``st`` or a column)."""
    where.plotly_chart(_figure(name, *args), key=key)


# -- formatting ----------------------------------------------------------------------------
def money(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def money_short(value: float) -> str:
    """$812.40, $45.2K, $36.90M: fits a KPI card."""
    size = abs(value)
    if size >= 1e6:
        text = f"${size / 1e6:,.2f}M"
    elif size >= 1e4:
        text = f"${size / 1e3:,.1f}K"
    else:
        text = f"${size:,.2f}"
    return ("-" if value < 0 else "") + text


def count(value: float) -> str:
    return f"{value:,.0f}"


def signed(value: float, fmt: Callable[[float], str]) -> str:
    return ("+" if value >= 0 else "-") + fmt(abs(value))


def daemon_state(daemon: dict[str, Any] | None) -> tuple[str, str | None, bool]:
    """(state, heartbeat age, healthy) from the daemon's heartbeat."""
    if daemon is None:
        return "not running", None, False
    age = f"beat {daemon['age_seconds']:.0f} s ago"
    if daemon["alive"]:
        return "alive", age, True
    return ("stopped" if daemon.get("stopped") else "stale"), age, False


# -- sections ------------------------------------------------------------------------------
def header(root: str, settings: Settings, versions: dict[str, int], h: views.Health) -> None:
    st.title("ecom-stream: live sales and pipeline")
    state, age, _ = daemon_state(h.daemon)
    parts = [f"daemon **{state}**" + (f" ({age})" if age else "")]
    if h.last_batch:
        last = h.last_batch
        when = last["finished_at"].tz_convert(None).strftime("%Y-%m-%d %H:%M:%S")
        parts.append(f"last batch `{last['file']}` {last['outcome']} at {when} UTC "
                     f"in {last['latency_s']:.2f} s")  # fmt: skip
    parts.append(f"{h.backlog:,} waiting in landing")
    st.markdown(" · ".join(parts))
    stamp = datetime.now().strftime("%H:%M:%S")
    version = versions.get("silver_orders")
    st.caption(
        f"Lake `{root}` · looks for new data every {settings.dashboard_refresh_seconds:g} s, "
        f"no reload needed · checked {stamp}"
        + (f" · orders table v{version}" if version is not None else "")
    )


def kpi_row(ov: views.Overview) -> None:
    fmts = (money_short, count, money, count)
    note = " The change is what the newest order day added; the chart shows the last 30 days."
    latest = ov.latest_day.strftime("%d %b") if ov.latest_day else "-"
    for col, kpi, fmt, help_ in zip(st.columns(4), ov.kpis, fmts, KPI_HELP, strict=True):
        col.metric(
            kpi.label, fmt(kpi.value), border=True, help=help_ + note,
            delta=None if kpi.delta is None else signed(kpi.delta, fmt),
            delta_description=f"on {latest}", chart_data=kpi.daily or None, chart_type="area",
        )  # fmt: skip


def sales_section(ov: views.Overview) -> None:
    kpi_row(ov)
    left, right = st.columns([3, 2])
    chart(left, "monthly_chart", ov.monthly, key="monthly")
    chart(right, "status_chart", ov.by_status, key="status")
    left, right = st.columns([2, 3])
    chart(left, "city_chart", ov.by_city, key="city")
    chart(right, "heatmap_chart", ov.heatmap, key="heatmap")


def _or_dash(value: Any, fmt: Callable[[Any], str]) -> str:
    return "-" if value is None else fmt(value)


def insights_section(ov: views.Overview, catalogue: dict[str, Any] | None, products: pd.DataFrame,
                     shown: list[str]) -> None:  # fmt: skip
    """The tutorial's findings: customers, timing, basket, catalogue."""
    st.subheader("Insights")
    o, c = ov.insights, catalogue or {}
    hour, day = o["busiest_hour"], o["busiest_weekday"]
    customers = o["customers"]
    cards: list[tuple[str, str, str | None, str]] = [
        ("Repeat buyers", _or_dash(customers["repeat_rate"], "{:.0%}".format), None,
         "Share of customers with more than one order that earns revenue."),
        ("Top 10% spend", _or_dash(customers["top_10pct_spend_threshold"], money_short),
         None, "The 90th percentile of revenue per customer."),
        ("Busiest hour", _or_dash(hour, "{:02d}:00".format), day,
         "Hour of day, and weekday, with the most orders."),
        ("Items/order", _or_dash(o["average_items_per_order"], "{:.2f}".format), None,
         "Average number of distinct products per order."),
        ("Avg rating", _or_dash(c.get("rating", {}).get("mean"), "{:.2f}".format), "of 5",
         "Mean rating of the selected categories' products."),
        ("Out of stock", _or_dash(c.get("stock", {}).get("zero_stock"), "{:,}".format),
         "products", "Products of the selected categories with zero stock."),
    ]  # fmt: skip
    for col, (label, value, note, help_) in zip(st.columns(len(cards)), cards, strict=True):
        col.metric(label, value, delta=note, delta_color="off", delta_arrow="off", help=help_,
                   border=True, height="stretch")  # fmt: skip
    left, middle, right = st.columns([2, 1, 1])
    chart(left, "price_box_chart", products, shown, key="prices")
    if c.get("price_tiers"):
        chart(middle, "tiers_chart", c["price_tiers"], key="tiers")
    chart(right, "payment_chart", o["payment_method"], key="payments")
    st.caption("Catalogue figures (prices, tiers, rating, stock): only the category filter "
               "applies.")  # fmt: skip


def revenue_section(root: str, versions: dict[str, int], f: views.Filters) -> None:
    st.subheader("Daily revenue and anomalies")
    daily = views.daily_revenue_view(data.daily(root, versions), f)
    flagged = views.anomalies_view(data.anomalies(root, versions), f)
    if daily.empty:
        st.info("No daily revenue in the selected range yet.")
        return
    chart(st, "daily_revenue_chart", daily, flagged, key="daily")
    st.caption(
        f"{len(flagged)} anomalous day(s): revenue further from the rolling mean of the days "
        "before than the threshold allows (z-score). Gold revenue, so the status filter does "
        "not apply."
    )
    if flagged.empty:
        return
    columns = ["order_date", "category", "revenue", "rolling_mean", "rolling_std", "z_score"]
    dollars = st.column_config.NumberColumn
    st.dataframe(
        flagged.sort_values(["order_date", "category"], ascending=[False, True])[columns],
        hide_index=True, height=min(38 + 35 * len(flagged), 260), key="anomalies",
        column_config={
            "order_date": st.column_config.DateColumn("date", format="ddd DD MMM YYYY"),
            "revenue": dollars("revenue", format="dollar"),
            "rolling_mean": dollars("rolling mean", format="dollar"),
            "rolling_std": dollars("rolling std", format="dollar"),
            "z_score": dollars("z-score", format="%+.2f"),
        },
    )  # fmt: skip


def health_section(h: views.Health, settings: Settings) -> None:
    st.subheader("Pipeline health")
    state, age, healthy = daemon_state(h.daemon)
    last = h.last_batch
    daemon_help = None
    if h.daemon:
        daemon_help = f"pid {h.daemon.get('pid')}, {h.daemon.get('files_processed', 0)} files"
    cards: list[tuple[str, str, str | None]] = [
        ("Latency", f"{last['latency_s']:.2f} s" if last else "-",
         "Last batch: from reading the file to its ledger commit."),
        ("Merged", f"{h.outcomes.get('merged', 0):,}", None),
        ("Quarantined", f"{h.outcomes.get('quarantined', 0):,}", None),
        ("Duplicates", f"{h.outcomes.get('duplicate', 0):,}", None),
        ("Backlog", f"{h.backlog:,}", f"Files waiting in {settings.landing_dir.absolute()}."),
        ("Queue", f"{h.daemon.get('queue', 0):,}" if h.daemon else "-",
         "Files the daemon holds, waiting to be processed."),
    ]  # fmt: skip
    cols = st.columns(7)
    cols[0].metric("Daemon", state, delta=age, delta_color="normal" if healthy else "inverse",
                   delta_arrow="off", border=True, help=daemon_help, height="stretch")  # fmt: skip
    for col, (label, value, help_) in zip(cols[1:], cards, strict=True):
        col.metric(label, value, border=True, help=help_, height="stretch")
    st.caption("Merged, quarantined and duplicate count batch files in the ledger.")
    if h.daemon and h.daemon.get("last_error"):
        st.warning(f"The daemon's last error: {h.daemon['last_error']}")
    if h.sources:  # REST sources (ecom-stream pull): reported vs landed vs merged
        with st.expander("Sources: reported, landed, merged (last pull of each endpoint)"):
            st.dataframe(pd.DataFrame(h.sources), hide_index=True, key="sources")
    with st.expander("Table versions"):
        table = pd.DataFrame({"table": list(h.versions), "version": list(h.versions.values())})
        st.dataframe(table, hide_index=True, key="versions")


def quality_section(root: str, versions: dict[str, int]) -> None:
    st.subheader("Data quality")
    rates, checks = data.quality(root, versions)
    rejected = data.rejected(root, versions)
    left, right = st.columns(2)
    if rates.empty:
        left.info("No validations recorded yet.")
    else:
        chart(left, "pass_rate_chart", rates, key="pass_rate")
    if rejected.empty:
        right.success("No rows rejected.")
    else:
        chart(right, "rejected_chart", rejected, key="rejected")
    quarantine = data.quarantine(root, versions)
    st.markdown("**Quarantined batches**")
    if quarantine.empty:
        st.success("No batch quarantined.")
    else:
        columns = ["source_file", "entity", "reason", "quarantined_at", "in_quarantine"]
        config = st.column_config
        st.dataframe(
            quarantine[columns], hide_index=True, key="quarantine",
            column_config={
                "source_file": "file",
                "reason": config.TextColumn("reason", width="large"),
                "quarantined_at": config.DatetimeColumn("when", format="MMM DD HH:mm:ss"),
                "in_quarantine": config.CheckboxColumn("still there", help="not requeued"),
            },
        )  # fmt: skip
    with st.expander("Checks by expectation"):
        progress = st.column_config.ProgressColumn("passed", format="%.0f%%", min_value=0,
                                                   max_value=100)  # fmt: skip
        st.dataframe(checks, hide_index=True, key="checks", column_config={"pass_rate": progress})


def raw_section(
    root: str, versions: dict[str, int], f: views.Filters, products: pd.DataFrame,
    newest: date | None,
) -> None:  # fmt: skip
    st.subheader("Raw data")
    orders_tab, products_tab = st.tabs(["Recent orders", "Products"])
    with orders_tab:
        st.caption("The newest orders matching the filters (only the last 3 order days are read).")
        preview = data.preview(root, versions, newest, f)
        st.dataframe(preview, hide_index=True, height=300, key="orders_preview")
    with products_tab:
        shown = products
        if f.categories is not None:
            shown = products[products["category"].isin(f.categories)]
        shown = shown.sort_values("product_id").head(500)
        st.dataframe(shown, hide_index=True, height=300, key="products_preview")


def empty_state(root: str, settings: Settings, problems: list[str]) -> None:
    if problems:
        st.warning(f"The lake at `{root}` cannot be read right now ({', '.join(problems)}); "
                   "retrying on the next refresh.")  # fmt: skip
        return
    st.info(
        f"The lake at `{root}` is empty. Drop batch files into `{settings.landing_dir}` and run "
        "`ecom-stream watch` (or `ecom-stream backfill`), or start `ecom-stream demo`. This "
        "page updates by itself once data arrives."
    )


def live(settings: Settings, sel: Selection) -> None:
    """Everything that follows the lake; re-run every refresh interval."""
    data.start_run()
    root = str(settings.lake_dir.absolute())
    versions = data.versions(root)
    summary = data.ledger_summary(root, versions)
    fallback = views.Health(None, summary[0], summary[1], 0, {})
    h = data.guarded("health", views.health, data.lake(root), settings.landing_dir, summary,
                     versions, settings.heartbeat_stale_seconds, default=fallback)  # fmt: skip
    header(root, settings, versions, h)
    if not versions:
        empty_state(root, settings, data.problems())
        health_section(h, settings)
        return
    products = data.products(root, versions)
    newest = views.date_bounds(data.daily(root, versions))[1]
    filters, problem = resolve(sel, newest)
    if filters is None:
        st.warning(problem)
    else:
        data.prefetch(root, versions, filters, newest, settings.excluded_statuses)
        ov = data.overview(root, versions, filters, settings.excluded_statuses)
        if ov is None:
            st.warning("The orders could not be loaded yet; retrying on the next refresh.")
        elif ov.rows == 0:
            st.info("No orders match the filters: widen the date range or select more "
                    "categories or statuses.")  # fmt: skip
        else:
            shown = [c for c in sel.all_categories if filters.categories is None
                     or c in filters.categories]  # fmt: skip
            sales_section(ov)
            catalogue = data.catalogue_insights(root, versions, filters)
            insights_section(ov, catalogue, products, shown)
        revenue_section(root, versions, filters)
    health_section(h, settings)
    quality_section(root, versions)
    if filters is not None:
        raw_section(root, versions, filters, products, newest)
    if data.problems():
        st.caption("Showing the last good data for: " + ", ".join(data.problems()))


def main() -> None:
    st.set_page_config(page_title="ecom-stream", page_icon="🛒", layout="wide")
    st.html(STEADY_CSS)  # outside the fragment: sent once per full run, takes no space
    try:
        settings = Settings.from_sources(os.environ)
    except ConfigError as exc:
        st.error(f"ecom-stream dashboard: {exc}")
        return
    root = str(settings.lake_dir.absolute())
    versions = data.versions(root)
    categories = views.category_options(data.products(root, versions))
    sel = sidebar(categories, views.date_bounds(data.daily(root, versions)))
    st.fragment(run_every=settings.dashboard_refresh_seconds)(live)(settings, sel)


# Streamlit runs this file as ``__main__``; an import (``dashboard/app.py`` in a checkout) does not.
if __name__ == "__main__":
    main()

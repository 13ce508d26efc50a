"""Plotly figures of the dashboard: one function per chart, a fixed colour per category."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "ANOMALY_COLOR",
    "category_color",
    "city_chart",
    "daily_revenue_chart",
    "heatmap_chart",
    "monthly_chart",
    "pass_rate_chart",
    "payment_chart",
    "price_box_chart",
    "rejected_chart",
    "status_chart",
    "tiers_chart",
]

CATEGORY_COLORS = {
    "Electronics": "#4C78A8",
    "Clothing": "#F58518",
    "Home": "#54A24B",
    "Books": "#B279A2",
    "Sports": "#72B7B2",
    "Unknown": "#9D9D9D",
    "All": "#2F3B4C",
}
EXTRA_COLORS = ("#EECA3B", "#FF9DA6", "#9D755D", "#BAB0AC", "#86BCB6")
STATUS_COLORS = {
    "pending": "#BAB0AC",
    "confirmed": "#4C78A8",
    "shipped": "#72B7B2",
    "delivered": "#54A24B",
    "cancelled": "#E45756",
    "unknown": "#9D9D9D",
}
ACCENT = "#4C78A8"
PAYMENT_COLORS = ("#4C78A8", "#72B7B2", "#F58518", "#B279A2", "#9D9D9D")
ANOMALY_COLOR = "#D62728"
TOTAL_TITLE = "All categories (total)"
HEIGHT = 340


def category_color(category: str) -> str:
    """A fixed colour per category (unknown extra categories get a stable spare colour)."""
    if category in CATEGORY_COLORS:
        return CATEGORY_COLORS[category]
    return EXTRA_COLORS[sum(map(ord, category)) % len(EXTRA_COLORS)]


def _layout(fig: go.Figure, title: str, *, height: int = HEIGHT, legend: bool = False) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 16}},
        height=height,
        margin={"l": 10, "r": 10, "t": 48, "b": 10},
        showlegend=legend,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        hovermode="closest",
        # The page's Streamlit theme styles the chart; an empty template keeps the figure small
        # (the default one is most of its size, copied on every cache hit).
        template="none",
    )
    return fig


def monthly_chart(monthly: pd.DataFrame) -> go.Figure:
    """Revenue per month (bars) with the number of orders in the hover."""
    fig = go.Figure(
        go.Bar(
            x=monthly["order_month"],
            y=monthly["revenue"],
            marker_color=ACCENT,
            customdata=monthly["orders"],
            texttemplate="$%{y:,.0f}",
            textposition="auto",
            hovertemplate="%{x}<br>revenue $%{y:,.2f}<br>%{customdata:,} orders<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title=None)
    fig.update_yaxes(tickprefix="$", title=None)
    return _layout(fig, "Monthly revenue")


def status_chart(by_status: pd.DataFrame) -> go.Figure:
    """Orders per status as a donut."""
    fig = go.Figure(
        go.Pie(
            labels=by_status["status"],
            values=by_status["orders"],
            hole=0.55,
            sort=False,
            marker={"colors": [STATUS_COLORS.get(s, "#9D9D9D") for s in by_status["status"]]},
            textinfo="label+percent",
            hovertemplate="%{label}: %{value:,} orders<extra></extra>",
        )
    )
    return _layout(fig, "Orders by status")


def city_chart(by_city: pd.DataFrame, top: int = 12) -> go.Figure:
    """Revenue by shipping city, the ``top`` cities, largest on top."""
    data = by_city.head(top).iloc[::-1]
    fig = go.Figure(
        go.Bar(
            x=data["revenue"],
            y=data["city"],
            orientation="h",
            marker_color=ACCENT,
            customdata=data["orders"],
            texttemplate="$%{x:,.0f}",
            textposition="auto",
            hovertemplate="%{y}<br>revenue $%{x:,.2f}<br>%{customdata:,} orders<extra></extra>",
        )
    )
    fig.update_xaxes(tickprefix="$", title=None)
    fig.update_yaxes(title=None)
    return _layout(fig, f"Revenue by city (top {min(top, len(by_city))})")


def heatmap_chart(heatmap: pd.DataFrame) -> go.Figure:
    """Orders by weekday (calendar order, Monday on top) and hour of day."""
    fig = go.Figure(
        go.Heatmap(
            z=heatmap.to_numpy(),
            x=[f"{h:02d}" for h in heatmap.columns],
            y=list(heatmap.index),
            colorscale="Blues",
            colorbar={"title": "orders", "thickness": 12},
            hovertemplate="%{y} %{x}:00<br>%{z:,} orders<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title=None)
    fig.update_xaxes(title="hour of day", type="category")
    return _layout(fig, "Order volume by weekday and hour")


def price_box_chart(products: pd.DataFrame, categories: Sequence[str]) -> go.Figure:
    """Price distribution of the catalogue per category."""
    fig = go.Figure()
    for category in categories:
        prices = products.loc[products["category"] == category, "price"].dropna()
        if prices.empty:
            continue
        fig.add_trace(
            go.Box(
                y=prices,
                name=category,
                marker_color=category_color(category),
                boxmean=True,
                boxpoints="outliers",
            )
        )
    ticks = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
    fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"${t:,}" for t in ticks],
                     title="price (log scale)")  # fmt: skip
    return _layout(fig, "Price distribution by category")


def daily_revenue_chart(
    daily: pd.DataFrame, anomalies: pd.DataFrame, columns: int = 3
) -> go.Figure:
    """Daily revenue, one small panel per category (own y scale), anomalies as red circles."""
    categories = list(dict.fromkeys(daily["category"]))
    rows = -(-len(categories) // columns)
    fig = make_subplots(
        rows=rows,
        cols=columns,
        shared_xaxes=True,
        subplot_titles=[TOTAL_TITLE if c == "All" else c for c in categories],
        vertical_spacing=0.12 / max(rows - 1, 1) + 0.04,
        horizontal_spacing=0.06,
    )
    for i, category in enumerate(categories):
        row, col = i // columns + 1, i % columns + 1
        data = daily[daily["category"] == category]
        fig.add_trace(
            go.Scatter(
                x=data["order_date"],
                y=data["revenue"],
                mode="lines",
                name=category,
                line={"color": category_color(category), "width": 2},
                fill="tozeroy",
                fillcolor=_fade(category_color(category)),
                hovertemplate=f"{category}<br>%{{x|%a %d %b %Y}}<br>$%{{y:,.2f}}<extra></extra>",
            ),
            row=row,
            col=col,
        )
        flagged = anomalies[anomalies["category"] == category]
        if not flagged.empty:
            fig.add_trace(_anomaly_markers(flagged, category), row=row, col=col)
    fig.update_yaxes(tickprefix="$", rangemode="tozero", title=None)
    # One time range for every panel (autorange pads panels with edge markers differently).
    half_day = pd.Timedelta(hours=12)
    span = [pd.Timestamp(daily["order_date"].min()) - half_day,
            pd.Timestamp(daily["order_date"].max()) + half_day]  # fmt: skip
    fig.update_xaxes(title=None, showticklabels=True, matches="x", range=span)
    for annotation in fig.layout.annotations:  # panel titles in the category colour
        name = "All" if annotation.text == TOTAL_TITLE else annotation.text
        annotation.update(font={"size": 13, "color": category_color(name)})
    return _layout(
        fig, "Daily revenue by category (red circles: anomalies)", height=230 * rows + 60
    )


def _anomaly_markers(flagged: pd.DataFrame, category: str) -> go.Scatter:
    """Red open circles on the flagged days of one category, with z-score and baseline."""
    return go.Scatter(
        x=flagged["order_date"],
        y=flagged["revenue"],
        mode="markers",
        cliponaxis=False,
        name="anomaly",
        marker={
            "color": ANOMALY_COLOR,
            "size": 10,
            "symbol": "circle-open",
            "line": {"width": 3},
        },
        customdata=flagged[["z_score", "rolling_mean"]].to_numpy(),
        hovertemplate=(
            f"anomaly in {category}<br>%{{x|%a %d %b %Y}}<br>$%{{y:,.2f}}"
            "<br>z = %{customdata[0]:+.2f} (rolling mean $%{customdata[1]:,.0f})"
            "<extra></extra>"
        ),
    )


def _fade(color: str, alpha: float = 0.12) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def pass_rate_chart(rates: pd.DataFrame) -> go.Figure:
    """Share of checks passed and of batches accepted, per time bucket."""
    fig = go.Figure()
    for column, name, color in (
        ("checks_passed", "checks passed", ACCENT),
        ("batches_accepted", "batches accepted", "#54A24B"),
    ):
        fig.add_trace(
            go.Scatter(
                x=rates["validated_at"],
                y=rates[column],
                mode="lines+markers",
                name=name,
                line={"color": color},
                customdata=rates["batches"],
                hovertemplate=f"%{{x}}<br>{name}: %{{y:.1f}}%<br>%{{customdata}} batches"
                "<extra></extra>",
            )
        )
    fig.update_yaxes(range=[0, 105], ticksuffix="%", title=None)
    fig.update_xaxes(title=None)
    return _layout(fig, "Validation pass rate over time", height=300, legend=True)


def rejected_chart(rejected: pd.DataFrame) -> go.Figure:
    """Rejected rows per reason (entity in the hover)."""
    data = rejected.iloc[::-1]
    labels = data["reason"].fillna("(no reason)").astype(str).tolist()
    fig = go.Figure(
        go.Bar(
            x=data["rows"],
            y=labels,
            orientation="h",
            marker_color="#E45756",
            texttemplate="%{x:,}",
            textposition="auto",
            customdata=data["entity"],
            hovertemplate="%{customdata}: %{y}<br>%{x:,} rows<extra></extra>",
        )
    )
    fig.update_xaxes(title=None)
    fig.update_yaxes(title=None)
    return _layout(fig, "Rejected rows by reason", height=300)


def payment_chart(counts: dict[str, int]) -> go.Figure:
    """Orders per payment method as a donut."""
    labels = [k for k, v in counts.items() if v]
    colors = [PAYMENT_COLORS[i % len(PAYMENT_COLORS)] for i in range(len(labels))]
    fig = go.Figure(
        go.Pie(
            labels=[label.replace("_", " ") for label in labels],
            values=[counts[k] for k in labels],
            hole=0.55,
            sort=False,
            marker={"colors": colors},
            textinfo="label+percent",
            hovertemplate="%{label}: %{value:,} orders<extra></extra>",
        )
    )
    return _layout(fig, "Payment methods")


def tiers_chart(tiers: dict[str, int]) -> go.Figure:
    """Products per price tier, cheapest first."""
    fig = go.Figure(
        go.Bar(
            x=list(tiers), y=list(tiers.values()), marker_color=ACCENT, texttemplate="%{y:,}",
            textposition="auto", hovertemplate="%{x}: %{y:,} products<extra></extra>",
        )
    )  # fmt: skip
    fig.update_xaxes(type="category", title=None)
    fig.update_yaxes(title=None)
    return _layout(fig, "Products by price tier")

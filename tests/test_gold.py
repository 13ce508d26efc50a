"""Gold transforms: the revenue split, anomaly scores and the incremental helpers.

Property tests compare ``daily_revenue`` with a slow exact reference, anomalies on slices with
anomalies on the whole series, and an incrementally maintained gold with full recomputes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecom_stream.contract.schema import ANOMALIES_SCHEMA, DAILY_REVENUE_SCHEMA
from ecom_stream.transform import gold

D0 = date(2024, 1, 1)
EXCLUDED = ("cancelled",)
STATUSES = ("pending", "shipped", "delivered", "cancelled", "unknown")
CATS = ("Books", "Home", "Sports")
FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def day(n: int) -> date:
    return D0 + timedelta(days=n)


@dataclass(frozen=True)
class Order:
    order_id: int
    day: int
    cents: int
    status: str
    lines: tuple[tuple[int, int], ...]  # (product_id, quantity)


@dataclass(frozen=True)
class Product:
    price: float
    category: str | None


def orders_frame(orders: Iterable[Order]) -> pd.DataFrame:
    """Silver-like orders (with list columns, like ``clean_orders``)."""
    orders = list(orders)
    return pd.DataFrame(
        {
            "order_id": pd.Series([o.order_id for o in orders], dtype="int64"),
            "total": pd.Series([o.cents / 100 for o in orders], dtype="float64"),
            "status": pd.Series([o.status for o in orders], dtype=object),
            "order_date": pd.Series([day(o.day) for o in orders], dtype=object),
            "product_ids": pd.Series([[p for p, _ in o.lines] for o in orders], dtype=object),
            "quantities": pd.Series([[q for _, q in o.lines] for o in orders], dtype=object),
            "n_items": pd.Series([len(o.lines) for o in orders], dtype="int64"),
        }
    )


def lines_frame(orders: Iterable[Order]) -> pd.DataFrame:
    rows = [
        (o.order_id, i + 1, p, q, day(o.day))
        for o in orders
        for i, (p, q) in enumerate(o.lines)
    ]
    return pd.DataFrame(
        {
            "order_id": pd.Series([r[0] for r in rows], dtype="int64"),
            "line_no": pd.Series([r[1] for r in rows], dtype="int64"),
            "product_id": pd.Series([r[2] for r in rows], dtype="int64"),
            "quantity": pd.Series([r[3] for r in rows], dtype="int64"),
            "order_date": pd.Series([r[4] for r in rows], dtype=object),
        }
    )


def products_frame(products: dict[int, Product]) -> pd.DataFrame:
    ids = sorted(products)
    return pd.DataFrame(
        {
            "product_id": pd.Series(ids, dtype="int64"),
            "price": pd.Series([products[i].price for i in ids], dtype="float64"),
            "category": pd.Series([products[i].category for i in ids], dtype=object),
        }
    )


def daily_of(orders: Sequence[Order], products: dict[int, Product]) -> pd.DataFrame:
    return gold.daily_revenue(
        orders_frame(orders), lines_frame(orders), products_frame(products), EXCLUDED
    )


def shares_of(order: Order, products: dict[int, Product]) -> list[int]:
    """Reference split: exact largest remainder with Python integers."""
    cents = [round(products[p].price * 100) if p in products else 0 for p, _ in order.lines]
    weights = [c * q if c >= 1 else 0 for c, (_, q) in zip(cents, order.lines, strict=True)]
    if sum(weights) == 0:
        weights = [q for _, q in order.lines]
    whole = sum(weights)
    base = [order.cents * w // whole for w in weights]
    rest = [order.cents * w % whole for w in weights]
    left = order.cents - sum(base)
    for i in sorted(range(len(weights)), key=lambda i: (-rest[i], i))[:left]:
        base[i] += 1
    return base


def category_of(pid: int, products: dict[int, Product]) -> str:
    p = products.get(pid)
    return p.category or "Unknown" if p is not None else "Unknown"


def reference_daily(orders: Sequence[Order], products: dict[int, Product]) -> pd.DataFrame:
    acc: dict[tuple[int, str], list[Any]] = defaultdict(lambda: [0, set(), 0])
    for o in orders:
        if o.status in EXCLUDED:
            continue
        for (pid, qty), share in zip(o.lines, shares_of(o, products), strict=True):
            row = acc[(o.day, category_of(pid, products))]
            row[0] += share
            row[1].add(o.order_id)
            row[2] += qty
        row = acc[(o.day, "All")]
        row[0] += o.cents
        row[1].add(o.order_id)
        row[2] += sum(q for _, q in o.lines)
    keys = sorted(acc)
    return pd.DataFrame(
        {
            "order_date": pd.Series([day(d) for d, _ in keys], dtype=object),
            "category": pd.Series([c for _, c in keys], dtype=str),
            "revenue": pd.Series([acc[k][0] / 100 for k in keys], dtype="float64"),
            "revenue_cents": pd.Series([acc[k][0] for k in keys], dtype="int64"),
            "orders": pd.Series([len(acc[k][1]) for k in keys], dtype="int64"),
            "units": pd.Series([acc[k][2] for k in keys], dtype="int64"),
        }
    )


# -- strategies ------------------------------------------------------------------------------
PIDS = st.integers(1, 8)
product_st = st.builds(
    Product,
    price=st.integers(1, 50_000).map(lambda c: c / 100),
    category=st.sampled_from((*CATS, None)),
)
products_st = st.dictionaries(PIDS, product_st, max_size=8)
lines_st = st.lists(st.tuples(PIDS, st.integers(1, 5)), min_size=1, max_size=4).map(tuple)


def order_st(order_id: int, max_day: int = 9) -> st.SearchStrategy[Order]:
    return st.builds(
        Order,
        order_id=st.just(order_id),
        day=st.integers(0, max_day),
        cents=st.one_of(st.integers(0, 3), st.integers(0, 200_000)),
        status=st.sampled_from(STATUSES),
        lines=lines_st,
    )


@st.composite
def orders_st(draw: st.DrawFn, max_orders: int = 12) -> list[Order]:
    ids = draw(st.lists(st.integers(1, 10_000), unique=True, max_size=max_orders))
    return [draw(order_st(i)) for i in ids]


# -- daily revenue ---------------------------------------------------------------------------
@FAST
@given(orders=orders_st(), products=products_st, seed=st.integers(0, 2**31))
def test_daily_revenue_matches_exact_reference(
    orders: list[Order], products: dict[int, Product], seed: int
) -> None:
    out = daily_of(orders, products)
    pd.testing.assert_frame_equal(out, reference_daily(orders, products), check_exact=True)
    # Invariants, stated directly.
    assert list(out.columns) == list(gold.DAILY_COLUMNS)
    assert (out["orders"] > 0).all()
    for o in orders:
        assert sum(shares_of(o, products)) == o.cents
    by_day = out[out["category"] != "All"].groupby("order_date")["revenue_cents"].sum()
    all_rows = out[out["category"] == "All"].set_index("order_date")["revenue_cents"]
    pd.testing.assert_series_equal(by_day, all_rows, check_names=False)
    # Cancelled orders appear nowhere.
    kept = [o for o in orders if o.status not in EXCLUDED]
    assert out.loc[out["category"] == "All", "orders"].sum() == len(kept)
    # Same rows whatever the input row order.
    rng = np.random.default_rng(seed)
    o_df, l_df = orders_frame(orders), lines_frame(orders)
    p_df = products_frame(products)
    shuffled = gold.daily_revenue(
        o_df.iloc[rng.permutation(len(o_df))],
        l_df.iloc[rng.permutation(len(l_df))],
        p_df.iloc[rng.permutation(len(p_df))],
        EXCLUDED,
    )
    pd.testing.assert_frame_equal(shuffled, out, check_exact=True)


@FAST
@given(orders=orders_st(), products=products_st)
def test_cancelled_orders_change_nothing(orders: list[Order], products: dict[int, Product]) -> None:
    cancelled = [replace(o, order_id=o.order_id + 20_000, status="cancelled") for o in orders]
    pd.testing.assert_frame_equal(
        daily_of(orders + cancelled, products), daily_of(orders, products), check_exact=True
    )


def test_unknown_product_goes_to_unknown_and_split_by_quantity() -> None:
    orders = [Order(1, 0, 1000, "pending", ((7, 1), (8, 3)))]
    out = daily_of(orders, {})
    assert out[["category", "revenue_cents", "orders", "units"]].values.tolist() == [
        ["All", 1000, 1, 4],
        ["Unknown", 1000, 1, 4],
    ]
    assert shares_of(orders[0], {}) == [250, 750]


def test_split_by_quantity_when_no_line_is_priced() -> None:
    products = {1: Product(float("nan"), "Books")}
    out = daily_of([Order(1, 0, 1000, "pending", ((1, 1), (2, 3)))], products)
    rows = out.set_index("category")["revenue_cents"].to_dict()
    assert rows == {"All": 1000, "Books": 250, "Unknown": 750}


def test_unpriced_lines_get_no_revenue_but_their_units_count() -> None:
    products = {1: Product(10.0, "Books"), 2: Product(30.0, "Home")}
    out = daily_of([Order(1, 0, 999, "shipped", ((1, 1), (9, 5), (2, 1)))], products)
    rows = out.set_index("category")[["revenue_cents", "orders", "units"]].T.to_dict("list")
    assert rows == {
        "All": [999, 1, 7], "Books": [250, 1, 1], "Home": [749, 1, 1], "Unknown": [0, 1, 5],
    }


def test_remainder_ties_go_to_the_lowest_line_no() -> None:
    products = {1: Product(5.0, "Books"), 2: Product(5.0, "Home")}
    out = daily_of([Order(1, 0, 1, "pending", ((2, 1), (1, 1)))], products)
    assert out.set_index("category")["revenue_cents"].to_dict() == {"All": 1, "Books": 0, "Home": 1}


def test_huge_quantities_take_the_exact_path() -> None:
    products = {1: Product(99_999.99, "Books"), 2: Product(0.01, "Home")}
    orders = [Order(1, 0, 123_456_789, "pending", ((1, 2**40), (2, 2**40), (1, 3)))]
    out = daily_of(orders, products)
    assert out.set_index("category")["revenue_cents"].to_dict() == {
        "All": 123_456_789,
        "Books": sum(shares_of(orders[0], products)[i] for i in (0, 2)),
        "Home": shares_of(orders[0], products)[1],
    }


def test_empty_inputs_give_an_empty_table_with_the_schema() -> None:
    out = daily_of([], {})
    assert out.empty and list(out.columns) == list(gold.DAILY_COLUMNS)
    pa.Table.from_pandas(out, schema=DAILY_REVENUE_SCHEMA, preserve_index=False)
    only_cancelled = daily_of([Order(1, 0, 500, "cancelled", ((1, 1),))], {})
    assert only_cancelled.empty


def test_outputs_fit_the_table_schemas() -> None:
    orders = [Order(i, i % 9, 100 * i, "pending", ((i % 3, 1),)) for i in range(1, 30)]
    daily = daily_of(orders, {1: Product(2.0, "Books")})
    table = pa.Table.from_pandas(daily, schema=DAILY_REVENUE_SCHEMA, preserve_index=False)
    assert table.num_rows == len(daily)
    scores = gold.anomalies(daily, window=3, min_history=2)
    table = pa.Table.from_pandas(scores, schema=ANOMALIES_SCHEMA, preserve_index=False)
    assert table.column("z_score").null_count == int(scores["z_score"].isna().sum())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o, ln: (pd.concat([o, o.iloc[:1]]), ln), "duplicate order_id"),
        (lambda o, ln: (o, pd.concat([ln, ln.iloc[:1]])), "duplicate"),
        (lambda o, ln: (o.iloc[1:], ln), "without their order"),
        (lambda o, ln: (o, ln[ln["order_id"] != 1]), "without lines"),
        (lambda o, ln: (o, ln[(ln["order_id"] != 1) | (ln["line_no"] != 1)]), "1..n_items"),
        (lambda o, ln: (o.drop(columns="n_items"), ln[ln["line_no"] != 2]), None),
        (lambda o, ln: (o, ln.assign(order_date=day(5))), "order_date"),
    ],
)
def test_inconsistent_inputs_raise(mutate: Any, message: str | None) -> None:
    orders = [Order(1, 0, 100, "pending", ((1, 1), (2, 1))), Order(2, 1, 50, "pending", ((1, 1),))]
    o, ln = mutate(orders_frame(orders), lines_frame(orders))
    products = products_frame({1: Product(1.0, "Books")})
    if message is None:  # without n_items, a trailing line that went missing is not visible
        assert gold.daily_revenue(o, ln, products, EXCLUDED)["units"].iloc[0] == 1
        return
    with pytest.raises(gold.GoldConsistencyError, match=message):
        gold.daily_revenue(o, ln, products, EXCLUDED)


def test_duplicate_products_raise() -> None:
    products = pd.concat([products_frame({1: Product(1.0, "Books")})] * 2)
    orders = [Order(1, 0, 100, "pending", ((1, 1),))]
    with pytest.raises(gold.GoldConsistencyError, match="product_id"):
        gold.daily_revenue(orders_frame(orders), lines_frame(orders), products, EXCLUDED)


def test_hundred_days_of_three_thousand_orders_add_up() -> None:
    """300k orders at once (a backfill's scale): every day's cents equal its orders' totals."""
    rng = np.random.default_rng(7)
    n = 300_000
    oid = rng.permutation(n).astype(np.int64)
    days = np.repeat(np.arange(100), 3000)
    dates = pd.Series([day(int(d)) for d in range(100)], dtype=object).to_numpy()[days]
    n_lines = rng.integers(1, 5, n)
    line_no = np.arange(n_lines.sum()) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines) + 1
    orders = pd.DataFrame(
        {
            "order_id": oid,
            "total": np.round(rng.uniform(1, 500, n), 2),
            "status": rng.choice(np.array(STATUSES, dtype=object), n),
            "order_date": dates,
        }
    )
    lines = pd.DataFrame(
        {
            "order_id": np.repeat(oid, n_lines),
            "line_no": line_no,
            "product_id": rng.integers(0, 1200, n_lines.sum()),
            "quantity": rng.integers(1, 4, n_lines.sum()),
            "order_date": np.repeat(dates, n_lines),
        }
    )
    products = pd.DataFrame(
        {
            "product_id": np.arange(1000),
            "price": np.round(rng.uniform(1, 300, 1000), 2),
            "category": rng.choice(np.array(CATS, dtype=object), 1000),
        }
    )
    daily = gold.daily_revenue(orders, lines, products, EXCLUDED)
    scores = gold.anomalies(daily)
    assert len(daily) == 100 * 5 and len(scores) == 100 * 5
    kept = orders[~orders["status"].isin(EXCLUDED)]
    cents = (kept["total"] * 100).round().astype(np.int64).groupby(kept["order_date"]).sum()
    all_rows = daily[daily["category"] == "All"].set_index("order_date")["revenue_cents"]
    assert all_rows.sort_index().tolist() == cents.sort_index().tolist()


# -- anomalies -------------------------------------------------------------------------------
def series_frame(values: dict[str, dict[int, int]]) -> pd.DataFrame:
    """A daily revenue frame from {category: {day: cents}} (orders = 1 everywhere)."""
    rows = sorted((d, c, v) for c, days in values.items() for d, v in days.items())
    return pd.DataFrame(
        {
            "order_date": pd.Series([day(d) for d, _, _ in rows], dtype=object),
            "category": pd.Series([c for _, c, _ in rows], dtype=str),
            "revenue": pd.Series([v / 100 for _, _, v in rows], dtype="float64"),
            "revenue_cents": pd.Series([v for _, _, v in rows], dtype="int64"),
            "orders": pd.Series([1] * len(rows), dtype="int64"),
            "units": pd.Series([1] * len(rows), dtype="int64"),
        }
    )


@st.composite
def series_st(draw: st.DrawFn) -> dict[str, dict[int, int]]:
    cats = draw(st.lists(st.sampled_from(("All", *CATS)), min_size=1, max_size=4, unique=True))
    values = st.one_of(st.just(0), st.integers(0, 10**4), st.integers(0, 10**11))
    out = {}
    for c in cats:
        days = draw(st.dictionaries(st.integers(0, 60), values, min_size=1, max_size=40))
        out[c] = days
    return out


def assert_bit_identical(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    assert a["order_date"].tolist() == b["order_date"].tolist()
    assert a["category"].tolist() == b["category"].tolist()
    for col in ("revenue", "rolling_mean", "rolling_std", "z_score"):
        x, y = a[col].to_numpy(np.float64), b[col].to_numpy(np.float64)
        assert np.array_equal(np.isnan(x), np.isnan(y)), col
        assert np.array_equal(x.view(np.int64)[~np.isnan(x)], y.view(np.int64)[~np.isnan(y)]), col
    assert a["is_anomaly"].tolist() == b["is_anomaly"].tolist()


@FAST
@given(
    values=series_st(),
    window=st.integers(2, 10),
    history=st.integers(2, 10),
    threshold=st.sampled_from((0.5, 1.0, 2.0, 3.0)),
    bounds=st.tuples(st.integers(-5, 70), st.integers(-5, 70)),
)
def test_anomalies_on_a_slice_are_bit_identical_to_the_full_series(
    values: dict[str, dict[int, int]], window: int, history: int, threshold: float,
    bounds: tuple[int, int],
) -> None:
    history = min(history, window)
    daily = series_frame(values)
    kw = {"window": window, "min_history": history, "threshold": threshold}
    full = gold.anomalies(daily, **kw)
    lo, hi = sorted(bounds)
    start, end = day(lo), day(hi)
    part = daily[daily["order_date"].between(day(lo - window), end)]
    sliced = gold.anomalies(
        part, **kw, start=start, end=end,
        first_dates=gold.category_first_dates(daily), newest=gold.newest_date(daily),
    )
    expected = full[full["order_date"].between(start, end)]
    assert_bit_identical(sliced, expected)
    # The values themselves agree with a direct computation of the definition: a series
    # holds the days from its first to the newest day, except days with no data (of any
    # category) among themselves and the window days before them.
    newest = max(max(d) for d in values.values())
    data_days = {d for days in values.values() for d in days}
    for cat, days in values.items():
        got = full[full["category"] == cat]
        span = range(min(days), newest + 1)
        live = [d for d in span if any(d - window <= x <= d for x in data_days)]
        assert got["order_date"].tolist() == [day(d) for d in live]
        revenue = np.array([days.get(d, 0) / 100 for d in span])
        np.testing.assert_array_equal(got["revenue"], [days.get(d, 0) / 100 for d in live])
        stats = zip(got["rolling_mean"], got["rolling_std"], strict=True)
        for i, (mean, std) in zip([d - min(days) for d in live], stats, strict=True):
            prior = revenue[max(0, i - window) : i]
            if len(prior) < history:
                assert np.isnan(mean) and np.isnan(std)
                continue
            assert mean == pytest.approx(prior.mean(), rel=1e-12, abs=1e-12)
            assert std == pytest.approx(prior.std(ddof=1), rel=1e-9, abs=1e-12 * prior.max())


def test_days_before_min_history_are_not_scored() -> None:
    daily = series_frame({"All": {d: 100 + d for d in range(10)}})
    out = gold.anomalies(daily, window=5, min_history=3)
    early = out.iloc[:3]
    assert early[["rolling_mean", "rolling_std", "z_score"]].isna().all().all()
    assert not early["is_anomaly"].any()
    assert out.iloc[3:]["rolling_mean"].notna().all()
    assert out.iloc[3]["rolling_mean"] == pytest.approx((1.00 + 1.01 + 1.02) / 3)


def test_constant_history_has_null_z_and_no_flag() -> None:
    daily = series_frame({"All": {**{d: 500 for d in range(10)}, 10: 900}})
    out = gold.anomalies(daily, window=5, min_history=3)
    assert (out["rolling_std"].iloc[3:] == 0).all()
    assert out["z_score"].isna().all()
    assert not out["is_anomaly"].any()


def test_a_spike_is_flagged_and_the_day_is_not_in_its_own_window() -> None:
    values = {d: 10_000 + (d % 2) * 200 for d in range(10)} | {10: 50_000}
    out = gold.anomalies(series_frame({"All": values}), window=4, min_history=4)
    spike = out.iloc[10]
    assert spike["rolling_mean"] == pytest.approx(101.0)  # days 6..9 only
    assert spike["rolling_std"] == pytest.approx(np.std([100, 102, 100, 102], ddof=1))
    assert spike["is_anomaly"] and spike["z_score"] > 2
    assert not out.iloc[:10]["is_anomaly"].any()


def test_missing_days_count_as_zero_and_series_run_to_the_global_newest_day() -> None:
    daily = series_frame({"All": {0: 100, 4: 100}, "Books": {2: 300}})
    out = gold.anomalies(daily, window=3, min_history=2)
    books = out[out["category"] == "Books"]
    assert books["order_date"].tolist() == [day(2), day(3), day(4)]
    assert books["revenue"].tolist() == [3.0, 0.0, 0.0]
    assert out[out["category"] == "All"]["revenue"].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    last = out[out["order_date"] == day(4)].set_index("category")["rolling_mean"]
    assert last.to_dict() == {"All": 0.0, "Books": 1.5}  # All: days 1..3 are zero


def test_empty_and_out_of_range_inputs() -> None:
    empty = series_frame({})
    assert gold.anomalies(empty).empty
    daily = series_frame({"All": {0: 1, 1: 2}})
    assert gold.anomalies(daily, start=day(5)).empty
    assert gold.anomalies(daily, start=day(1), end=day(0)).empty
    with pytest.raises(ValueError, match="first_dates"):
        gold.anomalies(daily, first_dates={"Books": day(0)}, newest=day(1))


# -- incremental helpers -------------------------------------------------------------------
def test_affected_dates_for_orders() -> None:
    old = [
        Order(1, 0, 100, "pending", ((1, 1),)),
        Order(2, 1, 100, "pending", ((1, 1), (2, 2))),
        Order(3, 2, 100, "cancelled", ((1, 1),)),
        Order(4, 3, 100, "shipped", ((1, 1),)),
    ]
    stored = orders_frame(old)
    # Stored lists come back from the lake as numpy arrays.
    stored["product_ids"] = stored["product_ids"].map(np.array)
    stored["quantities"] = stored["quantities"].map(np.array)

    def affected(new: list[Order], excluded: Sequence[str] | None = None) -> set[date]:
        return gold.affected_dates_for_orders(orders_frame(new), stored, excluded)

    assert affected(old) == set()
    assert affected([Order(9, 7, 1, "pending", ((1, 1),))]) == {day(7)}
    assert affected([Order(9, 7, 1, "cancelled", ((1, 1),))]) == {day(7)}
    assert affected([Order(9, 7, 1, "cancelled", ((1, 1),))], EXCLUDED) == set()
    assert affected([replace(old[0], day=5)]) == {day(0), day(5)}
    assert affected([replace(old[0], cents=101)]) == {day(0)}
    assert affected([replace(old[1], lines=((1, 1), (2, 3)))]) == {day(1)}
    assert affected([replace(old[1], lines=((2, 2), (1, 1)))]) == {day(1)}
    assert affected([replace(old[1], lines=((1, 1),))]) == {day(1)}
    assert affected([replace(old[0], status="shipped")]) == {day(0)}
    assert affected([replace(old[0], status="shipped")], EXCLUDED) == set()
    assert affected([replace(old[0], status="cancelled")], EXCLUDED) == {day(0)}
    assert affected([replace(old[2], status="pending")], EXCLUDED) == {day(2)}
    assert affected([replace(old[2], day=9, cents=5)], EXCLUDED) == set()
    assert affected([replace(old[3], day=6, status="cancelled")], EXCLUDED) == {day(3)}
    assert affected([replace(old[3], day=6, status="delivered")], EXCLUDED) == {day(3), day(6)}
    assert gold.affected_dates_for_orders(orders_frame(old[:1]), stored.iloc[:0]) == {day(0)}
    assert gold.affected_dates_for_orders(orders_frame([]), stored) == set()


def test_anomaly_recompute_range_cases() -> None:
    firsts = {"All": day(0), "Books": day(2)}
    rng = gold.anomaly_recompute_range
    assert rng(set(), day(20), day(20), firsts, firsts, 5) is None
    span = rng({day(10)}, day(20), day(20), firsts, firsts, 5)
    assert span == gold.AnomalyRange(day(10), day(15), day(15)) and span.delete_after is None
    # Clipped at the newest day; new days at the end are added.
    assert rng({day(18)}, day(20), day(20), firsts, firsts, 5) == gold.AnomalyRange(
        day(18), day(20), day(20)
    )
    assert rng({day(25)}, day(20), day(25), firsts, firsts, 5) == gold.AnomalyRange(
        day(21), day(25), day(25)
    )
    # Newest moved back: score nothing new after it, delete up to the old newest.
    span = rng({day(20)}, day(20), day(12), firsts, firsts, 5)
    assert span == gold.AnomalyRange(day(13), day(12), day(20))
    assert span.delete_after == day(12)
    # A new category needs rows up to the newest day; a vanished one loses all its rows.
    assert rng({day(3)}, day(20), day(20), firsts, firsts | {"Home": day(3)}, 5) == (
        gold.AnomalyRange(day(3), day(20), day(20))
    )
    assert rng({day(2)}, day(20), day(20), firsts, {"All": day(0)}, 5) == (
        gold.AnomalyRange(day(2), day(20), day(20))
    )
    # A first date that moves changes the history of the window days after it.
    assert rng({day(2)}, day(40), day(40), firsts, firsts | {"Books": day(4)}, 5) == (
        gold.AnomalyRange(day(2), day(8), day(8))
    )
    # Everything gone.
    assert rng({day(0)}, day(0), None, {"All": day(0)}, {}, 5) == gold.AnomalyRange(
        day(0), day(-1), day(0)
    )


# -- incremental == full ---------------------------------------------------------------------
WINDOW, HISTORY = 4, 2


@dataclass
class Event:
    kind: str  # new | status | date | total | lines | resend | cancel_latest | product
    target: int  # index into existing orders / product id
    order: Order | None = None
    product: Product | None = None


event_st = st.one_of(
    st.builds(Event, kind=st.just("new"), target=st.integers(0, 10**6),
              order=order_st(0, max_day=25)),
    st.builds(Event, kind=st.sampled_from(("status", "date", "total", "lines", "resend")),
              target=st.integers(0, 10**6), order=order_st(0, max_day=25)),
    st.builds(Event, kind=st.just("cancel_latest"), target=st.just(0),
              order=order_st(0, max_day=25)),
    st.builds(Event, kind=st.just("product"), target=PIDS, product=product_st),
)


class GoldModel:
    """Gold kept incrementally as DataFrames, the way ``refresh`` keeps it in the lake."""

    def __init__(self, products: dict[int, Product]) -> None:
        self.orders: dict[int, Order] = {}
        self.products = dict(products)
        self.daily = daily_of([], self.products)
        self.scores = gold.anomalies(self.daily, window=WINDOW, min_history=HISTORY)
        self.next_id = 1

    def apply(self, events: list[Event], excluded: Sequence[str] | None) -> None:
        incoming: dict[int, Order] = {}
        product_changes: dict[int, Product] = {}
        for ev in events:
            if ev.kind == "product":
                assert ev.product is not None
                product_changes[ev.target] = ev.product
                continue
            assert ev.order is not None
            existing = sorted(self.orders)
            if ev.kind == "new" or not existing:
                incoming[self.next_id] = replace(ev.order, order_id=self.next_id)
                self.next_id += 1
                continue
            current = {**self.orders, **incoming}
            if ev.kind == "cancel_latest":  # the newest day may move back, leaving a gap
                live = [i for i in existing if current[i].status not in EXCLUDED] or existing
                oid = max(live, key=lambda i: (current[i].day, i))
                incoming[oid] = replace(current[oid], status="cancelled")
                continue
            oid = existing[ev.target % len(existing)]
            old = current[oid]
            field = {"status": "status", "date": "day", "total": "cents", "lines": "lines"}
            new = old if ev.kind == "resend" else replace(
                old, **{field[ev.kind]: getattr(ev.order, field[ev.kind])}
            )
            incoming[oid] = new
        dates: set[date] = set()
        if incoming:
            stored = [self.orders[i] for i in incoming if i in self.orders]
            dates |= gold.affected_dates_for_orders(
                orders_frame(incoming.values()), orders_frame(stored), excluded
            )
            self.orders.update(incoming)
        if product_changes:
            changed = {
                pid for pid, p in product_changes.items() if self.products.get(pid) != p
            }
            dates |= {day(o.day) for o in self.orders.values() for p, _ in o.lines if p in changed}
            self.products.update(product_changes)
        self.refresh(dates)

    def refresh(self, dates: set[date]) -> None:
        if not dates:
            return
        touched = [o for o in self.orders.values() if day(o.day) in dates]
        fresh = gold.daily_revenue(
            orders_frame(touched), lines_frame(touched), products_frame(self.products), EXCLUDED
        )
        old = self.daily
        new = pd.concat([old[~old["order_date"].isin(dates)], fresh], ignore_index=True)
        new = new.sort_values(["order_date", "category"], ignore_index=True)
        self.daily = new
        new_first = gold.category_first_dates(new)
        newest = gold.newest_date(new)
        span = gold.anomaly_recompute_range(
            dates, gold.newest_date(old), newest, gold.category_first_dates(old), new_first,
            WINDOW,
        )
        if span is None:
            return
        part = new[new["order_date"].between(span.start - timedelta(days=WINDOW), span.end)]
        scores = gold.anomalies(
            part, window=WINDOW, min_history=HISTORY, start=span.start, end=span.end,
            first_dates=new_first, newest=newest,
        )
        kept = self.scores[~self.scores["order_date"].between(span.start, span.delete_until)]
        frames = [f for f in (kept, scores) if not f.empty]
        merged = pd.concat(frames, ignore_index=True) if frames else scores
        self.scores = merged.sort_values(["order_date", "category"], ignore_index=True)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    products=products_st,
    steps=st.lists(st.lists(event_st, min_size=1, max_size=3), min_size=1, max_size=8),
    excluded=st.sampled_from((None, EXCLUDED)),
)
def test_incremental_gold_equals_full_recompute(
    products: dict[int, Product], steps: list[list[Event]], excluded: Sequence[str] | None
) -> None:
    model = GoldModel(products)
    for events in steps:
        model.apply(events, excluded)
        full_daily = daily_of(list(model.orders.values()), model.products)
        pd.testing.assert_frame_equal(model.daily, full_daily, check_exact=True)
        full_scores = gold.anomalies(full_daily, window=WINDOW, min_history=HISTORY)
        assert_bit_identical(model.scores, full_scores)


@pytest.mark.parametrize(
    ("orders", "message"),
    [
        # two orders of 5e16 each: 1e19 cents on one day, beyond int64
        ([Order(1, 3, 5 * 10**18, "pending", ((1, 1),)),
          Order(2, 3, 5 * 10**18, "pending", ((1, 1),))], "2024-01-04"),
        # one order of 1e300: its cents alone do not fit
        ([Order(1, 0, 10**302, "pending", ((1, 1),))], "2024-01-01"),
        # units: 2 x 2**62 on one order
        ([Order(1, 5, 100, "pending", ((1, 2**62), (1, 2**62)))], "2024-01-06"),
    ],
)
def test_sums_beyond_int64_fail_loudly_naming_the_day(orders: list[Order], message: str) -> None:
    """Gold never wraps: a sum beyond int64 raises, naming the day, instead of a negative
    revenue (and every category flagged)."""
    products = {1: Product(1.0, "Books")}
    o = orders_frame(orders)
    o["total"] = [x.cents / 100 for x in orders]  # 1e300 as a float
    with pytest.raises(gold.GoldConsistencyError, match=message):
        gold.daily_revenue(o, lines_frame(orders), products_frame(products), EXCLUDED)


def test_window_sums_beyond_int64_fail_loudly() -> None:
    daily = pd.DataFrame({
        "order_date": [day(i) for i in range(10)],
        "category": ["All"] * 10,
        "revenue_cents": np.full(10, 2**61, dtype=np.int64),
    })
    with pytest.raises(gold.GoldConsistencyError, match="too large"):
        gold.anomalies(daily, window=5, min_history=2)


def test_series_skip_long_empty_gaps_so_far_dates_stay_cheap() -> None:
    """An order of year 1 and one of year 9999 (silver written before the date window):
    the series keep only days within the window after a day holding data, so the work
    and the rows stay bounded by the days that hold data, not by the calendar span."""
    daily = pd.DataFrame({
        "order_date": [date(1, 1, 1), date(2025, 6, 1), date(2025, 6, 2), date(9999, 12, 31)],
        "category": ["All"] * 4,
        "revenue_cents": np.array([100, 200, 300, 400], dtype=np.int64),
    })
    out = gold.anomalies(daily, window=30, min_history=7)
    assert len(out) == 31 + 32 + 1  # each run: its data days and the 30 days after
    assert out["order_date"].iloc[0] == date(1, 1, 1)
    assert out["order_date"].iloc[-1] == date(9999, 12, 31)
    # a slice of the same table scores the same days identically
    part = gold.anomalies(
        daily, window=30, min_history=7, start=date(2025, 1, 1), end=date(9999, 12, 31),
        first_dates=gold.category_first_dates(daily), newest=gold.newest_date(daily),
    )
    expected = out[out["order_date"] >= date(2025, 1, 1)]
    assert_bit_identical(part, expected)
    span = gold.anomaly_recompute_range(
        {date(9999, 12, 31)}, old_newest=date(2025, 6, 2), new_newest=date(9999, 12, 31),
        old_first={"All": date(1, 1, 1)}, new_first={"All": date(1, 1, 1)}, window=30,
    )
    assert span is not None and span.start == date(2025, 6, 3)

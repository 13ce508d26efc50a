"""The data contract end to end on real lakes: bounds on numbers, the date window, big numbers.

Values the contract cannot hold reject their row with a named reason; the rest of the file
merges, and gold stays exact (no value wraps around).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from conftest import assert_same_tables, snapshot

from ecom_stream.config import Settings
from ecom_stream.engine.backfill import run_backfill
from ecom_stream.engine.pipeline import Pipeline
from ecom_stream.engine.rebuild import rebuild
from ecom_stream.storage.lake import Lake


def product(pid: int, **kw: Any) -> dict[str, Any]:
    return {
        "product_id": pid, "name": f"item {pid}", "category": "Books", "price": 10.0,
        "rating": 4.0, "stock": 3, "created_at": "2025-01-01T00:00:00", **kw,
    }


def order(oid: int, **kw: Any) -> dict[str, Any]:
    return {
        "order_id": oid, "customer_id": 5, "product_ids": [1], "quantities": [1],
        "total": 20.0, "status": "pending", "payment_method": "paypal",
        "shipping_city": "Oslo", "created_at": "2025-06-01T10:00:00", **kw,
    }


def rejected(settings: Settings) -> dict[Any, str]:
    df = Lake(settings.lake_dir).tables.read_pandas("rejected_rows")
    return dict(zip(df["key"], df["reason"], strict=True))


def test_overflowing_numbers_are_rejected_rows_and_gold_stays_exact(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    write_batch("products-1.json", [product(1)])
    write_batch("orders-1.json", [
        order(1), order(2, total=30.5),
        order(3, total=5e16), order(4, total=5e16),
        order(5, total=1e300),
        order(6, product_ids=[1, 1], quantities=[4611686018427387904, 4611686018427387904]),
    ] + [order(i) for i in range(7, 40)])
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"merged": 2}
    assert rejected(settings) == {
        "3": "orders_total_below_max", "4": "orders_total_below_max",
        "5": "orders_total_below_max", "6": "orders_quantities_below_max",
    }
    lake = Lake(settings.lake_dir)
    daily = lake.tables.read_pandas("daily_revenue").set_index("category")
    assert daily.loc["All", "revenue_cents"] == 2000 + 3050 + 33 * 2000
    assert daily.loc["All", "units"] == 35
    assert not lake.tables.read_pandas("revenue_anomalies")["is_anomaly"].any()


def test_big_numbers_reject_their_rows_and_the_rest_merges(settings: Settings) -> None:
    """Valid JSON (RFC 8259 sets no number range) whose numbers are beyond int64 or double
    range: those rows are rejected by name, not the file as 'invalid JSON'."""
    good = ",\n".join(
        f'{{"product_id": {i}, "name": "item {i}", "price": 5.5, "stock": 2}}'
        for i in range(4, 30)
    )
    text = (
        '[{"product_id": 123456789012345678901234567890, "name": "a", "price": 1.0},\n'
        ' {"product_id": 2, "name": "b", "price": 2.0, "stock": 1e25},\n'
        ' {"product_id": 3, "name": "c", "price": 1e400},\n' + good + "]"
    )
    (settings.landing_dir / "products-1.json").write_text(text)
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"merged": 1}
    reasons = rejected(settings)
    assert sorted(reasons.values()) == [
        "products_price_below_max",
        "products_product_id_valid_key",
        "products_stock_non_negative_integer",
    ]
    assert reasons["2"] == "products_stock_non_negative_integer"
    assert reasons["3"] == "products_price_below_max"
    silver = Lake(settings.lake_dir).tables.read_pandas("silver_products")
    assert sorted(silver["product_id"]) == list(range(4, 30))
    bronze = Lake(settings.lake_dir).tables.read_pandas("bronze_products")
    assert len(bronze) == 29 and "1e400" in bronze["price"].tolist()


def test_dates_outside_the_window_are_rejected_and_gold_stays_small(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    write_batch("products-1.json", [product(1)])
    write_batch("orders-1.json", [
        order(1, created_at="0001-01-01T00:00:00"),
        order(2, created_at="9999-12-31T23:59:59"),
        order(3, created_at="1999-12-31T23:59:59"),
        order(4, created_at="2000-01-01T00:00:00"),
    ] + [order(i) for i in range(5, 40)])
    run_backfill(settings, progress=False)
    assert rejected(settings) == dict.fromkeys(("1", "2", "3"), "orders_created_at_in_window")
    lake = Lake(settings.lake_dir)
    anomalies = lake.tables.read_pandas("revenue_anomalies")
    # the 2000-01-01 order and the 2025-06-01 orders: a series of bounded length
    assert anomalies["order_date"].min() == datetime(2000, 1, 1).date()
    assert len(anomalies) < 200


def test_the_window_follows_the_received_time_so_a_rebuild_agrees(
    settings: Settings, write_batch: Callable[..., Path], tmp_path: Path
) -> None:
    """'Too far ahead' is judged against the file's first received time (kept in raw/), not
    the clock of the run, so replaying or rebuilding later gives the same tables."""
    received = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
    write_batch("products-1.json", [product(1)])
    write_batch("orders-1.json", [
        order(1, created_at="2025-06-01T23:00:00"),  # within a day of receipt
        order(2, created_at="2025-06-02T00:00:00"),  # exactly a day: still inside
        order(3, created_at="2025-06-02T00:00:01"),  # beyond: rejected, though long past now
    ] + [order(i, created_at="2025-05-31T10:00:00") for i in range(4, 40)])
    pipe = Pipeline(settings, received_at=lambda _path: received)
    pipe.process(sorted(settings.landing_dir.iterdir()))
    assert rejected(settings) == {"3": "orders_created_at_in_window"}
    silver = Lake(settings.lake_dir).tables.read_pandas("silver_orders")
    assert {1, 2} <= set(silver["order_id"])
    into = tmp_path / "rebuilt"
    rebuild(settings, into)
    assert_same_tables(snapshot(settings.lake_dir), snapshot(into))
    again = Lake(into).tables.read_pandas("rejected_rows")
    assert again["reason"].tolist() == ["orders_created_at_in_window"]


def test_bounds_are_settings(settings: Settings, write_batch: Callable[..., Path]) -> None:
    strict = settings.replace(max_total=100.0, max_quantity=3, earliest_order_date="2025-06-01")
    write_batch("products-1.json", [product(1)])
    write_batch("orders-1.json", [
        order(1, total=100.0), order(2, quantities=[3]),
        order(3, created_at="2025-05-31T23:59:59"),
    ] + [order(i) for i in range(4, 40)])
    run_backfill(strict, progress=False)
    assert rejected(strict) == {
        "1": "orders_total_below_max", "2": "orders_quantities_below_max",
        "3": "orders_created_at_in_window",
    }
    daily = Lake(strict.lake_dir).tables.read_pandas("daily_revenue")
    assert isinstance(daily, pd.DataFrame) and len(daily) == 2  # Books and All, one day


def test_far_dates_already_in_silver_keep_gold_bounded(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    """Silver written before the date window (here: the rule set to warn) may hold orders of
    year 1 and year 9999: gold's work and rows stay bounded by the days holding data."""
    lax = settings.replace(
        policies={**settings.policies, "orders_created_at_in_window": "warn"}
    )
    write_batch("products-1.json", [product(1)])
    write_batch("orders-1.json", [
        order(1, created_at="0001-01-01T00:00:00"),
        order(2, created_at="9999-12-31T23:59:59"),
    ])
    assert run_backfill(lax, progress=False).outcomes == {"merged": 2}
    write_batch("orders-2.json", [order(3, created_at="2025-06-01T00:00:00")])
    assert run_backfill(lax, progress=False).outcomes == {"merged": 1}
    lake = Lake(settings.lake_dir)
    anomalies = lake.tables.read_pandas("revenue_anomalies")
    assert len(anomalies) == 2 * 3 * 31 - 2 * 30  # All and Books; the newest run is one day
    daily = lake.tables.read_pandas("daily_revenue")
    assert len(daily) == 6


def test_rule_catalogue_drives_policies_checks_and_readme() -> None:
    """Each rule is defined once: policies, validator checks and the README table derive from it."""
    from pathlib import Path

    from ecom_stream.config import default_policies
    from ecom_stream.contract.rules import RULES, readme_table
    from ecom_stream.quality import validate

    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    assert default_policies() == {r.name: r.policy for r in RULES}
    assert [c.name for e in ("products", "orders") for c in validate._CHECKS[e]] == names
    assert all(r.name.startswith(f"{r.entity}_") and r.description for r in RULES)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- rules-table:start -->\n", "\n<!-- rules-table:end -->"
    assert readme.split(start, 1)[1].split(end, 1)[0] == readme_table()

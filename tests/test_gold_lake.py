"""Incremental gold in the real lake equals gold recomputed from silver, after every batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ecom_stream.cli.main import main
from ecom_stream.config import Settings
from ecom_stream.engine.pipeline import Pipeline
from ecom_stream.storage.lake import Lake
from ecom_stream.transform import gold

STATUSES = ["pending", "confirmed", "shipped", "delivered", "cancelled"]
CATS = ["Electronics", "Books", None]


@st.composite
def order_batch(draw: st.DrawFn, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        oid = draw(st.integers(1, 25))
        k = draw(st.integers(1, 3))
        day = draw(st.integers(1, 60))
        rows.append(
            {
                "order_id": oid,
                "customer_id": draw(st.integers(1, 5)),
                "product_ids": draw(st.lists(st.integers(1, 8), min_size=k, max_size=k)),
                "quantities": [draw(st.integers(1, 3)) for _ in range(k)],
                "total": draw(st.sampled_from([9.99, 25.0, 100.5, 3.33, 0.0])),
                "status": draw(st.sampled_from(STATUSES)),
                "created_at": "2026-01-01T00:00:00Z"
                if day == 1
                else f"2026-{1 + (day - 1) // 31:02d}-{(day - 1) % 31 + 1:02d}T12:00:00",
                "updated_at": f"2026-03-{draw(st.integers(1, 28)):02d}T{n % 24:02d}:00:00",
            }
        )
    return rows


@st.composite
def product_batch(draw: st.DrawFn, n: int) -> list[dict[str, Any]]:
    return [
        {
            "product_id": pid,
            "name": f"p{pid}",
            "category": draw(st.sampled_from(CATS)),
            "price": draw(st.sampled_from([1.0, 5.5, 20.0, 99.99])),
            "stock": 1,
            "created_at": "2026-01-01T00:00:00",
            "updated_at": f"2026-03-{1 + n % 28:02d}T00:00:00",
        }
        for pid in draw(st.lists(st.integers(1, 8), min_size=1, max_size=4, unique=True))
    ]


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for n in range(draw(st.integers(2, 6))):
        if draw(st.booleans()):
            out.append((f"orders-{n}.json", draw(order_batch(n))))
        else:
            out.append((f"products-{n}.json", draw(product_batch(n))))
    if draw(st.booleans()) and out:  # a batch re-sent
        out.append((out[0][0].replace(".json", "-again.json"), out[0][1]))
    return out


def full_gold(lake: Lake, s: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    orders = lake.tables.read_pandas(
        "silver_orders", columns=["order_id", "total", "status", "order_date"]
    )
    lines = lake.tables.read_pandas(
        "silver_order_lines",
        columns=["order_id", "line_no", "product_id", "quantity", "order_date"],
    )
    products = lake.tables.read_pandas(
        "silver_products", columns=["product_id", "price", "category"]
    )
    daily = gold.daily_revenue(orders, lines, products, s.excluded_statuses)
    scores = gold.anomalies(
        daily,
        window=s.anomaly_window_days,
        min_history=s.anomaly_min_history_days,
        threshold=s.anomaly_threshold,
    )
    return daily, scores


def same(a: pd.DataFrame, b: pd.DataFrame, name: str) -> None:
    key = ["order_date", "category"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)[list(a.columns)]
    pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=name)


@hsettings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seq=batches())
def test_incremental_gold_equals_full_after_every_batch(
    tmp_path_factory: pytest.TempPathFactory, seq: list[tuple[str, list[dict[str, Any]]]]
) -> None:
    root = tmp_path_factory.mktemp("gold")
    (root / "landing").mkdir()
    s = Settings(
        landing_dir=root / "landing",
        lake_dir=root / "lake",
        anomaly_min_history_days=3,
        anomaly_window_days=5,
        price_missing_gate=1.0,
        total_missing_gate=1.0,
    )
    pipeline = Pipeline(s)
    for name, records in seq:
        path = s.landing_dir / name
        path.write_text(json.dumps(records))
        pipeline.process([path])
        daily, scores = full_gold(pipeline.lake, s)
        tables = pipeline.lake.tables
        same(tables.read_pandas("daily_revenue"), daily, f"daily_revenue after {name}")
        same(
            pipeline.lake.tables.read_pandas("revenue_anomalies"),
            scores,
            f"revenue_anomalies after {name}",
        )
    shutil.rmtree(root)


def test_rebuild_gold_and_anomaly_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--lake", str(tmp_path / "lake"), "--landing", str(tmp_path / "landing")]
    assert (
        main(
            [*base, "generate", "--batches", "150", "--orders-per-batch", "60", "--products", "40"]
        )
        == 0
    )
    assert main([*base, "backfill", "--no-progress"]) == 0
    lake = Lake(tmp_path / "lake")
    tables = lake.tables
    before = (tables.read_pandas("daily_revenue"), tables.read_pandas("revenue_anomalies"))
    assert main([*base, "rebuild-gold"]) == 0
    same(lake.tables.read_pandas("daily_revenue"), before[0], "daily after rebuild-gold")
    same(lake.tables.read_pandas("revenue_anomalies"), before[1], "anomalies after rebuild-gold")
    # The category revenues of each day add up to the day's total, to the cent.
    daily = before[0]
    per_day = daily[daily["category"] != "All"].groupby("order_date")["revenue_cents"].sum()
    all_ = daily[daily["category"] == "All"].set_index("order_date")["revenue_cents"]
    assert per_day.sort_index().equals(all_.sort_index())
    target = tmp_path / "out" / "anomalies.parquet"
    capsys.readouterr()
    assert main([*base, "anomalies", "--export", str(target)]) == 0
    flagged = pd.read_parquet(target)
    assert len(flagged) > 0, "the simulated sale days should be flagged"
    assert flagged["is_anomaly"].all()
    assert f"wrote {len(flagged)} anomalies" in capsys.readouterr().out
    assert main([*base, "anomalies", "--export", str(tmp_path / "x.csv")]) == 1

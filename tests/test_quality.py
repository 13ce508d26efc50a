"""The quality gate through the real pipeline: quarantine reasons, gates, drift, requeue."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_pipeline import order, product

from ecom_stream.cli.main import main
from ecom_stream.config import Settings
from ecom_stream.engine.backfill import run_backfill
from ecom_stream.engine.requeue import requeue
from ecom_stream.service.status import quarantine_list
from ecom_stream.storage.lake import Lake


def reasons(settings: Settings) -> dict[str, dict[str, Any]]:
    out = {}
    for p in (settings.lake_dir / "quarantine").glob("*.reason.json"):
        data = json.loads(p.read_text())
        out[data["file"]] = data
    return out


def products(n: int, bad: int = 0, bad_value: Any = "N/A") -> list[dict[str, Any]]:
    return [product(i, price=bad_value if i <= bad else 10.0) for i in range(1, n + 1)]


def test_bad_batch_corpus_next_to_a_good_one(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    land = settings.landing_dir
    write_batch("orders-good.json", [order(i) for i in range(1, 21)])
    write_batch(
        "products-missing-price-col.json",
        [{k: v for k, v in product(i).items() if k != "price"} for i in range(1, 5)],
    )
    write_batch(
        "orders-missing-key.json",
        [{k: v for k, v in order(i).items() if k != "order_id"} for i in range(1, 5)],
    )
    write_batch("products-many-na.json", products(100, bad=14))
    write_batch(
        "orders-null-totals.json",
        [order(i, total=None if i < 103 else 5.0) for i in range(100, 120)],
    )
    (land / "orders-bad-json.json").write_text('[{"order_id": 1}, {"order_id": 2')
    deep: Any = 1
    for _ in range(30):
        deep = [deep]
    (land / "orders-deep.json").write_text(json.dumps([{"order_id": 1, "x": deep}]))
    (land / "orders-latin1.json").write_bytes('[{"status": "expédié"}]'.encode("latin-1"))
    (land / "orders-scalar.jsonl").write_text("1\n2\n")
    (land / "refunds-1.json").write_text("[]")
    summary = run_backfill(settings.replace(max_json_depth=16), progress=False)
    assert summary.outcomes == {"merged": 1, "quarantined": 9}
    r = reasons(settings)
    assert "missing required column(s): price" in r["products-missing-price-col.json"]["reason"]
    assert "order_id" in r["orders-missing-key.json"]["reason"]
    assert "14.0% of 100 rows" in r["products-many-na.json"]["reason"]
    assert "limit 10%" in r["products-many-na.json"]["reason"]
    assert "15.0% of 20 rows" in r["orders-null-totals.json"]["reason"]
    assert "line 1, column" in r["orders-bad-json.json"]["reason"]
    assert "nested deeper than 16" in r["orders-deep.json"]["reason"]
    assert "not UTF-8" in r["orders-latin1.json"]["reason"]
    assert "not an object" in r["orders-scalar.jsonl"]["reason"]
    assert "unknown entity" in r["refunds-1.json"]["reason"]
    failed = r["products-many-na.json"]["failed_checks"][0]
    assert failed["check"] == "products_price_missing_share"
    assert failed["sample"], "the first offending rows are kept in the reason file"
    for data in r.values():
        assert (
            data["batch_id"]
            and data["quarantined_at"]
            and data["entity"] in ("orders", "products", None)
        )
    assert Lake(settings.lake_dir).queries.count("silver_orders") == 20
    records = Lake(settings.lake_dir).tables.read_pandas("quarantine_records")
    assert len(records) == 9


@pytest.mark.parametrize(
    ("bad", "rows", "outcome"),
    [(99, 1000, "merged"), (100, 1000, "merged"), (101, 1000, "quarantined")],
)
def test_ten_percent_gate_edges(
    settings: Settings, write_batch: Callable[..., Path], bad: int, rows: int, outcome: str
) -> None:
    write_batch("products-1.json", products(rows, bad=bad))
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {outcome: 1}
    if outcome == "merged":
        assert summary.rows_rejected == bad
        assert Lake(settings.lake_dir).queries.count("silver_products") == rows - bad


def test_wrong_type_column_is_handled_by_row_rules(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    # Totals sent as strings: parseable ones merge, unparseable ones are rejected row by row...
    write_batch(
        "orders-1.json", [order(i, total=str(10 + i) if i % 20 else "ten") for i in range(1, 41)]
    )
    # ...and past the 10% gate the batch is quarantined.
    write_batch(
        "orders-2.json", [order(i, total="n/a" if i % 5 == 0 else 3) for i in range(100, 140)]
    )
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"merged": 1, "quarantined": 1}
    assert summary.rows_rejected == 2
    lake = Lake(settings.lake_dir)
    assert set(lake.tables.read_pandas("rejected_rows")["reason"]) == {"orders_total_non_negative"}


def test_warnings_are_recorded_not_rejected(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    write_batch(
        "orders-1.json",
        [order(i, status="lost in space" if i == 1 else "pending") for i in range(1, 11)],
    )
    run_backfill(settings, progress=False)
    lake = Lake(settings.lake_dir)
    assert lake.queries.count("silver_orders") == 10
    q = lake.tables.read_pandas("quality_validations").set_index("expectation")
    assert not q.loc["orders_status_known", "success"]
    assert q.loc["orders_status_known", "policy"] == "warn"
    assert q.loc["orders_status_known", "unexpected_count"] == 1
    assert q.loc["orders_total_non_negative", "success"]


def test_domain_warning_status_going_backwards(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    write_batch("orders-1.json", [order(1, status="delivered", updated="2026-01-03T00:00:00")])
    run_backfill(settings, progress=False)
    write_batch("orders-2.json", [order(1, status="pending", updated="2026-01-04T00:00:00")])
    run_backfill(settings, progress=False)
    q = Lake(settings.lake_dir).tables.read_pandas("quality_validations")
    back = q[(q["expectation"] == "orders_status_backwards") & ~q["success"]]
    assert len(back) == 1
    assert back["source_file"].iloc[0] == "orders-2.json"


def test_policy_setting_turns_a_warning_into_drop_row(
    tmp_path: Path, write_batch: Callable[..., Path], settings: Settings
) -> None:
    strict = settings.replace(policies={**settings.policies, "orders_status_known": "drop-row"})
    write_batch(
        "orders-1.json", [order(i, status="lost" if i == 1 else "pending") for i in range(1, 21)]
    )
    summary = run_backfill(strict, progress=False)
    assert summary.rows_rejected == 1
    assert Lake(settings.lake_dir).tables.read_pandas("rejected_rows")["reason"].tolist() == [
        "orders_status_known"
    ]


def test_requeue_after_a_fix(
    settings: Settings, write_batch: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write_batch("products-1.json", products(20, bad=5))
    run_backfill(settings, progress=False)
    assert [q["file"] for q in quarantine_list(Lake(settings.lake_dir))] == ["products-1.json"]
    # The fix here is a more lenient gate; requeue sends the same bytes back and they merge.
    lenient = settings.replace(price_missing_gate=0.5)
    moved = requeue(lenient, ["products-1.json"])
    assert [dst.name for _, dst in moved] == ["products-1.json"]
    assert quarantine_list(Lake(settings.lake_dir)) == []
    summary = run_backfill(lenient, progress=False)
    assert summary.outcomes == {"merged": 1}
    assert Lake(settings.lake_dir).queries.count("silver_products") == 15
    outcomes = (
        Lake(settings.lake_dir).tables.read_pandas("ledger").sort_values("finished_at")["outcome"].tolist()
    )
    assert outcomes == ["quarantined", "requeued", "merged"]


def test_requeue_cli_errors_are_clear(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--lake", str(settings.lake_dir), "--landing", str(settings.landing_dir)]
    assert main([*base, "requeue"]) == 2  # a usage error, like argparse's own
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "requeue: error: name the quarantined file" in err
    assert main([*base, "requeue", "nope.json"]) == 1
    assert "not in quarantine: nope.json" in capsys.readouterr().err

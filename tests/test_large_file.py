"""A file of more rows than a micro-batch holds is merged in pieces: bounded memory, the
same tables as merging it whole, one ledger row, and a crash between pieces doubles nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import COMPARED_TABLES, assert_same_tables, snapshot
from test_pipeline import order, product

from ecom_stream.config import Settings
from ecom_stream.engine.backfill import run_backfill
from ecom_stream.storage.lake import Lake
from ecom_stream.storage.tables import Tables

BOOKKEEPING = ("bronze_products", "bronze_orders", "rejected_rows", "quarantine_records")
LEDGER_FACTS = ["file_name", "entity", "outcome", "reason", "rows_in", "rows_merged",
                "rows_rejected", "rows_rescued"]
QUALITY = ["source_file", "expectation", "column", "policy", "success", "observed_value",
           "unexpected_count", "unexpected_percent", "element_count"]


def big_orders() -> list[dict[str, Any]]:
    """230 orders: keys repeated in later pieces (older and newer versions), rejected rows,
    and order 3 moving back from shipped (stored) to pending (a domain warning)."""
    rows = [order(i, status="confirmed", total=20.0 + i) for i in range(1, 201)]
    rows[2] = order(3, status="pending", updated="2026-01-03T00:00:00")
    rows[10] = order(11, total=-5.0)  # rejected
    rows[120] = order(121, status="lost")  # rejected
    # Keys already seen in the first piece: newer versions, an older one, an exact copy.
    rows += [order(i, status="delivered", updated="2026-01-04T00:00:00") for i in range(5, 25)]
    rows.append(order(30, status="pending", updated="2026-01-01T00:00:00"))  # older: loses
    rows += [dict(rows[40]) for _ in range(3)]  # copies of order 41
    rows.append(order(150, total=-1.0))  # rejected newer version: the stored one stays
    rows += [order(i, status="shipped", updated="2026-01-05T00:00:00") for i in (60, 61, 62)]
    return rows


def lines(folder: Path, name: str, rows: list[dict[str, Any]]) -> None:
    """JSON Lines, or for a .json name an array with one element a line."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if name.endswith(".json"):
        text = "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n"
    (folder / name).write_text(text)


def fill(landing: Path, big: list[dict[str, Any]], big_name: str = "orders-1.jsonl") -> None:
    landing.mkdir(parents=True, exist_ok=True)
    lines(landing, "products-1.jsonl", [product(i) for i in range(1, 5)])
    lines(landing, "orders-0.jsonl", [order(3, status="shipped"), order(7, status="pending")])
    lines(landing, big_name, big)


def run(
    tmp: Path, name: str, max_rows: int, big: list[dict[str, Any]],
    big_name: str = "orders-1.jsonl",
) -> Settings:
    s = Settings(landing_dir=tmp / f"{name}-landing", lake_dir=tmp / f"{name}-lake",
                 microbatch_max_rows=max_rows)
    fill(s.landing_dir, big, big_name)
    run_backfill(s, progress=False)
    return s


def facts(s: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    lake = Lake(s.lake_dir)
    ledger = lake.tables.read_pandas("ledger")[LEDGER_FACTS].sort_values("file_name")
    quality = lake.tables.read_pandas("quality_validations")[QUALITY]
    quality = quality.sort_values(["source_file", "expectation"])
    return ledger.reset_index(drop=True), quality.reset_index(drop=True)


@pytest.mark.parametrize("big_name", ["orders-1.jsonl", "orders-1.json"])
def test_a_large_file_in_pieces_gives_the_tables_of_the_whole_file(
    tmp_path: Path, big_name: str
) -> None:
    big = big_orders()
    whole = run(tmp_path, "whole", 60_000, big, big_name)
    pieces = run(tmp_path, "pieces", 50, big, big_name)
    tables = [*COMPARED_TABLES, *BOOKKEEPING]
    assert_same_tables(snapshot(pieces.lake_dir, tables), snapshot(whole.lake_dir, tables))
    (ledger_p, quality_p), (ledger_w, quality_w) = facts(pieces), facts(whole)
    pd.testing.assert_frame_equal(ledger_p, ledger_w)
    assert (ledger_p["file_name"] == big_name).sum() == 1
    assert ledger_p.set_index("file_name").loc[big_name, "rows_rejected"] >= 2
    pd.testing.assert_frame_equal(quality_p, quality_w)
    warning = quality_p[(quality_p["expectation"] == "orders_status_backwards")
                        & (quality_p["source_file"] == big_name)]
    assert warning["unexpected_count"].tolist() == [1]
    assert not list(pieces.landing_dir.iterdir())
    # It was merged in pieces: 50 rows a piece, each appending bronze under its own arrival.
    bronze = Lake(pieces.lake_dir).tables.read_pandas("bronze_orders")
    assert bronze.loc[bronze["_source_file"] == big_name, "_arrival_id"].nunique() == 5


def test_the_missing_share_gate_is_decided_over_the_whole_file(tmp_path: Path) -> None:
    """20 missing totals in the first 50 rows fail the 10% gate there, not in 230 rows; 30
    missing in 230 rows fail it although the later pieces alone would pass."""
    passing = [order(i, total=None if i <= 20 else 5.0) for i in range(1, 231)]
    failing = [order(i, total=None if i <= 30 else 5.0) for i in range(1, 231)]
    for name, rows, outcome in (("pass", passing, "merged"), ("fail", failing, "quarantined")):
        whole = run(tmp_path, f"{name}-whole", 60_000, rows)
        pieces = run(tmp_path, f"{name}-pieces", 50, rows)
        (ledger_p, quality_p), (ledger_w, quality_w) = facts(pieces), facts(whole)
        pd.testing.assert_frame_equal(ledger_p, ledger_w)
        pd.testing.assert_frame_equal(quality_p, quality_w)
        assert ledger_p.set_index("file_name").loc["orders-1.jsonl", "outcome"] == outcome
        tables = [*COMPARED_TABLES, *BOOKKEEPING]
        assert_same_tables(snapshot(pieces.lake_dir, tables), snapshot(whole.lake_dir, tables))


@pytest.mark.parametrize(
    ("method", "big_name"),
    [("merge_upsert", "orders-1.jsonl"), ("append", "orders-1.jsonl"), ("append", "orders-1.json")],
)
def test_a_failure_in_a_middle_piece_then_a_retry_doubles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, big_name: str
) -> None:
    big = big_orders()
    whole = run(tmp_path, "whole", 60_000, big, big_name)
    s = Settings(landing_dir=tmp_path / "crash-landing", lake_dir=tmp_path / "crash-lake",
                 microbatch_max_rows=50)
    fill(s.landing_dir, big, big_name)
    original = getattr(Tables, method)
    calls = {"n": 0}
    target = "silver_orders" if method == "merge_upsert" else "bronze_orders"

    def crash(self: Tables, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == target:
            calls["n"] += 1
            if calls["n"] == 4:  # the third piece of the large file (orders-0 is the first)
                raise OSError("simulated crash")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(Tables, method, crash)
    with pytest.raises(OSError, match="simulated crash"):  # a crash: no retry in-process
        run_backfill(s.replace(backfill_retries=0), progress=False)
    assert Lake(s.lake_dir).markers.exists("inflight")
    assert (s.landing_dir / big_name).exists()
    monkeypatch.setattr(Tables, method, original)
    run_backfill(s, progress=False)
    tables = [*COMPARED_TABLES, *BOOKKEEPING]
    assert_same_tables(snapshot(s.lake_dir, tables), snapshot(whole.lake_dir, tables))
    (ledger_c, quality_c), (ledger_w, quality_w) = facts(s), facts(whole)
    pd.testing.assert_frame_equal(ledger_c, ledger_w)
    pd.testing.assert_frame_equal(quality_c, quality_w)


@pytest.mark.parametrize("big_name", ["orders-1.jsonl", "orders-1.json"])
def test_a_large_file_with_a_bad_line_is_quarantined_naming_the_file_line(
    tmp_path: Path, big_name: str
) -> None:
    s = Settings(landing_dir=tmp_path / "landing", lake_dir=tmp_path / "lake",
                 microbatch_max_rows=50)
    s.landing_dir.mkdir()
    rows = [order(i) for i in range(1, 231)]
    rows[200]["customer_id"] = "__BAD__"
    lines(s.landing_dir, big_name, rows)
    path = s.landing_dir / big_name
    path.write_text(path.read_text().replace('"__BAD__"', "{not json"))
    run_backfill(s, progress=False)
    lake = Lake(s.lake_dir)
    row = lake.tables.read_pandas("ledger").iloc[0]
    assert row["outcome"] == "quarantined"
    assert f"line {201 if big_name.endswith('jsonl') else 202}" in row["reason"]
    assert lake.tables.read("bronze_orders").num_rows == 0
    assert lake.tables.read("silver_orders").num_rows == 0



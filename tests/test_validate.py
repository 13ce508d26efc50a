"""Tests of quality.validate: GX-backed verdicts per file, policies, gates, domain warnings."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ecom_stream.config import Settings, default_policies
from ecom_stream.errors import ValidationSetupError
from ecom_stream.quality import gx as quality_gx
from ecom_stream.quality.validate import CheckResult, FileValidation, Validator, domain_warnings
from ecom_stream.transform import clean

Files = Sequence[Sequence[dict[str, Any]]]


# -- helpers ----------------------------------------------------------------------------------
def product(i: int, **changes: Any) -> dict[str, Any]:
    """A valid product record; ``changes`` override fields (value ``...`` removes the field)."""
    rec: dict[str, Any] = {
        "product_id": i, "name": f"widget {i}", "category": "Electronics", "price": 19.99,
        "rating": 4.5, "stock": 10, "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-02T00:00:00Z",
    }
    return _apply(rec, changes)


def order(i: int, **changes: Any) -> dict[str, Any]:
    """A valid order record; ``changes`` override fields (value ``...`` removes the field)."""
    rec: dict[str, Any] = {
        "order_id": i, "customer_id": 100 + i, "product_ids": [1, 2], "quantities": [1, 3],
        "total": 59.97, "status": "pending", "payment_method": "paypal", "shipping_city": "Oslo",
        "created_at": "2024-03-01T10:00:00Z", "updated_at": "2024-03-01T10:00:00Z",
    }
    return _apply(rec, changes)


def _apply(rec: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for k, v in changes.items():
        if v is ...:
            rec.pop(k, None)
        else:
            rec[k] = v
    return rec


def typed_of(entity: str, files: Files) -> tuple[pd.DataFrame, list[set[str]]]:
    """The typed micro-batch frame and per-file present columns, as the pipeline builds them."""
    typed = clean.typed_view(entity, clean.records_frame(entity, files))
    present = [set().union(*map(dict.keys, recs)) if recs else set() for recs in files]
    return typed, present


def run(v: Validator, entity: str, files: Files) -> list[FileValidation]:
    typed, present = typed_of(entity, files)
    return v.validate(entity, typed, present)


def check(report: FileValidation, name: str) -> CheckResult:
    (found,) = [c for c in report.checks if c.expectation == name]
    return found


def policies(**changes: str) -> Settings:
    return Settings().replace(policies={**default_policies(), **changes})


@pytest.fixture(scope="module")
def v() -> Validator:
    """One validator for the module: GX start-up is slow, later runs take milliseconds."""
    validator = Validator(Settings())
    validator.validate("products", *typed_of("products", [[product(1)]]))
    return validator


# -- products ---------------------------------------------------------------------------------
def test_valid_products_pass_everything(v: Validator) -> None:
    (report,) = run(v, "products", [[product(i) for i in range(20)]])
    assert report.element_count == 20
    assert [c.expectation for c in report.checks] == [
        k for k in default_policies() if k.startswith("products_")
    ]
    assert all(c.success for c in report.checks), [c.observed for c in report.checks]
    assert report.quarantine_reasons == []
    assert report.rejected == {}


def test_products_required_columns(v: Validator) -> None:
    recs = [product(1, price=..., name=...), product(2, price=..., name=...)]
    (report,) = run(v, "products", [recs])
    c = check(report, "products_required_columns")
    assert not c.success and c.policy == "quarantine-batch"
    assert c.observed == "missing required column(s): name, price"
    assert c.failing_rows.size == 0
    assert report.quarantine_reasons[0] == c.observed
    # present in one record of the file is enough ("present in any record")
    (report,) = run(v, "products", [[product(1), product(2, name=...)]])
    assert check(report, "products_required_columns").success


@pytest.mark.parametrize(("missing", "passes"), [(99, True), (100, True), (101, False)])
def test_price_missing_gate_boundaries(v: Validator, missing: int, passes: bool) -> None:
    recs = [product(i, price=None if i < missing else 5.0) for i in range(1000)]
    (report,) = run(v, "products", [recs])
    c = check(report, "products_price_missing_share")
    assert c.success is passes
    assert c.unexpected_count == missing and c.element_count == 1000
    assert c.unexpected_percent == pytest.approx(missing / 10)
    assert f"{missing / 10:.1f}% of 1000 rows" in c.observed
    assert "limit 10%" in c.observed
    assert bool(report.quarantine_reasons) is not passes
    assert c.failing_rows.size == 0  # file-level check


def test_price_gate_counts_unparseable_and_follows_settings(v: Validator) -> None:
    recs = [product(i) for i in range(20)]
    recs[0]["price"] = "abc"
    recs[1]["price"] = None
    del recs[2]["price"]
    (report,) = run(v, "products", [recs])
    c = check(report, "products_price_missing_share")
    assert not c.success  # 15% > 10%
    assert "15.0% of 20 rows (3: 2 missing, 1 unparseable), limit 10%" in c.observed
    loose = Validator(Settings(price_missing_gate=0.15))
    (report,) = run(loose, "products", [recs])
    c = check(report, "products_price_missing_share")
    assert c.success and "limit 15%" in c.observed


def test_gate_text_never_hides_a_failure_behind_rounding(v: Validator) -> None:
    recs = [product(i, price=None if i < 1001 else 1.0) for i in range(10001)]
    (report,) = run(v, "products", [recs])
    c = check(report, "products_price_missing_share")
    assert not c.success
    assert "10.0090% of 10001 rows" in c.observed


def test_product_id_must_be_a_json_integer(v: Validator) -> None:
    recs = [product(0), product(1, product_id="7"), product(2, product_id=1.5),
            product(3, product_id=True), product(4, product_id=None), product(5, product_id=...),
            product(6, product_id=2**63)]
    (report,) = run(v, "products", [recs])
    c = check(report, "products_product_id_valid_key")
    assert not c.success and c.policy == "drop-row"
    assert c.failing_rows.tolist() == [1, 2, 3, 4, 5, 6]
    assert report.rejected == dict.fromkeys(range(1, 7), "products_product_id_valid_key")
    assert "6 of 7 rows (85.7%)" in c.observed


def test_price_positive_rejects_null_zero_negative_and_text(v: Validator) -> None:
    recs = [product(0, price=0), product(1, price=-3), product(2, price=None),
            product(3, price="abc"), product(4, price="12.50"), product(5, price=0.01),
            product(6, price=...)]
    recs += [product(i) for i in range(7, 100)]  # keep the missing share under the gate
    (report,) = run(v, "products", [recs])
    c = check(report, "products_price_positive")
    assert not c.success
    assert c.failing_rows.tolist() == [0, 1, 2, 3, 6]
    assert {p: report.rejected[p] for p in (0, 1, 2, 3, 6)} == dict.fromkeys(
        (0, 1, 2, 3, 6), "products_price_positive"
    )
    assert 4 not in report.rejected and 5 not in report.rejected
    assert c.sample[0] == {"_row_no": 0, "product_id": 0, "price": 0.0}
    assert c.sample[2]["price"] is None  # JSON-safe null, not NaN


def test_stock_non_negative_integer(v: Validator) -> None:
    recs = [product(0, stock=-1), product(1, stock=1.5), product(2, stock="many"),
            product(3, stock=None), product(4, stock=...), product(5, stock=0),
            product(6, stock=3.0)]
    (report,) = run(v, "products", [recs])
    c = check(report, "products_stock_non_negative_integer")
    assert c.failing_rows.tolist() == [0, 1, 2]
    assert report.rejected == dict.fromkeys([0, 1, 2], "products_stock_non_negative_integer")


def test_rating_out_of_range_only_warns_and_nulls_are_fine(v: Validator) -> None:
    recs = [product(0, rating=0.5), product(1, rating=6), product(2, rating=None),
            product(3, rating=...), product(4, rating=1), product(5, rating=5)]
    (report,) = run(v, "products", [recs])
    c = check(report, "products_rating_between_1_and_5")
    assert not c.success and c.policy == "warn"
    assert c.failing_rows.tolist() == [0, 1]
    assert report.rejected == {} and report.quarantine_reasons == []


def test_category_known_after_strip_and_title_case(v: Validator) -> None:
    recs = [product(0, category="  electronics "), product(1, category="HOME"),
            product(2, category="Toys"), product(3, category=None), product(4, category=""),
            product(5, category=...), product(6, category=42)]
    (report,) = run(v, "products", [recs])
    c = check(report, "products_category_known")
    assert not c.success and c.policy == "warn"
    assert c.failing_rows.tolist() == [2, 3, 4, 5, 6]
    assert report.rejected == {}
    assert c.sample[0]["category"] == "Toys"


def test_first_failed_drop_row_expectation_is_the_reason(v: Validator) -> None:
    recs = [product(0, product_id="x", price=-1, stock=-1), product(1, price=-1, stock=-1)]
    recs += [product(i) for i in range(2, 30)]
    (report,) = run(v, "products", [recs])
    assert report.rejected == {
        0: "products_product_id_valid_key",
        1: "products_price_positive",
    }


# -- orders -----------------------------------------------------------------------------------
def test_valid_orders_pass_everything(v: Validator) -> None:
    (report,) = run(v, "orders", [[order(i) for i in range(20)]])
    assert all(c.success for c in report.checks), [c.observed for c in report.checks]
    assert report.rejected == {} and report.quarantine_reasons == []
    assert len(report.checks) == sum(k.startswith("orders_") for k in default_policies())


def test_orders_required_columns(v: Validator) -> None:
    (report,) = run(v, "orders", [[order(1, status=..., created_at=...)]])
    c = check(report, "orders_required_columns")
    assert not c.success
    assert c.observed == "missing required column(s): status, created_at"
    assert report.quarantine_reasons == [c.observed]


@pytest.mark.parametrize(("missing", "passes"), [(99, True), (100, True), (101, False)])
def test_total_missing_gate_boundaries(v: Validator, missing: int, passes: bool) -> None:
    recs = [order(i, total="n/a" if i < missing else 10) for i in range(1000)]
    (report,) = run(v, "orders", [recs])
    c = check(report, "orders_total_missing_share")
    assert c.success is passes
    assert "limit 10%" in c.observed and f"{missing / 10:.1f}%" in c.observed
    assert bool(report.quarantine_reasons) is not passes


def test_order_row_checks(v: Validator) -> None:
    recs = [
        order(0),
        order(1, order_id="1"),                                       # key
        order(2, customer_id=None),                                   # customer
        order(3, total=-0.01),                                        # total
        order(4, product_ids=[1, 2], quantities=[1]),                 # lines
        order(5, product_ids=[], quantities=[]),                      # lines
        order(6, quantities=[1, 0]),                                  # lines
        order(7, product_ids=["1", 2]),                               # lines
        order(8, created_at="yesterday", updated_at=None),            # created_at
        order(9, created_at=12345, updated_at=None),                  # created_at
        order(10, total=0),                                           # fine
    ] + [order(i) for i in range(11, 40)]
    (report,) = run(v, "orders", [recs])
    expected = {
        "orders_order_id_valid_key": [1],
        "orders_customer_id_present": [2],
        "orders_total_non_negative": [3],
        "orders_lines_well_formed": [4, 5, 6, 7],
        "orders_created_at_parseable": [8, 9],
    }
    for name, rows in expected.items():
        c = check(report, name)
        assert c.policy == "drop-row"
        assert c.failing_rows.tolist() == rows, name
    assert report.rejected == {p: n for n, rows in expected.items() for p in rows}


def test_order_total_null_is_rejected(v: Validator) -> None:
    recs = [order(0, total=None)] + [order(i) for i in range(1, 20)]
    (report,) = run(v, "orders", [recs])
    assert check(report, "orders_total_non_negative").failing_rows.tolist() == [0]
    assert report.rejected == {0: "orders_total_non_negative"}


def test_status_known_warns(v: Validator) -> None:
    recs = [order(0, status=" Shipped "), order(1, status="lost"), order(2, status=None),
            order(3, status="CANCELLED")]
    (report,) = run(v, "orders", [recs])
    c = check(report, "orders_status_known")
    assert c.policy == "warn" and c.failing_rows.tolist() == [1, 2]
    assert report.rejected == {}


def test_updated_after_created_warns(v: Validator) -> None:
    recs = [
        order(0, created_at="2024-03-02T00:00:00Z", updated_at="2024-03-01T00:00:00Z"),
        order(1, created_at="2024-03-01T00:00:00Z", updated_at="2024-03-01T00:00:00Z"),
        order(2, created_at="2024-03-01T00:00:00Z", updated_at="2024-03-05T00:00:00+02:00"),
        order(3, updated_at=None),
        order(4, created_at="2024-03-01T12:00:00+02:00", updated_at="2024-03-01T11:00:00Z"),
    ]
    (report,) = run(v, "orders", [recs])
    c = check(report, "orders_updated_after_created")
    assert c.policy == "warn" and not c.success
    assert c.failing_rows.tolist() == [0]
    assert report.rejected == {}


# -- per-file verdicts in one micro-batch -----------------------------------------------------
def test_per_file_verdicts_in_one_micro_batch(v: Validator) -> None:
    good = [product(i) for i in range(10)]
    gated = [product(100 + i, price=None if i < 2 else 3.0) for i in range(10)]  # 20% missing
    one_bad_row = [product(200 + i, price=-1 if i == 4 else 3.0) for i in range(12)]
    no_price = [product(300 + i, price=...) for i in range(3)]
    files = [good, gated, [], one_bad_row, no_price]
    typed, present = typed_of("products", files)
    reports = v.validate("products", typed, present)
    assert [r.file_index for r in reports] == [0, 1, 2, 3, 4]
    assert [r.element_count for r in reports] == [10, 10, 0, 12, 3]
    assert [bool(r.quarantine_reasons) for r in reports] == [False, True, False, False, True]
    assert "20.0% of 10 rows" in reports[1].quarantine_reasons[0]
    assert reports[4].quarantine_reasons[0] == "missing required column(s): price"
    assert reports[0].rejected == {} and reports[2].rejected == {}
    # iloc positions in the micro-batch frame, not row numbers inside the file
    assert reports[3].rejected == {24: "products_price_positive"}
    assert typed.iloc[24][["_file", "_row_no"]].tolist() == [3, 4]
    assert reports[1].rejected == {10: "products_price_positive", 11: "products_price_positive"}
    for r in reports:
        for c in r.checks:
            assert (typed["_file"].to_numpy()[c.failing_rows] == r.file_index).all()
    gate = check(reports[0], "products_price_missing_share")
    assert gate.success and gate.unexpected_count == 0


def test_files_need_not_be_in_frame_order(v: Validator) -> None:
    typed, present = typed_of("products", [[product(1), product(2, price=-5)], [product(3)]])
    shuffled = typed.iloc[[2, 0, 1]].reset_index(drop=True)
    reports = v.validate("products", shuffled, present)
    assert reports[0].rejected == {2: "products_price_positive"}
    assert reports[1].rejected == {}
    assert [r.element_count for r in reports] == [2, 1]


def test_empty_micro_batch_skips_gx() -> None:
    validator = Validator(Settings())
    typed, present = typed_of("orders", [[], []])
    reports = validator.validate("orders", typed, present)
    assert [(r.file_index, r.element_count) for r in reports] == [(0, 0), (1, 0)]
    assert all(c.success for r in reports for c in r.checks)
    assert all(r.quarantine_reasons == [] and r.rejected == {} for r in reports)
    assert all(c.unexpected_percent is None for c in reports[0].checks)
    json.dumps(reports[0].to_json(), allow_nan=False)


def test_file_indices_must_match_present_columns(v: Validator) -> None:
    typed, present = typed_of("products", [[product(1)], [product(2)]])
    with pytest.raises(ValueError, match="_file"):
        v.validate("products", typed, present[:1])


# -- policies ---------------------------------------------------------------------------------
def test_policy_warn_keeps_failing_rows(v: Validator) -> None:
    validator = Validator(policies(products_price_positive="warn"))
    recs = [product(0, price=-1)] + [product(i) for i in range(1, 20)]
    (report,) = run(validator, "products", [recs])
    c = check(report, "products_price_positive")
    assert not c.success and c.policy == "warn"
    assert report.rejected == {} and report.quarantine_reasons == []


def test_policy_drop_row_on_a_warning_rejects(v: Validator) -> None:
    validator = Validator(Settings().replace(policies={"orders_status_known": "drop-row"}))
    recs = [order(0, status="lost"), order(1), order(2, status="Delivered")]
    (report,) = run(validator, "orders", [recs])
    assert report.rejected == {0: "orders_status_known"}
    assert check(report, "orders_created_at_parseable").policy == "drop-row"  # defaults kept


def test_policy_quarantine_on_a_row_check_quarantines_on_one_row(v: Validator) -> None:
    validator = Validator(policies(products_rating_between_1_and_5="quarantine-batch"))
    bad = [product(0, rating=7)] + [product(i) for i in range(1, 50)]
    reports = run(validator, "products", [bad, [product(99)]])
    rating = check(reports[0], "products_rating_between_1_and_5")
    assert reports[0].quarantine_reasons == [rating.observed]
    assert "rating outside 1..5: 1 of 50 rows (2.0%)" in reports[0].quarantine_reasons[0]
    assert reports[1].quarantine_reasons == []


def test_policy_drop_row_on_file_level_checks_is_treated_as_warn(v: Validator) -> None:
    validator = Validator(policies(products_price_missing_share="drop-row",
                                   products_required_columns="drop-row"))
    recs = [product(i, price=None if i < 5 else 2.0, name=...) for i in range(10)]
    (report,) = run(validator, "products", [recs])
    gate = check(report, "products_price_missing_share")
    cols = check(report, "products_required_columns")
    assert gate.policy == cols.policy == "warn"
    assert not gate.success and not cols.success and "treated as warn" in gate.observed
    assert report.quarantine_reasons == []
    assert set(report.rejected.values()) == {"products_price_positive"}


def test_policy_warn_on_gate_does_not_quarantine(v: Validator) -> None:
    validator = Validator(policies(orders_total_missing_share="warn"))
    recs = [order(i, total=None) for i in range(5)]
    (report,) = run(validator, "orders", [recs])
    assert not check(report, "orders_total_missing_share").success
    assert report.quarantine_reasons == []


# -- agreement with cleaning, JSON, setup errors ----------------------------------------------
def _messy_products(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    choices: dict[str, list[Any]] = {
        "product_id": [1, 2, "3", None, 2.5, True, ...],
        "price": [9.5, 0, -1, None, "7", "x", ..., float("1e308") * 10],
        "stock": [1, 0, -2, 1.5, None, "4", ...],
        "rating": [1, 5, 0, 9, None, "x"],
        "category": ["Books", " home", "toys", None, 3],
    }
    out = []
    for i in range(n):
        rec = product(i)
        for k, vals in choices.items():
            if rng.random() < 0.3:
                rec = _apply(rec, {k: vals[rng.integers(len(vals))]})
        out.append(rec)
    return out


def _messy_orders(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    choices: dict[str, list[Any]] = {
        "order_id": [1, "1", None, ...],
        "customer_id": [5, None, "5", 1.0],
        "total": [0, -5, None, "x", "3.5", ...],
        "quantities": [[1, 1], [0, 1], [1], None, "2"],
        "created_at": ["2024-01-01", "bad", None, 5, ...],
        "status": ["pending", "SHIPPED", "lost", None],
    }
    out = []
    for i in range(n):
        rec = order(i)
        for k, vals in choices.items():
            if rng.random() < 0.3:
                rec = _apply(rec, {k: vals[rng.integers(len(vals))]})
        out.append(rec)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("entity", ["products", "orders"])
def test_validation_and_cleaning_agree(v: Validator, entity: str, seed: int) -> None:
    make = _messy_products if entity == "products" else _messy_orders
    files = [make(40, seed), make(25, seed + 100)]
    typed, present = typed_of(entity, files)
    reports = v.validate(entity, typed, present)
    for name, mask in clean.row_rules(entity, typed).items():
        failing = np.concatenate([check(r, name).failing_rows for r in reports])
        assert sorted(failing.tolist()) == np.flatnonzero(mask).tolist(), name
    rejected = {p for r in reports for p in r.rejected}
    rules = clean.row_rules(entity, typed)
    drop = [m for n, m in rules.items() if default_policies()[n] == "drop-row"]
    assert set(np.flatnonzero(np.logical_or.reduce(drop)).tolist()) == rejected


def test_to_json_is_strict_and_restricted_to_the_file(v: Validator) -> None:
    files = [[product(1), product(2, price=None, rating=9)],
             [product(3, price=-1), product(4), product(5, price=-2)]]
    reports = run(v, "products", files)
    doc = json.loads(json.dumps(reports[1].to_json(), allow_nan=False))
    assert doc["file_index"] == 1 and doc["element_count"] == 3 and doc["rows_rejected"] == 2
    gx_doc = doc["great_expectations"]
    assert gx_doc["meta"]["great_expectations_version"]
    by_col = {(r["expectation_config"]["type"], r["expectation_config"]["kwargs"]["column"]): r
              for r in gx_doc["results"]}
    positive = by_col[("expect_column_values_to_be_between", "price")]
    assert positive["success"] is False
    assert positive["result"]["unexpected_count"] == 2
    assert positive["result"]["unexpected_index_list"] == [{"_row_no": [0, 2]}]
    not_null = by_col[("expect_column_values_to_not_be_null", "price")]
    assert not_null["result"]["unexpected_count"] == 0
    assert by_col[("expect_column_values_to_be_between", "rating")]["success"] is True
    doc0 = json.loads(json.dumps(reports[0].to_json(), allow_nan=False))
    rating0 = next(r for r in doc0["great_expectations"]["results"]
                   if r["expectation_config"]["kwargs"].get("column") == "rating")
    assert rating0["result"]["unexpected_index_list"] == [{"_row_no": [1]}]
    checks0 = {c["expectation"]: c for c in doc0["checks"]}
    assert checks0["products_price_missing_share"]["success"] is False
    assert checks0["products_price_positive"]["sample"] == [
        {"_row_no": 1, "product_id": 2, "price": None}
    ]


def test_broken_expectation_raises_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = quality_gx._gx_expectations

    def broken(gx: Any, entity: str, *extra: Any) -> list[tuple[str, Any]]:
        out = real(gx, entity, *extra)
        if entity == "products":
            bogus = gx.expectations.ExpectColumnValuesToBeBetween(
                column="no_such_column", min_value=0
            )
            out = [(tag, bogus if tag == "price_positive" else e) for tag, e in out]
        return out

    monkeypatch.setattr(quality_gx, "_gx_expectations", broken)
    monkeypatch.setattr(quality_gx, "_ENGINE", None)  # build a fresh context with the broken suite
    validator = Validator(Settings())
    with pytest.raises(ValidationSetupError, match="products_price_positive") as err:
        run(validator, "products", [[product(1), product(2)]])
    assert "no_such_column" in str(err.value)


def test_no_progress_bars_or_gx_noise_on_stderr(
    v: Validator, capfd: pytest.CaptureFixture[str]
) -> None:
    run(v, "orders", [[order(i) for i in range(50)]])
    out, err = capfd.readouterr()
    assert err == ""
    assert out == ""


def test_concurrent_validations_match_serial_results(v: Validator) -> None:
    batches = [[_messy_products(60, s)] for s in range(4)]
    expected = [run(v, "products", b)[0].rejected for b in batches]
    results: dict[int, list[dict[int, str]]] = {i: [] for i in range(4)}

    def work(i: int) -> None:
        for _ in range(5):
            results[i].append(run(v, "products", batches[i])[0].rejected)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert results[i] == [expected[i]] * 5


def test_great_expectations_is_built_once_per_process(v: Validator) -> None:
    """Fixed costs stay out of the per-batch path: every run reuses one context and suite."""
    typed, present = typed_of("orders", [[order(i) for i in range(1000)]])
    v.validate("orders", typed, present)
    engine = quality_gx._ENGINE
    assert engine is not None
    suites = {name: s.suite for name, s in engine.suites.items()}
    for _ in range(3):
        v.validate("orders", typed, present)
    assert quality_gx._ENGINE is engine
    assert {name: s.suite for name, s in engine.suites.items()} == suites


def _run_fresh(*lines: str) -> None:
    """Run ``lines`` of Python in a fresh interpreter (import state starts empty)."""
    root = Path(__file__).resolve().parents[1]
    code = "\n".join(["import sys", "from ecom_stream.config import Settings",
                      "from ecom_stream.quality.validate import Validator", *lines])
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=120)


def test_constructing_a_validator_does_not_import_gx() -> None:
    _run_fresh("Validator(Settings())", "assert 'great_expectations' not in sys.modules")


def test_scipy_stats_loads_only_when_used() -> None:
    """GX's import of scipy.stats is deferred (see ``_defer_import``), and still works."""
    _run_fresh(
        "Validator(Settings()).prepare()",
        "assert 'great_expectations' in sys.modules",
        "assert 'scipy.stats._stats_py' not in sys.modules",
        "from scipy import stats",
        "assert abs(stats.entropy([0.5, 0.5], [0.25, 0.75]) - 0.1438410362) < 1e-9",
        "assert 'scipy.stats._stats_py' in sys.modules",
    )


# -- domain warnings --------------------------------------------------------------------------
def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_orders_status_backwards() -> None:
    incoming = pd.DataFrame({
        "order_id": [1, 2, 3, 4, 5, 6],
        "status": ["pending", "delivered", "cancelled", "confirmed", "pending", "unknown"],
        "updated_at": [_ts("2024-01-05")] * 6,
        "_version_ts": [_ts("2024-01-05")] * 6,
    })
    stored = pd.DataFrame({
        "order_id": [1, 2, 3, 4, 6],
        "status": ["shipped", "shipped", "shipped", "delivered", "delivered"],
        "updated_at": [_ts("2024-01-01")] * 4 + [_ts("2024-01-01")],
        "_version_ts": [_ts("2024-01-01")] * 3 + [_ts("2024-01-09"), _ts("2024-01-01")],
    })
    (c,) = domain_warnings("orders", incoming, stored, Settings())
    assert c.expectation == "orders_status_backwards" and c.policy == "warn"
    # 1: shipped -> pending (newer); 4 is backwards but not a newer version; 5 has no stored row
    assert c.failing_rows.tolist() == [0]
    assert not c.success and c.unexpected_count == 1 and c.element_count == 5
    assert "order_id 1: shipped -> pending" in c.observed
    assert c.sample == [{"order_id": 1, "old_status": "shipped", "new_status": "pending"}]


def test_products_price_jump_uses_the_factor() -> None:
    incoming = pd.DataFrame({
        "product_id": [1, 2, 3, 4, 5],
        "price": [40.0, 30.0, 9.0, 10.0, 500.0],
        "_version_ts": [_ts("2024-02-01")] * 5,
    })
    stored = pd.DataFrame({
        "product_id": [1, 2, 3, 4],
        "price": [10.0, 10.0, 30.0, 10.0],
        "_version_ts": [_ts("2024-01-01")] * 4,
    })
    (c,) = domain_warnings("products", incoming, stored, Settings())
    assert c.expectation == "products_price_jump" and c.policy == "warn"
    assert c.failing_rows.tolist() == [0, 2]  # x4 up and x3.33 down; exactly x3 is fine
    assert "more than 3x" in c.observed and "10.00 -> 40.00" in c.observed
    (c,) = domain_warnings("products", incoming, stored, Settings(price_change_factor=5.0))
    assert c.success and c.failing_rows.size == 0


def test_domain_warnings_without_stored_rows() -> None:
    incoming = pd.DataFrame({"product_id": [1], "price": [3.0], "_version_ts": [_ts("2024-01-01")]})
    stored = incoming.iloc[0:0]
    (c,) = domain_warnings("products", incoming, stored, Settings())
    assert c.success and c.element_count == 0 and c.unexpected_percent is None


def test_bounds_reject_rows_by_name(v: Validator) -> None:
    """Values beyond the contract's bounds are rejected rows (not wrapped or quarantined)."""
    prods = [product(0, price=1e12), product(1, price=float("inf")), product(2, stock=1e25),
             product(3, price="1e400")] + [product(i) for i in range(4, 40)]
    (report,) = run(v, "products", [prods])
    assert report.quarantine_reasons == []
    assert report.rejected == {
        0: "products_price_below_max", 1: "products_price_below_max",
        2: "products_stock_non_negative_integer", 3: "products_price_below_max",
    }
    c = check(report, "products_price_below_max")
    assert c.policy == "drop-row" and "below 1e+12" in c.observed
    ords = [order(0, total=5e16), order(1, total=1e300),
            order(2, quantities=[4611686018427387904, 4611686018427387904]),
            order(3, quantities=[1, 999_999])] + [order(i) for i in range(4, 40)]
    (report,) = run(v, "orders", [ords])
    assert report.quarantine_reasons == []
    assert report.rejected == {
        0: "orders_total_below_max", 1: "orders_total_below_max",
        2: "orders_quantities_below_max",
    }

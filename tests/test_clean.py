"""The cleaning rules, one by one, on the pure transforms (no lake needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecom_stream.transform import clean
from ecom_stream.transform.typed import _of_type


def typed(entity: str, *records: dict[str, Any]) -> pd.DataFrame:
    return clean.typed_view(entity, clean.records_frame(entity, [list(records)]))


def product(**kw: Any) -> dict[str, Any]:
    return {
        "product_id": 1,
        "name": "Acme Phone",
        "category": "Electronics",
        "price": 10.0,
        "rating": 4.0,
        "stock": 5,
        "created_at": "2026-01-01T00:00:00",
        **kw,
    }


def order(**kw: Any) -> dict[str, Any]:
    return {
        "order_id": 1,
        "customer_id": 7,
        "product_ids": [1, 2],
        "quantities": [1, 2],
        "total": 30.0,
        "status": "pending",
        "payment_method": "paypal",
        "shipping_city": "Chicago",
        "created_at": "2026-03-04T23:30:00",
        **kw,
    }


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (12.5, 12.5),
        ("12.50", 12.5),
        ("1e3", 1000.0),
        (" 7 ", 7.0),
        (3, 3.0),
        ("N/A", None),
        ("$12", None),
        ("", None),
        ("NaN", None),
        ("Infinity", None),
        (True, None),
        (None, None),
        ([1], None),
        ("0x10", None),
    ],
)
def test_number_parsing(raw: Any, parsed: float | None) -> None:
    value = clean.parse_number(pd.Series([raw], dtype=object)).iloc[0]
    assert np.isnan(value) if parsed is None else value == parsed


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        (1, True),
        (2**63 - 1, True),
        (-5, True),
        (2**63, False),
        ("1", False),
        (1.0, False),
        (True, False),
        (None, False),
    ],
)
def test_keys_must_be_json_int64(raw: Any, valid: bool) -> None:
    assert clean.parse_key(pd.Series([raw], dtype=object)).notna().iloc[0] == valid


def test_product_cleaning() -> None:
    t = typed(
        "products",
        product(product_id=1, name="  acme   PHONE ", category=" electronics "),
        product(product_id=2, category=None, rating=7.5, price="30"),
        product(product_id=3, rating=None, price=600, stock="4"),
    )
    out = clean.clean_products(t)
    assert out["name"].tolist()[0] == "Acme Phone"
    assert out["category"].tolist() == ["Electronics", "Unknown", "Electronics"]
    assert out["rating"].tolist()[:2] == [4.0, 5.0]
    assert np.isnan(out["rating"].iloc[2])
    assert out["price_tier"].tolist() == ["Budget", "Mid-Range", "Luxury"]
    assert out["stock"].tolist() == [5, 5, 4]


@pytest.mark.parametrize(
    ("price", "tier"),
    [
        (0.01, "Budget"),
        (25, "Budget"),
        (25.01, "Mid-Range"),
        (100, "Mid-Range"),
        (100.5, "Premium"),
        (500, "Premium"),
        (500.01, "Luxury"),
    ],
)
def test_price_tier_bounds(price: float, tier: str) -> None:
    assert clean.price_tier(pd.Series([float(price)])).iloc[0] == tier


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"product_id": "9"}, "products_product_id_valid_key"),
        ({"price": "N/A"}, "products_price_positive"),
        ({"price": None}, "products_price_positive"),
        ({"price": -3}, "products_price_positive"),
        ({"price": 0}, "products_price_positive"),
        ({"stock": -1}, "products_stock_non_negative_integer"),
        ({"stock": 2.5}, "products_stock_non_negative_integer"),
        ({"stock": "many"}, "products_stock_non_negative_integer"),
        ({"stock": 1e25}, "products_stock_non_negative_integer"),
        ({"stock": 10**9}, "products_stock_non_negative_integer"),
        ({"price": 1e12}, "products_price_below_max"),
        ({"price": "1e400"}, "products_price_below_max"),
        ({"price": float("inf")}, "products_price_below_max"),
        ({"price": "-1e400"}, "products_price_positive"),
    ],
)
def test_product_row_rules(overrides: dict[str, Any], rule: str) -> None:
    rules = clean.row_rules("products", typed("products", product(**overrides)))
    assert [name for name, mask in rules.items() if mask[0]] == [rule]


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"order_id": None}, "orders_order_id_valid_key"),
        ({"customer_id": None}, "orders_customer_id_present"),
        ({"total": None}, "orders_total_non_negative"),
        ({"total": "abc"}, "orders_total_non_negative"),
        ({"total": -0.01}, "orders_total_non_negative"),
        ({"product_ids": [], "quantities": []}, "orders_lines_well_formed"),
        ({"quantities": [1]}, "orders_lines_well_formed"),
        ({"quantities": [1, 0]}, "orders_lines_well_formed"),
        ({"created_at": "yesterday"}, "orders_created_at_parseable"),
        ({"total": 5e16}, "orders_total_below_max"),
        ({"total": 1e300}, "orders_total_below_max"),
        ({"total": "1e400"}, "orders_total_below_max"),
        ({"total": 1e12}, "orders_total_below_max"),
        ({"quantities": [4611686018427387904, 4611686018427387904]},
         "orders_quantities_below_max"),
        ({"quantities": [1, 1_000_000]}, "orders_quantities_below_max"),
    ],
)
def test_order_row_rules(overrides: dict[str, Any], rule: str) -> None:
    rules = clean.row_rules("orders", typed("orders", order(**overrides)))
    assert [name for name, mask in rules.items() if mask[0]] == [rule]


def test_order_cleaning_and_lines() -> None:
    t = typed(
        "orders",
        order(status=" Shipped "),
        order(order_id=2, status="lost", total="0", created_at="2026-03-05T01:00:00+02:00"),
    )
    out = clean.clean_orders(t)
    assert out["status"].tolist() == ["shipped", "unknown"]
    assert [str(d) for d in out["order_date"]] == ["2026-03-04", "2026-03-04"]  # UTC date
    assert out["order_month"].tolist() == ["2026-03", "2026-03"]
    assert out["order_dow"].tolist() == ["Wednesday", "Wednesday"]
    assert out["order_hour"].tolist() == [23, 23]
    assert out["n_items"].tolist() == [2, 2]
    lines = clean.order_lines(out)
    assert lines["line_no"].tolist() == [1, 2, 1, 2]
    assert lines["quantity"].tolist() == [1, 2, 1, 2]


def test_newest_per_key_uses_version_then_hash() -> None:
    t = typed(
        "orders",
        order(status="pending", updated_at="2026-03-05T00:00:00"),
        order(status="shipped", updated_at="2026-03-06T00:00:00"),
        order(status="confirmed", updated_at="2026-03-05T12:00:00"),
    )
    out = clean.newest_per_key(clean.clean_orders(t), "order_id")
    assert out["status"].tolist() == ["shipped"]
    # A tie on the timestamp is broken by the larger row hash, whatever the input order.
    tie = [order(status=s, updated_at="2026-03-05T00:00:00") for s in ("pending", "delivered")]
    a = clean.newest_per_key(clean.clean_orders(typed("orders", *tie)), "order_id")
    b = clean.newest_per_key(clean.clean_orders(typed("orders", *tie[::-1])), "order_id")
    assert a["status"].tolist() == b["status"].tolist()


def test_missing_updated_at_uses_created_at() -> None:
    t = typed("orders", order(updated_at=None))
    assert t["_version_ts"].iloc[0] == t["created_at"].iloc[0]


def test_unknown_fields_are_rescued() -> None:
    raw = clean.records_frame("orders", [[order(coupon="X1"), order(order_id=2)]])
    assert raw["_rescued"].tolist() == ['{"coupon": "X1"}', None]


@pytest.mark.parametrize(
    ("values", "kind", "expected"),
    [
        ([1, 2, 3], int, [True, True, True]),  # one type: answered from the type set
        (["a", "b"], int, [False, False]),  # type absent
        ([1, True, 2.0, None, "1"], int, [True, False, False, False, False]),  # bool is not int
        ([], str, []),
    ],
)
def test_of_type_is_exact(values: list[Any], kind: type, expected: list[bool]) -> None:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    assert _of_type(arr, kind).tolist() == expected
    assert _of_type(pd.Series(arr, dtype=object), kind).tolist() == expected


def _newest_reference(df: pd.DataFrame, key: str) -> pd.DataFrame:
    ordered = df.sort_values([key, "_version_ts", "_row_hash"], kind="stable")
    return ordered.drop_duplicates(key, keep="last")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 6), st.integers(0, 3), st.sampled_from(["a", "b", "c"])),
        min_size=1,
        max_size=25,
    )
)
def test_newest_per_key_equals_full_sort(rows: list[tuple[int, int, str]]) -> None:
    df = pd.DataFrame(
        {
            "order_id": [k for k, _, _ in rows],
            "_version_ts": pd.to_datetime([v for _, v, _ in rows], unit="s", utc=True),
            "_row_hash": [h for _, _, h in rows],
            "pos": range(len(rows)),
        }
    )
    got = clean.newest_per_key(df, "order_id").sort_values("order_id")
    want = _newest_reference(df, "order_id").sort_values("order_id")
    assert got["pos"].tolist() == want["pos"].tolist()


def test_dates_and_months_are_utc_and_keep_nulls() -> None:
    times = pd.Series(
        pd.to_datetime(["2026-01-31T23:59:59Z", "2025-12-01T00:00:00+01:00", None], utc=True)
    ).astype("datetime64[us, UTC]")
    assert [str(d) if d is not None else None for d in clean._dates(times)] == [
        "2026-01-31",
        "2025-11-30",
        None,
    ]
    assert clean._months(times).tolist() == ["2026-01", "2025-11", None]


@pytest.mark.parametrize(
    ("raw", "titled"),
    [
        ("Folio Children's Book", "Folio Children's Book"),
        ("folio CHILDREN\u2019S book", "Folio Children\u2019s Book"),
        ("3d printer", "3d Printer"),
        ("usb-c 2nd-gen  cable", "Usb-C 2nd-Gen Cable"),
        ("  acme   PHONE ", "Acme Phone"),
        ("rock 'n' roll", "Rock 'N' Roll"),
        ("\u00e9cole caf\u00e9", "\u00c9cole Caf\u00e9"),
        ("", ""),
    ],
)
def test_title_case_keeps_apostrophes_and_digits(raw: str, titled: str) -> None:
    assert clean.title_case(raw) == titled


def test_one_title_case_for_validation_and_cleaning() -> None:
    from ecom_stream.quality import validate

    assert not hasattr(validate, "_title_case")  # validation uses clean.title_case
    t = typed("products", product(name="folio children's book", category="children's"))
    out = clean.clean_products(t)
    assert out["name"].tolist() == ["Folio Children's Book"]
    assert out["category"].tolist() == ["Children's"]


def test_bounds_come_from_the_settings() -> None:
    from ecom_stream.config import Settings

    loose = Settings(max_price=1e15, max_total=1e15, max_quantity=10**7, max_stock=10**10)
    edge_p = [product(price=999_999_999_999.99, stock=999_999_999)]
    edge_o = [order(total=999_999_999_999.99, quantities=[999_999, 1])]
    for entity, recs in (("products", edge_p), ("orders", edge_o)):
        t = clean.typed_view(entity, clean.records_frame(entity, [recs]))
        assert not any(m[0] for m in clean.row_rules(entity, t).values()), entity
    big_p = [product(price=1e13, stock=10**9)]
    big_o = [order(total=1e13, quantities=[10**6, 1])]
    for entity, recs in (("products", big_p), ("orders", big_o)):
        strict = clean.typed_view(entity, clean.records_frame(entity, [recs]))
        assert any(m[0] for m in clean.row_rules(entity, strict).values()), entity
        t = clean.typed_view(entity, clean.records_frame(entity, [recs]), loose)
        assert not any(m[0] for m in clean.row_rules(entity, t).values()), entity
    env = Settings.from_sources({"ECOM_MAX_TOTAL": "5e12", "ECOM_MAX_QUANTITY": "10"})
    assert env.max_total == 5e12 and env.max_quantity == 10


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("aZ3 '\u2019-\u00e9\u00df_\t"), max_size=12))
def test_title_case_is_idempotent_and_agrees_with_str_title_without_digits(text: str) -> None:
    titled = clean.title_case(text)
    assert clean.title_case(titled) == titled
    assert titled.casefold() == " ".join(text.split()).casefold()
    if not any(c.isdigit() or c in "'\u2019" for c in text):
        assert titled == " ".join(text.split()).title()

"""The simulated source: determinism, files, schema, mess rates, timeline and re-sends."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ecom_stream.contract.schema import (
    CATEGORIES,
    ORDER_FIELDS,
    ORDER_STATUSES,
    PAYMENT_METHODS,
    PRODUCT_FIELDS,
    STATUS_RANK,
)
from ecom_stream.errors import ConfigError
from ecom_stream.tools import generate as gen
from ecom_stream.tools.generate import GenerateOptions, generate, sale_days

CITIES = {"New York", "Los Angeles", "Chicago", "Houston", "Phoenix", "Philadelphia"}
BATCHES, ORDERS, PRODUCTS = 24, 200, 4000


def load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())


def ts(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def window(n: int, start: date = date(2026, 1, 1)) -> tuple[datetime, datetime]:
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC) + (n - 1) * timedelta(days=1)
    return begin, begin + timedelta(days=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One mid-sized run shared by the read-only tests: 4000 products, 24 x 200 orders."""
    out = tmp_path_factory.mktemp("source")
    paths = generate(GenerateOptions(out=out, batches=BATCHES, orders_per_batch=ORDERS,
                                     products=PRODUCTS, product_batches=3, seed=7))
    products = [(p, load(p)) for p in paths if p.name.startswith("products")]
    orders = [(p, load(p)) for p in paths if p.name.startswith("orders")]
    latest: dict[int, dict[str, Any]] = {}
    for _, rows in products:
        for row in rows:
            old = latest.get(row["product_id"])
            if old is None or ts(row["updated_at"]) > ts(old["updated_at"]):
                latest[row["product_id"]] = row
    return {"out": out, "paths": paths, "products": products, "orders": orders, "latest": latest}


def all_orders(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for _, rows in run["orders"] for row in rows]


def first_sends(run: dict[str, Any]) -> list[dict[str, Any]]:
    seen: set[int] = set()
    firsts = []
    for row in all_orders(run):
        if row["order_id"] not in seen:
            seen.add(row["order_id"])
            firsts.append(row)
    return firsts


# -- files ----------------------------------------------------------------------------------
def test_same_seed_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    def files(folder: str, seed: int, batches: int = 4) -> dict[str, bytes]:
        opts = GenerateOptions(out=tmp_path / folder, batches=batches, orders_per_batch=150,
                               products=80, product_batches=2, seed=seed)
        return {p.name: p.read_bytes() for p in generate(opts)}

    first, again, other = files("a", 3), files("b", 3), files("c", 4)
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)
    longer = files("d", 3, batches=6)  # a longer run starts with the same files
    assert {name: longer[name] for name in first} == first


def test_file_names_count_and_order(tmp_path: Path) -> None:
    written: list[Path] = []
    paths = generate(GenerateOptions(out=tmp_path / "new", batches=3, orders_per_batch=20,
                                     products=30, product_batches=2, start=7),
                     on_file=written.append)
    names = [p.name for p in paths]
    assert names == ["products-000001.json", "products-000002.json", "orders-000007.json",
                     "orders-000008.json", "orders-000009.json"]
    assert written == paths and all(p.parent == tmp_path / "new" for p in paths)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(names)
    assert all(len(load(p)) == 20 for p in paths[2:])


def test_order_ids_continue_a_series_with_start(tmp_path: Path) -> None:
    paths = generate(GenerateOptions(out=tmp_path, batches=2, orders_per_batch=50, products=20,
                                     start=11))
    ids = [r["order_id"] for p in paths if p.name.startswith("orders") for r in load(p)]
    assert min(ids) == 10 * 50 + 1
    begin, end = window(11)
    first = load(paths[1])  # a run's first batch has nothing to re-send
    assert sorted(r["order_id"] for r in first) == list(range(501, 551))
    assert all(ts(r["updated_at"]) < end for r in first)
    assert sum(begin <= ts(r["created_at"]) < end for r in first) >= 45


def test_zero_batches_writes_only_products(tmp_path: Path) -> None:
    paths = generate(GenerateOptions(out=tmp_path, batches=0, products=10))
    assert [p.name for p in paths] == ["products-000001.json"]


def test_atomic_write_leaves_no_temp_files(tmp_path: Path, run: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert not [p for p in run["out"].iterdir() if p.name.startswith(".")]

    def broken(src: Any, dst: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(gen.os, "replace", broken)
    with pytest.raises(OSError, match="disk gone"):
        generate(GenerateOptions(out=tmp_path, batches=1, products=10))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field, value", [
    ("batches", -1), ("orders_per_batch", 0), ("products", 0), ("product_batches", 0),
    ("start", 0), ("interval", -1.0),
])
def test_invalid_options_are_config_errors(tmp_path: Path, field: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        generate(GenerateOptions(**{"out": tmp_path, "products": 10, field: value}))


def test_interval_drips_and_stop_ends_early(tmp_path: Path) -> None:
    began = time.monotonic()
    paths = generate(GenerateOptions(out=tmp_path / "drip", batches=3, orders_per_batch=10,
                                     products=10, interval=0.1))
    assert len(paths) == 4 and time.monotonic() - began >= 0.2

    stop = threading.Event()

    def on_file(path: Path) -> None:
        if path.name.startswith("orders"):
            stop.set()

    began = time.monotonic()
    paths = generate(GenerateOptions(out=tmp_path / "stop", batches=1000, orders_per_batch=10,
                                     products=10, interval=30.0), on_file=on_file, stop=stop)
    assert [p.name for p in paths] == ["products-000001.json", "orders-000001.json"]
    assert time.monotonic() - began < 2

    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()  # set while generate waits between files
    began = time.monotonic()
    paths = generate(GenerateOptions(out=tmp_path / "timer", batches=1000, orders_per_batch=10,
                                     products=10, interval=30.0), stop=stop)
    assert len(paths) == 2 and time.monotonic() - began < 5


# -- products -------------------------------------------------------------------------------
def test_product_batches_split_the_catalogue_and_resend(run: dict[str, Any]) -> None:
    files = run["products"]
    assert [p.name for p, _ in files] == [f"products-00000{k}.json" for k in (1, 2, 3)]
    seen: dict[int, dict[str, Any]] = {}
    resends = 0
    for k, (_, rows) in enumerate(files):
        fresh = [r for r in rows if r["product_id"] not in seen]
        assert len(fresh) in (PRODUCTS // 3, PRODUCTS // 3 + 1)
        for row in rows:
            old = seen.get(row["product_id"])
            if old is not None:
                resends += 1
                assert k > 0
                assert ts(row["updated_at"]) > ts(old["updated_at"])
                assert row["created_at"] == old["created_at"]
                assert row["stock"] == old["stock"]
            seen[row["product_id"]] = row
    assert sorted(seen) == list(range(1, PRODUCTS + 1))
    assert resends == pytest.approx(0.05 * PRODUCTS, abs=2)
    assert all(ts(r["updated_at"]) < window(1)[0] for r in seen.values())


def test_product_records_have_the_schema(run: dict[str, Any]) -> None:
    for _, rows in run["products"]:
        for row in rows:
            assert tuple(row) == PRODUCT_FIELDS
            assert type(row["product_id"]) is int and type(row["stock"]) is int
            assert row["stock"] >= 0
            assert row["category"] is None or row["category"] in CATEGORIES
            assert row["price"] == "N/A" or type(row["price"]) is float
            assert row["rating"] is None or 1.0 <= row["rating"] <= 5.0
            assert ts(row["created_at"]) <= ts(row["updated_at"])
            if isinstance(row["price"], float):
                assert round(row["price"], 2) == row["price"]


def test_product_mess_rates(run: dict[str, Any]) -> None:
    rows = [row for _, rows in run["products"] for row in rows]
    n = len(rows)

    def share(pred: Any) -> float:
        return sum(map(pred, rows)) / n

    assert share(lambda r: r["name"] == r["name"].upper()) == pytest.approx(0.05, abs=0.015)
    assert share(lambda r: r["name"] != r["name"].strip()) == pytest.approx(0.03, abs=0.01)
    assert share(lambda r: r["price"] == "N/A") == pytest.approx(0.02, abs=0.01)
    assert share(lambda r: isinstance(r["price"], float) and r["price"] < 0) == pytest.approx(
        0.02, abs=0.01)
    assert share(lambda r: r["category"] is None) == pytest.approx(0.03, abs=0.01)
    assert share(lambda r: r["rating"] is None) == pytest.approx(0.05, abs=0.015)
    clean = [r for r in run["products"][0][1]
             if r["category"] and isinstance(r["price"], float) and r["price"] > 0]
    cats = Counter(r["category"] for r in clean)
    assert cats["Electronics"] / len(clean) == pytest.approx(0.30, abs=0.04)
    assert cats["Sports"] / len(clean) == pytest.approx(0.10, abs=0.03)
    ranges = {"Electronics": (50, 1500), "Clothing": (10, 200), "Home": (15, 500),
              "Books": (5, 60), "Sports": (10, 400)}
    for row in clean:
        low, high = ranges[row["category"]]
        assert low <= row["price"] <= high


# -- orders ---------------------------------------------------------------------------------
def test_order_records_have_the_schema_and_valid_lines(run: dict[str, Any]) -> None:
    catalogue = run["latest"]
    for row in all_orders(run):
        assert tuple(row) == ORDER_FIELDS
        assert type(row["order_id"]) is int and 1 <= row["customer_id"] <= 2000
        pids, qtys = row["product_ids"], row["quantities"]
        assert 1 <= len(pids) <= 5 and len(pids) == len(qtys) == len(set(pids))
        assert all(pid in catalogue for pid in pids)
        assert all(type(q) is int and 1 <= q <= 3 for q in qtys)
        assert row["total"] is None or (type(row["total"]) is float and row["total"] > 0)
        assert row["status"] in ORDER_STATUSES and row["payment_method"] in PAYMENT_METHODS
        assert row["shipping_city"] in CITIES
        delay = ts(row["updated_at"]) - ts(row["created_at"])
        assert timedelta(0) <= delay <= timedelta(days=14)


def test_order_totals_use_the_true_latest_price(run: dict[str, Any]) -> None:
    latest = run["latest"]
    checked = 0
    for row in all_orders(run):
        prices = [latest[pid]["price"] for pid in row["product_ids"]]
        if row["total"] is None or "N/A" in prices:
            continue
        expected = sum(abs(p) * q for p, q in zip(prices, row["quantities"], strict=True))
        assert row["total"] == pytest.approx(expected, abs=0.011)
        checked += 1
    assert checked > 0.8 * BATCHES * ORDERS


def test_order_ids_increase_and_rates(run: dict[str, Any]) -> None:
    firsts = first_sends(run)
    ids = [r["order_id"] for r in firsts]
    assert sorted(ids) == list(range(1, len(ids) + 1))
    by_file = [[r["order_id"] for r in rows] for _, rows in run["orders"]]
    assert all(len(rows) == ORDERS for rows in by_file)
    status = Counter(r["status"] for r in firsts)
    for name, share in {"pending": 0.05, "confirmed": 0.10, "shipped": 0.15, "delivered": 0.60,
                        "cancelled": 0.10}.items():
        assert status[name] / len(firsts) == pytest.approx(share, abs=0.03), name
    rows = all_orders(run)
    assert sum(r["total"] is None for r in rows) / len(rows) == pytest.approx(0.01, abs=0.006)
    lines = Counter(len(r["product_ids"]) for r in firsts)
    assert lines[1] / len(firsts) == pytest.approx(0.5, abs=0.05)
    assert lines[1] > lines[2] > lines[3] > lines[4] > lines[5] > 0


def test_timeline_windows_late_arrivals_and_hour_profile(run: dict[str, Any]) -> None:
    firsts = {r["order_id"] for r in first_sends(run)}
    late = total = 0
    hours: Counter[int] = Counter()
    for n, (_, rows) in enumerate(run["orders"], start=1):
        begin, end = window(n)
        assert all(ts(r["updated_at"]) < end for r in rows)
        for row in rows:
            if row["order_id"] not in firsts:
                continue
            firsts.discard(row["order_id"])
            created = ts(row["created_at"])
            total += 1
            hours[created.hour] += 1
            if created < begin:
                late += 1
                assert begin - timedelta(days=3) <= created < end - timedelta(days=1)
            else:
                assert created < end
    assert late / total == pytest.approx(0.02, abs=0.01)
    assert sum(hours[h] for h in range(16, 20)) > 2 * sum(hours[h] for h in range(1, 5))


def test_resends_progress_forward_with_newer_updated_at(run: dict[str, Any]) -> None:
    seen: dict[int, dict[str, Any]] = {}
    resends = 0
    for n, (_, rows) in enumerate(run["orders"], start=1):
        in_file = [r["order_id"] for r in rows]
        assert len(in_file) == len(set(in_file))
        for row in rows:
            old = seen.get(row["order_id"])
            if old is not None:
                resends += 1
                assert ts(row["updated_at"]) > ts(old["updated_at"])
                assert old["status"] not in ("delivered", "cancelled")
                assert STATUS_RANK[row["status"]] > STATUS_RANK[old["status"]]
                for field in ("created_at", "product_ids", "quantities", "customer_id"):
                    assert row[field] == old[field]
                if row["total"] is not None and old["total"] is not None:
                    assert row["total"] == old["total"]
                assert ts(row["updated_at"]) >= window(n)[0]
                assert ts(row["updated_at"]) - ts(row["created_at"]) <= timedelta(days=14)
            seen[row["order_id"]] = row
    assert resends == pytest.approx(0.1 * ORDERS * (BATCHES - 1), rel=0.05)


def test_sale_days_are_rare_deterministic_and_spike_a_category(tmp_path: Path) -> None:
    days = sale_days(42, 2000)
    assert days == sale_days(42, 2000) and days != sale_days(43, 2000)
    assert 0.02 < len(days) / 2000 < 0.06 and min(days) >= 7
    assert set(days.values()) == set(CATEGORIES)

    day, category = next(iter(sale_days(42, 30).items()))  # seed 42: day 7, Sports
    paths = generate(GenerateOptions(out=tmp_path, batches=day + 1, orders_per_batch=450,
                                     products=300, seed=42))
    category_of = {r["product_id"]: r["category"] for r in load(paths[0])}
    per_order: dict[bool, Counter[str | None]] = {}
    for sale in (False, True):
        files = paths[1:][day:] if sale else paths[1:][:day]
        rows = [r for p in files for r in load(p)]
        lines = Counter(category_of[pid] for r in rows for pid in r["product_ids"])
        per_order[sale] = Counter({c: k / len(rows) for c, k in lines.items()})
    # The category on sale has about twice its usual lines per order; the others do not dip.
    assert per_order[True][category] > 1.7 * per_order[False][category]
    others = [c for c in CATEGORIES if c != category]
    assert sum(per_order[True][c] for c in others) > 0.9 * sum(per_order[False][c] for c in others)


def test_three_hundred_files_are_written(tmp_path: Path) -> None:
    paths = generate(GenerateOptions(out=tmp_path, batches=300, orders_per_batch=50, products=100))
    assert len(paths) == 301
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)

"""The spine on temporary lakes: upserts, duplicates, quarantine, micro-batches, rebuild."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import COMPARED_TABLES as COMPARED
from conftest import assert_same_tables, snapshot
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ecom_stream.config import Settings
from ecom_stream.engine import microbatch
from ecom_stream.engine.backfill import run_backfill
from ecom_stream.engine.pipeline import Pipeline
from ecom_stream.engine.rebuild import rebuild
from ecom_stream.storage.lake import Lake
from ecom_stream.storage.tables import Tables


def product(
    pid: int, price: Any = 10.0, updated: str = "2026-01-01T00:00:00", **kw: Any
) -> dict[str, Any]:
    return {
        "product_id": pid,
        "name": f"acme item {pid}",
        "category": "Books",
        "price": price,
        "rating": 4.0,
        "stock": 3,
        "created_at": "2026-01-01T00:00:00",
        "updated_at": updated,
        **kw,
    }


def order(
    oid: int,
    status: str = "pending",
    updated: str = "2026-01-02T00:00:00",
    created: str = "2026-01-02T00:00:00",
    total: Any = 20.0,
    pids: list[int] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    pids = pids or [1]
    return {
        "order_id": oid,
        "customer_id": 5,
        "product_ids": pids,
        "quantities": [1] * len(pids),
        "total": total,
        "status": status,
        "payment_method": "paypal",
        "shipping_city": "Chicago",
        "created_at": created,
        "updated_at": updated,
        **kw,
    }


def ledger(settings: Settings) -> pd.DataFrame:
    return Lake(settings.lake_dir).tables.read_pandas("ledger")


def test_backfill_merges_and_empties_landing(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    # One unparseable price in 20 rows (5%) is rejected row by row; the batch is under the 10% gate.
    write_batch("products-1.json", [product(i) for i in range(1, 20)] + [product(99, price="N/A")])
    write_batch("orders-1.json", [order(1), order(2, status="shipped", pids=[1, 2])])
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"merged": 2}
    assert list(settings.landing_dir.iterdir()) == []
    lake = Lake(settings.lake_dir)
    assert sorted(lake.tables.read_pandas("silver_products")["product_id"]) == list(range(1, 20))
    assert sorted(lake.tables.read_pandas("silver_orders")["order_id"]) == [1, 2]
    assert lake.queries.count("silver_order_lines") == 3
    assert lake.queries.count("bronze_products") == 20  # the rejected row is kept in bronze
    rejected = lake.tables.read_pandas("rejected_rows")
    assert rejected[["entity", "key", "reason"]].values.tolist() == [
        ["products", "99", "products_price_positive"]
    ]
    assert json.loads(rejected["raw"].iloc[0])["price"] == "N/A"
    rows = ledger(settings).set_index("file_name")
    assert rows.loc["products-1.json", "rows_rejected"] == 1
    assert rows.loc["products-1.json", "rows_merged"] == 19
    raw = list((settings.lake_dir / "raw").glob("*/*/products-1.json"))
    assert len(raw) == 1


def test_upsert_keeps_newest_version(settings: Settings, write_batch: Callable[..., Path]) -> None:
    write_batch("orders-2.json", [order(1, status="shipped", updated="2026-01-05T00:00:00")])
    write_batch("orders-1.json", [order(1, status="pending", updated="2026-01-03T00:00:00")])
    run_backfill(settings, progress=False)
    orders = Lake(settings.lake_dir).tables.read_pandas("silver_orders")
    assert orders["status"].tolist() == ["shipped"]


def test_invalid_newer_version_never_erases(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    write_batch("orders-1.json", [order(1, total=20.0, updated="2026-01-03T00:00:00")])
    run_backfill(settings, progress=False)
    write_batch("orders-2.json", [order(1, total=-5, updated="2026-01-09T00:00:00")])
    run_backfill(settings, progress=False)
    orders = Lake(settings.lake_dir).tables.read_pandas("silver_orders")
    assert orders["total"].tolist() == [20.0]


def test_lines_follow_order_updates(settings: Settings, write_batch: Callable[..., Path]) -> None:
    write_batch("orders-1.json", [order(1, pids=[1, 2, 3], created="2026-01-02T10:00:00")])
    run_backfill(settings, progress=False)
    # Fewer lines and another day: old lines must go, new ones live in the new partition.
    write_batch(
        "orders-2.json",
        [order(1, pids=[4], created="2026-01-04T10:00:00", updated="2026-01-05T00:00:00")],
    )
    run_backfill(settings, progress=False)
    lines = Lake(settings.lake_dir).tables.read_pandas("silver_order_lines")
    assert lines[["order_id", "line_no", "product_id"]].values.tolist() == [[1, 1, 4]]
    assert str(lines["order_date"].iloc[0]) == "2026-01-04"


def test_same_file_twice_is_a_duplicate(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    write_batch("orders-1.json", [order(1)])
    run_backfill(settings, progress=False)
    before = Lake(settings.lake_dir).tables.versions()
    write_batch("orders-1-again.json", [order(1)])
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"duplicate": 1}
    after = Lake(settings.lake_dir).tables.versions()
    assert {k: v for k, v in after.items() if k != "ledger"} == {
        k: v for k, v in before.items() if k != "ledger"
    }
    assert list(settings.landing_dir.iterdir()) == []


def test_a_third_copy_after_a_duplicate_is_a_duplicate_too(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    """The duplicate row of the second copy must not hide that the bytes were merged (found
    by the micro-batch size property test: the third copy was merged, doubling bronze)."""
    p = Pipeline(settings)
    for n in range(3):
        p.process([write_batch(f"orders-{n}.json", [order(1), order(2)])])
    assert ledger(settings)["outcome"].value_counts().to_dict() == {"duplicate": 2, "merged": 1}
    write_batch("orders-3.json", [order(1), order(2)])
    assert run_backfill(settings, progress=False).outcomes == {"duplicate": 1}  # after a restart
    assert Lake(settings.lake_dir).queries.count("bronze_orders") == 2


def test_empty_array_is_recorded_as_empty(
    settings: Settings, write_batch: Callable[..., Path]
) -> None:
    write_batch("orders-1.json", [])
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"empty": 1}


def test_malformed_files_are_quarantined_never_crash(settings: Settings) -> None:
    land = settings.landing_dir
    (land / "orders-bad.json").write_text('[{"order_id": 1,]')
    (land / "orders-zero.json").write_bytes(b"")
    (land / "orders-bin.json").write_bytes(os.urandom(64) + b"\xff")
    (land / "customers-1.json").write_text("[]")
    (land / "orders-obj.json").write_text('{"order_id": 1}')
    (land / "orders-1.csv").write_text("a,b\n")
    (land / "orders-1.json.tmp").write_text("[")
    (land / ".orders-hidden.json").write_text("[")
    (land / "subdir").mkdir()
    target = land.parent / "elsewhere.json"
    target.write_text("[]")
    os.symlink(target, land / "orders-link.json")
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"quarantined": 7}
    left = sorted(p.name for p in land.iterdir())
    assert left == [".orders-hidden.json", "orders-1.json.tmp", "subdir"]
    reasons = {
        json.loads(p.read_text())["file"]: json.loads(p.read_text())["reason"]
        for p in (settings.lake_dir / "quarantine").glob("*.reason.json")
    }
    assert "invalid JSON at line 1" in reasons["orders-bad.json"]
    assert reasons["orders-zero.json"].startswith("empty file")
    assert "not UTF-8" in reasons["orders-bin.json"]
    assert "unknown entity" in reasons["customers-1.json"]
    assert "not an array" in reasons["orders-obj.json"]
    assert "unsupported extension" in reasons["orders-1.csv"]
    assert "symbolic link" in reasons["orders-link.json"]
    assert (settings.lake_dir / "quarantine" / "orders-link.json").is_symlink()
    assert target.exists()  # the link's target was never touched
    assert Lake(settings.lake_dir).queries.count("quarantine_records") == 7


def test_schema_drift_is_rescued(settings: Settings, write_batch: Callable[..., Path]) -> None:
    write_batch("orders-1.json", [order(1, coupon="SPRING", channel="app"), order(2)])
    run_backfill(settings, progress=False)
    bronze = Lake(settings.lake_dir).tables.read_pandas("bronze_orders").sort_values("order_id")
    assert json.loads(bronze["_rescued"].iloc[0]) == {"channel": "app", "coupon": "SPRING"}
    assert bronze["_rescued"].isna().iloc[1]
    assert ledger(settings)["rows_rescued"].tolist() == [1]
    assert Lake(settings.lake_dir).queries.count("silver_orders") == 2


def _batches() -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        ("products-1.json", [product(1, price=10.0), product(2, price=5.0)]),
        (
            "products-2.json",
            [
                product(1, price=12.0, updated="2026-01-03T00:00:00"),
                product(3, price=-1),
                *[product(i, price=1.5 * i) for i in range(10, 22)],
            ],
        ),
        ("orders-1.json", [order(1), order(2, pids=[1, 2]), order(3, status="cancelled")]),
        (
            "orders-2.json",
            [
                order(1, status="shipped", updated="2026-01-04T00:00:00"),
                order(2, pids=[2], created="2026-01-03T00:00:00", updated="2026-01-05T00:00:00"),
                order(4, total=None),
            ],
        ),
        # A tie on updated_at between two different versions: the larger row hash wins.
        (
            "orders-3.json",
            [
                order(5, status="confirmed", updated="2026-01-06T00:00:00"),
                order(1, status="pending", updated="2026-01-03T00:00:00"),
            ],
        ),
        (
            "orders-4.json",
            [
                order(5, status="delivered", updated="2026-01-06T00:00:00"),
                order(6, created="2025-12-30T10:00:00", pids=[9, 1]),
            ],
        ),
    ]


def _run(settings: Settings, order: list[int], *, together: bool) -> dict[str, pd.DataFrame]:
    batches = _batches()
    folder = settings.landing_dir
    pipeline = Pipeline(settings)
    paths = []
    for n, i in enumerate(order):
        name, records = batches[i]
        path = folder / f"{n:03d}-{name}"
        path = folder / (name if n == order.index(i) else f"{name.split('.')[0]}-copy{n}.json")
        path.write_text(json.dumps(records))
        paths.append(path)
        if not together:
            pipeline.process([path])
    if together:
        pipeline.process(paths)
    return snapshot(settings.lake_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("reference")
    (root / "landing").mkdir()
    s = Settings(landing_dir=root / "landing", lake_dir=root / "lake")
    return _run(s, list(range(len(_batches()))), together=False)


BOOKKEEPING = (
    "bronze_products",
    "bronze_orders",
    "rejected_rows",
    "quality_validations",
    "quarantine_records",
)
LEDGER_FACTS = ["file_name", "entity", "outcome", "reason", "rows_in", "rows_merged",
                "rows_rejected", "rows_rescued"]


@pytest.mark.parametrize("bronze_alongside", [False, True])
@pytest.mark.parametrize(
    "crash_before", ["rejected_rows", "quality_validations", "silver_orders", "ledger"]
)
def test_a_crash_between_bookkeeping_appends_doubles_no_row(
    settings: Settings,
    write_batch: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    crash_before: str,
    bronze_alongside: bool,
) -> None:
    """Rows appended before a crash are found by their arrival id and not appended again,
    whether bronze is appended after gold (small micro-batches) or while silver merges; the
    clean run takes the other path, so both give the same tables."""
    write_batch("products-1.json", [product(1), product(2)])
    write_batch("orders-1.json", [order(1), order(2, total=-5.0), order(3, status="lost")])
    write_batch("orders-2.json", [order(4), order(5, total=None), order(6, total=None)])
    clean_settings = Settings(
        landing_dir=settings.landing_dir.parent / "clean-landing",
        lake_dir=settings.lake_dir.parent / "clean-lake",
    )
    shutil.copytree(settings.landing_dir, clean_settings.landing_dir)
    monkeypatch.setattr(microbatch, "BRONZE_ALONGSIDE_ROWS", 10**9 if bronze_alongside else 0)
    run_backfill(clean_settings, progress=False)
    monkeypatch.setattr(microbatch, "BRONZE_ALONGSIDE_ROWS", 0 if bronze_alongside else 10**9)

    # Fail the chosen commit (an append, or the orders merge) as a crash would interrupt it.
    method = "merge_upsert" if crash_before == "silver_orders" else "append"
    original = getattr(Tables, method)

    def crash(self: Tables, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == crash_before:
            raise OSError("simulated crash")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(Tables, method, crash)
    with pytest.raises(OSError, match="simulated crash"):  # a crash: no retry in-process
        run_backfill(settings.replace(backfill_retries=0), progress=False)
    assert Lake(settings.lake_dir).markers.exists("inflight")  # the crashed micro-batch is known
    monkeypatch.setattr(Tables, method, original)
    run_backfill(settings, progress=False)

    assert not list(settings.landing_dir.iterdir())
    tables = [*COMPARED, *BOOKKEEPING]
    expected = snapshot(clean_settings.lake_dir, tables)
    assert_same_tables(snapshot(settings.lake_dir, tables), expected)
    facts = [
        ledger(s)[LEDGER_FACTS].sort_values("file_name").reset_index(drop=True)
        for s in (settings, clean_settings)
    ]
    pd.testing.assert_frame_equal(facts[0], facts[1])


@hsettings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_order_and_repetition_do_not_matter(
    tmp_path_factory: pytest.TempPathFactory,
    reference: dict[str, pd.DataFrame],
    data: st.DataObject,
) -> None:
    n = len(_batches())
    order_ = data.draw(st.permutations(range(n)))
    repeats = data.draw(st.lists(st.integers(0, n - 1), max_size=3))
    together = data.draw(st.booleans())
    root = tmp_path_factory.mktemp("perm")
    (root / "landing").mkdir()
    s = Settings(landing_dir=root / "landing", lake_dir=root / "lake")
    got = _run(s, [*order_, *repeats], together=together)
    assert_same_tables(got, reference)
    shutil.rmtree(root)


def test_rebuild_from_raw_gives_identical_tables(
    settings: Settings, write_batch: Callable[..., Path], tmp_path: Path
) -> None:
    for name, records in _batches():
        write_batch(name, records)
    live = run_backfill(settings, progress=False)
    summary = rebuild(settings, tmp_path / "rebuilt")
    assert summary.outcomes == live.outcomes == {"merged": 5, "quarantined": 1}
    assert_same_tables(snapshot(tmp_path / "rebuilt"), snapshot(settings.lake_dir))
    bronze = ["bronze_orders", "bronze_products", "rejected_rows"]
    assert_same_tables(snapshot(settings.lake_dir, bronze), snapshot(tmp_path / "rebuilt", bronze))


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@hsettings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.lists(
            st.none()
            | st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False),
            max_size=8,
        ),
        st.lists(st.none() | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3), max_size=8),
        st.lists(_json_values, max_size=8),
    )
)
def test_bronze_text_column_equals_value_by_value(values: list[Any]) -> None:
    """The column-at-once fast paths give the same text as converting each value."""
    from ecom_stream.transform.bookkeeping import _loose, loose_column

    got = loose_column(pd.Series(values, dtype=object)).to_pylist()
    assert got == [_loose(v) for v in values]


def test_partial_raw_copies_never_stay_in_raw(
    settings: Settings, write_batch: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from ecom_stream.errors import LakeError
    from ecom_stream.storage import blobs as lake_module

    real_open = open

    class FullDisk:
        """A file object that writes a few bytes, then finds the disk full."""

        def __init__(self, path: Path, mode: str) -> None:
            self.fh = real_open(path, mode)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def write(self, data: bytes) -> int:
            self.fh.write(data[:3])
            raise OSError(errno.ENOSPC, "No space left on device")

    write_batch("orders-1.json", [order(1)])
    monkeypatch.setattr(lake_module, "open", FullDisk, raising=False)
    with pytest.raises(LakeError, match="No space left on device"):
        run_backfill(settings.replace(backfill_retries=0), progress=False)
    monkeypatch.undo()
    raw = settings.lake_dir / "raw"
    assert [p for p in raw.rglob("*") if p.is_file()] == []  # no partial copy left
    assert (settings.landing_dir / "orders-1.json").exists()

    # A writer killed mid-write (another process) leaves its temporary file: the next writer
    # removes it at start-up, and only files of that naming pattern. Raw files are written
    # in raw/.tmp; the batch folders of a lake written before that are swept once.
    folder = raw / "ab" / ("ab" + "0" * 62)
    folder.mkdir(parents=True)
    legacy = folder / ".orders-9.json.4194301.tmp"
    legacy.write_bytes(b"[{")
    kept = folder / "orders-9.json"
    kept.write_bytes(b"[]")
    stale = raw / ".tmp" / ".ab0000-orders-7.json.4194301.tmp"
    stale.write_bytes(b"[{")
    (settings.lake_dir / "quarantine").mkdir(exist_ok=True)
    stale_reason = settings.lake_dir / "quarantine" / ".orders-8.json.reason.json.4194301.tmp"
    stale_reason.write_bytes(b"{")
    (settings.lake_dir / "_daemon" / "raw-temp-files-swept").unlink()  # an older lake
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"merged": 1}
    assert not stale.exists() and not stale_reason.exists() and not legacy.exists()
    assert kept.exists() and (settings.lake_dir / "_daemon" / "raw-temp-files-swept").exists()
    assert [p.name for p in (raw / ".tmp").iterdir()] == []

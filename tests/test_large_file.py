"""A file of more rows than a micro-batch holds is merged in pieces: bounded memory, the
same tables as merging it whole, one ledger row, and a crash between pieces doubles nothing."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import COMPARED_TABLES, assert_same_tables, snapshot
from test_pipeline import order, product

from ecom_stream.config import Settings
from ecom_stream.engine import intake
from ecom_stream.engine.backfill import run_backfill
from ecom_stream.engine.pieces import PieceMerge
from ecom_stream.engine.pipeline import Pipeline
from ecom_stream.sources import landed
from ecom_stream.sources.landed import LandedFile, LargeFile
from ecom_stream.storage.lake import Lake
from ecom_stream.storage.tables import Tables
from ecom_stream.transform import cuts
from ecom_stream.transform.parse import array_chunks, line_chunks

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


def raw_copy(s: Settings, name: str) -> tuple[bytes, dict[str, Any]]:
    """The raw copy of ``name`` and its metadata (without the time it was received)."""
    found = [(p, m) for p, m in Lake(s.lake_dir).blobs.raw_batches() if m["name"] == name]
    assert len(found) == 1, found
    path, meta = found[0]
    return path.read_bytes(), {k: v for k, v in meta.items() if k != "received_at"}


def batch_id(s: Settings, name: str) -> str:
    ledger = Lake(s.lake_dir).tables.read_pandas("ledger")
    return str(ledger.set_index("file_name").loc[name, "batch_id"])


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
    # Read by streaming, kept the same: the same raw copy, the same batch id (its SHA-256).
    (raw_p, meta_p), (raw_w, meta_w) = raw_copy(pieces, big_name), raw_copy(whole, big_name)
    assert raw_p == raw_w and meta_p == meta_w
    assert batch_id(pieces, big_name) == batch_id(whole, big_name)
    assert batch_id(whole, big_name) == hashlib.sha256(raw_w).hexdigest()


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
    data = path.read_bytes()
    run_backfill(s, progress=False)
    lake = Lake(s.lake_dir)
    # Kept whole in quarantine (linked or copied from landing, never read whole) and in raw/.
    assert [q.read_bytes() for q in lake.blobs.quarantined_files()] == [data]
    assert raw_copy(s, big_name)[0] == data
    row = lake.tables.read_pandas("ledger").iloc[0]
    assert row["outcome"] == "quarantined"
    assert f"line {201 if big_name.endswith('jsonl') else 202}" in row["reason"]
    assert lake.tables.read("bronze_orders").num_rows == 0
    assert lake.tables.read("silver_orders").num_rows == 0




@pytest.mark.parametrize("big_name", ["orders-1.jsonl", "orders-1.json"])
def test_a_large_file_is_read_piece_by_piece_never_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big_name: str
) -> None:
    """Hashed and scanned in blocks, each piece read when it is parsed (in both passes):
    never one read of more than a piece, never ``read_bytes``; the tables of the whole file."""
    big = big_orders()
    whole = run(tmp_path, "whole", 60_000, big, big_name)
    reads: list[int] = []
    read = LandedFile.read

    def counted(self: LandedFile, offset: int, length: int) -> bytes:
        reads.append(length)
        return read(self, offset, length)

    read_bytes = intake.read_bytes

    def not_whole(path: Path, max_bytes: int) -> bytes:
        assert path.name != big_name, "the large file was read whole"
        return read_bytes(path, max_bytes)

    monkeypatch.setattr(LandedFile, "read", counted)
    monkeypatch.setattr(intake, "read_bytes", not_whole)
    monkeypatch.setattr(cuts, "_SCAN_BLOCK", 4096)
    monkeypatch.setattr(landed, "_HASH_BLOCK", 4096)
    pieces = run(tmp_path, "pieces", 50, big, big_name)
    tables = [*COMPARED_TABLES, *BOOKKEEPING]
    assert_same_tables(snapshot(pieces.lake_dir, tables), snapshot(whole.lake_dir, tables))
    pd.testing.assert_frame_equal(facts(pieces)[0], facts(whole)[0])
    data, _ = raw_copy(pieces, big_name)
    chunks = line_chunks if big_name.endswith("jsonl") else array_chunks
    sizes = [end - start for start, end, _ in chunks(data, 50) or []]
    assert len(sizes) == 5 and 4096 < max(sizes) < len(data) / 3
    assert max(reads) <= max(sizes)
    seen = Counter(reads)
    assert all(seen[n] >= 2 for n in sizes)  # every piece read in pass 1 and in pass 2


def test_taking_a_large_file_holds_a_small_share_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its digest, raw copy and cut points: a Python heap peak far below the file's size."""
    s = Settings(landing_dir=tmp_path / "landing", lake_dir=tmp_path / "lake",
                 microbatch_max_rows=500)
    s.landing_dir.mkdir()
    lines(s.landing_dir, "orders-0.json", [order(i) for i in range(1, 2_001)])
    lines(s.landing_dir, "orders-1.json", [order(i) for i in range(1, 40_001)])
    path = s.landing_dir / "orders-1.json"
    size = path.stat().st_size
    monkeypatch.setattr(cuts, "_SCAN_BLOCK", 64 * 1024)
    monkeypatch.setattr(landed, "_HASH_BLOCK", 64 * 1024)
    pipeline = Pipeline(s)
    assert pipeline.validator is not None  # built on a side thread: not measured
    first = pipeline.intake.take(s.landing_dir / "orders-0.json", set())  # lazy imports
    assert isinstance(first, LargeFile) and first.landed is not None
    first.landed.close()
    tracemalloc.start()
    try:
        item = pipeline.intake.take(path, set())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(item, LargeFile) and item.data is None and len(item.pieces) == 80
    assert item.landed is not None
    item.landed.close()
    assert size > 8_000_000 and peak < size / 8, (size, peak)
    assert raw_copy(s, "orders-1.json")[0] == path.read_bytes()


def rewrite_in_place(path: Path) -> bytes:
    """Change a file's rows without changing its size or inode (as a producer writing into
    it would); its mtime moves on, as a write a moment later would move it."""
    st = path.stat()
    new = path.read_bytes().replace(b'"Chicago"', b'"Boston!"')
    with open(path, "r+b") as fh:
        fh.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    return new


@pytest.mark.parametrize("when", ["after its digest", "in pass 1"])
def test_a_file_changed_while_being_read_is_read_again_not_mixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    big_name = "orders-1.json"
    s = Settings(landing_dir=tmp_path / "landing", lake_dir=tmp_path / "lake",
                 microbatch_max_rows=50, retry_backoff_seconds=0.01)
    fill(s.landing_dir, big_orders(), big_name)
    old = (s.landing_dir / big_name).read_bytes()
    changed: list[bytes] = []

    def change_once() -> None:
        if not changed:
            changed.append(rewrite_in_place(s.landing_dir / big_name))

    if when == "after its digest":
        digest = LandedFile.digest

        def digest_then_change(self: LandedFile, suffix: bytes = b"") -> str:
            found = digest(self, suffix)
            change_once()
            return found

        monkeypatch.setattr(LandedFile, "digest", digest_then_change)
    else:
        frames = PieceMerge._piece_frames

        def change_then_frames(self: PieceMerge, g: Any, k: int, offset: int) -> Any:
            change_once()
            return frames(self, g, k, offset)

        monkeypatch.setattr(PieceMerge, "_piece_frames", change_then_frames)
    run_backfill(s, progress=False)
    assert changed
    # Merged once, as the new bytes: the tables of a whole read of them, no raw copy of the old.
    expect = Settings(landing_dir=tmp_path / "expect-landing", lake_dir=tmp_path / "expect-lake")
    fill(expect.landing_dir, big_orders(), big_name)
    (expect.landing_dir / big_name).write_bytes(changed[0])
    run_backfill(expect, progress=False)
    tables = [*COMPARED_TABLES, *BOOKKEEPING]
    assert_same_tables(snapshot(s.lake_dir, tables), snapshot(expect.lake_dir, tables))
    pd.testing.assert_frame_equal(facts(s)[0], facts(expect)[0])
    assert batch_id(s, big_name) == hashlib.sha256(changed[0]).hexdigest()
    assert raw_copy(s, big_name)[0] == changed[0] != old


def test_a_large_file_quarantined_for_its_name_is_kept_as_a_whole_read_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashed with its name and copied by streaming: the batch id, raw copy, quarantined copy
    and ledger row of a whole read."""
    name = "stuff.json"
    runs = {}
    read_bytes = intake.read_bytes

    def not_whole(path: Path, max_bytes: int) -> bytes:
        assert path.name != name, "the large file was read whole"
        return read_bytes(path, max_bytes)

    for label, max_rows in (("whole", 60_000), ("streamed", 50)):
        s = Settings(landing_dir=tmp_path / f"{label}-landing",
                     lake_dir=tmp_path / f"{label}-lake", microbatch_max_rows=max_rows)
        s.landing_dir.mkdir()
        lines(s.landing_dir, name, big_orders())
        data = (s.landing_dir / name).read_bytes()
        if label == "streamed":
            monkeypatch.setattr(intake, "read_bytes", not_whole)
        run_backfill(s, progress=False)
        lake = Lake(s.lake_dir)
        assert [q.read_bytes() for q in lake.blobs.quarantined_files()] == [data]
        runs[label] = (facts(s)[0], batch_id(s, name), raw_copy(s, name))
    pd.testing.assert_frame_equal(runs["streamed"][0], runs["whole"][0])
    assert runs["streamed"][1:] == runs["whole"][1:]
    assert runs["whole"][0].loc[0, "outcome"] == "quarantined"
    assert runs["whole"][1] == hashlib.sha256(data + b"\0" + name.encode()).hexdigest()

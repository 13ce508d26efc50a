"""How a file enters: odd files and names end in an outcome, every quarantined file can be
listed and requeued, and a file quarantined for its name can come back under a fixed one."""

from __future__ import annotations

from ecom_stream.backfill import run_backfill
from ecom_stream.config import Settings
from ecom_stream.lake import Lake
from ecom_stream.requeue import requeue
from ecom_stream.status import quarantine_list


def listed(settings: Settings) -> dict[str, str]:
    """Quarantined files as listed by ``ecom-stream quarantine``: original name -> reason."""
    return {q["original_name"]: q["reason"] for q in quarantine_list(Lake(settings.lake_dir))}


def outcomes(settings: Settings) -> list[tuple[str, str]]:
    ledger = Lake(settings.lake_dir).read_pandas("ledger").sort_values("finished_at", kind="stable")
    return list(zip(ledger["file_name"], ledger["outcome"], strict=True))


def test_an_empty_file_is_kept_listed_and_requeueable(settings: Settings) -> None:
    (settings.landing_dir / "orders-zero.json").write_bytes(b"")
    (settings.landing_dir / "_orders-1.json").write_text("[]")  # unknown entity, name with "_"
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"quarantined": 2}
    assert listed(settings)["orders-zero.json"] == "empty file (0 bytes)"
    assert "unknown entity" in listed(settings)["_orders-1.json"]
    stored = settings.lake_dir / "quarantine" / "orders-zero.json"
    assert stored.is_file() and stored.read_bytes() == b""
    moved = requeue(settings, ["orders-zero.json", "_orders-1.json"])
    assert sorted(dst.name for _, dst in moved) == ["_orders-1.json", "orders-zero.json"]
    assert (settings.landing_dir / "orders-zero.json").read_bytes() == b""
    assert listed(settings) == {}

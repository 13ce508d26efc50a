"""How a file enters: odd files and names end in an outcome, every quarantined file can be
listed and requeued, and a file quarantined for its name can come back under a fixed one."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from test_pipeline import order

from ecom_stream.cli.main import main
from ecom_stream.config import Settings
from ecom_stream.engine.backfill import run_backfill
from ecom_stream.engine.requeue import requeue
from ecom_stream.logs import JsonFormatter
from ecom_stream.service.status import quarantine_list
from ecom_stream.storage.lake import Lake


def listed(settings: Settings) -> dict[str, str]:
    """Quarantined files as listed by ``ecom-stream quarantine``: original name -> reason."""
    return {q["original_name"]: q["reason"] for q in quarantine_list(Lake(settings.lake_dir))}


def outcomes(settings: Settings) -> list[tuple[str, str]]:
    ledger = Lake(settings.lake_dir).tables.read_pandas("ledger")
    ledger = ledger.sort_values("finished_at", kind="stable")
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


def test_odd_names_are_quarantined_and_never_stop_the_others(
    settings: Settings,
    write_batch: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    land = settings.landing_dir
    long_name = "orders-" + "a" * 242 + ".json"  # 254 bytes: fits landing, not the lake's suffixes
    write_batch(long_name, [order(1)])
    not_utf8 = os.fsdecode(b"orders-\xff.json")
    write_batch(not_utf8, [order(2)])
    newline = "orders-2\nINFO forged.json"
    write_batch(newline, [order(3)])
    write_batch("orders-9.json", [order(9)])
    with caplog.at_level(logging.INFO, logger="ecom_stream"):
        summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"quarantined": 3, "merged": 1}
    assert Lake(settings.lake_dir).tables.read_pandas("silver_orders")["order_id"].tolist() == [9]
    assert list(land.iterdir()) == []
    reasons = listed(settings)
    assert "254 bytes long" in reasons[long_name]
    assert "not UTF-8" in reasons["orders-\\xff.json"]
    assert "control character" in reasons["orders-2\\nINFO forged.json"]
    for stored in Lake(settings.lake_dir).blobs.quarantined_files():
        assert len(os.fsencode(stored.name)) <= 200 and stored.name.isprintable()
        stored.name.encode("utf-8")  # a safe stored name: valid UTF-8
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch ")]
    assert len(lines) == 4 and not any("\n" in line for line in lines)
    assert any("orders-2\\nINFO forged.json: quarantined" in line for line in lines)
    record = logging.LogRecord("ecom_stream", logging.INFO, "", 0, lines[0], None, None)
    assert "\n" not in JsonFormatter().format(record)
    # requeue puts each file back under its exact name (and prints each on one line).
    capsys.readouterr()
    assert main(["--lake", str(settings.lake_dir), "--landing", str(land), "requeue", "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert sorted(os.fsencode(p.name) for p in land.iterdir()) == sorted(
        os.fsencode(n) for n in (long_name, not_utf8, newline)
    )
    # ...and, processed again, they are quarantined again (their name is still wrong).
    assert run_backfill(settings, progress=False).outcomes == {"quarantined": 3}


def jsonl(*records: dict[str, object]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_a_file_quarantined_for_its_name_comes_back_under_a_fixed_one(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    land = settings.landing_dir
    data = jsonl(order(1), order(2))
    (land / "orders-x.txt").write_bytes(data)
    assert run_backfill(settings, progress=False).outcomes == {"quarantined": 1}
    reason = json.loads((settings.lake_dir / "quarantine" / "orders-x.txt.reason.json").read_text())
    assert "unsupported extension" in reason["reason"] and "--as NEW" in reason["fix"]
    # The hint is true: the same bytes under a fixed name are merged, not a duplicate...
    (land / "orders-x.jsonl").write_bytes(data)
    assert run_backfill(settings, progress=False).outcomes == {"merged": 1}
    orders = Lake(settings.lake_dir).tables.read_pandas("silver_orders")
    assert sorted(orders["order_id"]) == [1, 2]
    # ...while the same good bytes again are still a duplicate,
    (land / "orders-y.jsonl").write_bytes(data)
    assert run_backfill(settings, progress=False).outcomes == {"duplicate": 1}
    # and so is a file quarantined for its content, whatever its name.
    (land / "orders-bad.json").write_text('[{"order_id": 3,]')
    assert run_backfill(settings, progress=False).outcomes == {"quarantined": 1}
    (land / "orders-bad-again.json").write_text('[{"order_id": 3,]')
    assert run_backfill(settings, progress=False).outcomes == {"duplicate": 1}

    # requeue OLD --as NEW, through the command line.
    (land / "orders-z.csv").write_bytes(jsonl(order(4)))
    run_backfill(settings, progress=False)
    base = ["--lake", str(settings.lake_dir), "--landing", str(land)]
    assert main([*base, "requeue", "orders-z.csv", "--as", "orders-z.txt"]) == 1
    assert "unsupported extension" in capsys.readouterr().err
    assert main([*base, "requeue", "orders-z.csv", "orders-bad.json", "--as", "o.json"]) == 2
    assert main([*base, "requeue", "--all", "--as", "orders-z.jsonl"]) == 2
    capsys.readouterr()
    assert main([*base, "requeue", "orders-z.csv", "--as", "orders-z.jsonl"]) == 0
    assert "orders-z.jsonl" in capsys.readouterr().out
    assert (land / "orders-z.jsonl").exists() and "orders-z.csv" not in listed(settings)
    assert run_backfill(settings, progress=False).outcomes == {"merged": 1}
    orders = Lake(settings.lake_dir).tables.read_pandas("silver_orders")
    assert sorted(orders["order_id"]) == [1, 2, 4]


def deny_reading(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The process may not read ``name`` (tests run as root, which reads anything)."""
    from ecom_stream.sources import files as read_module

    real_open = open

    def guarded(path: object, *args: object, **kwargs: object) -> object:
        if Path(str(path)).name == name:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(read_module, "open", guarded, raising=False)


def test_unread_files_are_moved_whole_into_quarantine(
    settings: Settings, write_batch: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    land = settings.landing_dir
    small = settings.replace(max_file_bytes=2_000)
    big = write_batch("orders-big.json", [order(i) for i in range(1, 40)])
    big_bytes = big.read_bytes()
    assert len(big_bytes) > 2_000
    os.mkfifo(land / "orders-pipe.json")  # must never be opened (that would block)
    locked = write_batch("orders-locked.json", [order(50)])
    locked_bytes = locked.read_bytes()
    deny_reading(monkeypatch, "orders-locked.json")
    write_batch("orders-ok.json", [order(60)])
    summary = run_backfill(small, progress=False)
    assert summary.outcomes == {"quarantined": 3, "merged": 1}
    assert list(land.iterdir()) == []
    q = settings.lake_dir / "quarantine"
    assert (q / "orders-big.json").read_bytes() == big_bytes
    assert (q / "orders-locked.json").read_bytes() == locked_bytes
    assert stat.S_ISFIFO(os.lstat(q / "orders-pipe.json").st_mode)
    reasons = listed(settings)
    assert "larger than the limit" in reasons["orders-big.json"]
    assert "Permission denied" in reasons["orders-locked.json"]
    assert "not a regular file" in reasons["orders-pipe.json"]
    fixes = {
        n: json.loads((q / f"{n}.reason.json").read_text())["fix"]
        for n in ("orders-big.json", "orders-pipe.json")
    }
    assert "requeue NAME" in fixes["orders-big.json"]
    assert "regular file" in fixes["orders-pipe.json"]

    # The causes are outside the bytes: once fixed, requeue brings them back and they merge.
    monkeypatch.undo()
    requeue(settings, ["orders-big.json", "orders-locked.json", "orders-pipe.json"])
    assert sorted(p.name for p in land.iterdir()) == [
        "orders-big.json", "orders-locked.json", "orders-pipe.json"
    ]
    summary = run_backfill(settings, progress=False)
    assert summary.outcomes == {"merged": 2, "quarantined": 1}  # the pipe is still a pipe
    ids = Lake(settings.lake_dir).tables.read_pandas("silver_orders")["order_id"]
    assert sorted(ids) == [*range(1, 40), 50, 60]


def test_a_file_that_cannot_be_moved_stays_in_landing_and_is_listed(
    settings: Settings, write_batch: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import shutil

    locked = write_batch("orders-locked.json", [order(1)])
    deny_reading(monkeypatch, "orders-locked.json")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    # No hard link, no copy (it cannot be read): a rename still moves it whole.
    monkeypatch.setattr(os, "link", refuse)
    monkeypatch.setattr(shutil, "copyfile", refuse)
    assert run_backfill(settings, progress=False).outcomes == {"quarantined": 1}
    assert not locked.exists()
    stored = settings.lake_dir / "quarantine" / "orders-locked.json"
    assert stored.read_bytes() == json.dumps([order(1)]).encode()

    # Another disk, and no rename either: it stays where it is, listed with its reason,
    # and later passes leave it alone instead of recording it again.
    second = write_batch("orders-locked2.json", [order(2)])
    deny_reading(monkeypatch, "orders-locked2.json")
    monkeypatch.setattr(os, "rename", refuse)
    assert run_backfill(settings, progress=False).outcomes == {"quarantined": 1}
    assert second.exists()
    assert "Permission denied" in listed(settings)["orders-locked2.json"]
    assert run_backfill(settings, progress=False).outcomes == {}
    assert second.exists()
    assert [o for _, o in outcomes(settings)] == ["quarantined", "quarantined"]

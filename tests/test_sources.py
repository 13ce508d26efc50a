"""The landing folder as a source, with a real watchdog observer on a tmp_path folder."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecom_stream.errors import ConfigError
from ecom_stream.sources.landing import OVERFLOW_LOGGER, LandingSource, backlog

QUIET = 0.3


def take(source: LandingSource, count: int, timeout: float = 30) -> list[str]:
    """Names handed out by the source until ``count`` of them came (fails after ``timeout``)."""
    names: list[str] = []
    deadline = time.monotonic() + timeout
    while len(names) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"only {names} after {timeout:.0f} s, wanted {count} file(s)")
        names += [p.name for p, _ in source.take_ready(100)]
        source.wait(0.2)
    return names


def quiet_for(source: LandingSource, seconds: float) -> list[str]:
    """Names handed out during ``seconds`` (expected: none)."""
    names: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        names += [p.name for p, _ in source.take_ready(100)]
        source.wait(0.1)
    return names


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


@pytest.fixture
def started(landing: Path) -> Iterator[LandingSource]:
    source = LandingSource(landing, quiet_seconds=QUIET, rescan_seconds=3600)
    source.prepare()
    source.start()
    yield source
    source.stop()


def test_a_rename_in_is_handed_out_and_temporary_names_never(
    landing: Path, started: LandingSource
) -> None:
    for name in (".orders_1.json", "orders_2.json.tmp", "orders_3.json.part"):
        (landing / name).write_text("[")
    os.replace(landing / "orders_3.json.part", landing / "orders_3.json")
    assert take(started, 1) == ["orders_3.json"]
    assert quiet_for(started, QUIET * 3) == []
    assert started.pending_count() == 0
    assert started.waiting_count() == 1  # handed out, still in the folder until merged
    assert started.still_waiting(landing / "orders_3.json")
    (landing / "orders_3.json").unlink()
    assert not started.still_waiting(landing / "orders_3.json")


def test_a_file_written_in_place_waits_until_its_writer_is_done(
    landing: Path, started: LandingSource
) -> None:
    with open(landing / "orders_1.json", "w") as fh:
        fh.write("[")
        fh.flush()
        assert quiet_for(started, QUIET * 3) == []  # quiet, but still open for writing
        assert started.pending_count() == 1
        fh.write("]")
    assert take(started, 1) == ["orders_1.json"]


def test_files_there_before_the_start_come_products_first(landing: Path) -> None:
    for name in ("orders_1.json", "products_2.json", "orders_0.json"):
        (landing / name).write_text("[]")
    (landing / "sub").mkdir()
    source = LandingSource(landing, quiet_seconds=0.0, rescan_seconds=3600)
    source.start()
    try:
        assert source.pending_count() == 3
        assert take(source, 3) == ["products_2.json", "orders_0.json", "orders_1.json"]
    finally:
        source.stop()


def test_the_periodic_rescan_and_an_overflow_find_files_without_events(
    landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecom_stream.sources import landing as landing_module

    monkeypatch.setattr(landing_module._LandingHandler, "on_any_event", lambda self, e: None)
    source = LandingSource(landing, quiet_seconds=0.0, rescan_seconds=3600)
    source.start()
    try:
        (landing / "orders_lost.json").write_text("[]")
        assert quiet_for(source, QUIET * 2) == []
        logging.getLogger(OVERFLOW_LOGGER).warning("Inotify queue overflowed; events were lost")
        assert take(source, 1) == ["orders_lost.json"]
    finally:
        source.stop()
    assert logging.getLogger(OVERFLOW_LOGGER).handlers == []

    periodic = LandingSource(landing, quiet_seconds=0.0, rescan_seconds=0.5)
    periodic.start()
    try:
        assert take(periodic, 1) == ["orders_lost.json"]  # the start's own scan
        (landing / "orders_lost.json").unlink()  # as a merge would
        (landing / "orders_later.json").write_text("[]")
        assert take(periodic, 1) == ["orders_later.json"]
    finally:
        periodic.stop()


def test_a_replaced_or_removed_folder_is_followed(
    tmp_path: Path, landing: Path, started: LandingSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ecom_stream.sources.landing")
    landing.rename(tmp_path / "landing.old")
    landing.mkdir()
    started.follow()
    (landing / "orders_new.json").write_text("[]")
    (tmp_path / "landing.old" / "orders_old.json").write_text("[]")
    assert take(started, 1) == ["orders_new.json"]
    assert quiet_for(started, QUIET * 2) == []  # the old folder is no longer watched
    assert "was replaced" in caplog.text

    shutil.rmtree(landing)
    for _ in range(3):
        started.follow()
    assert caplog.text.count("is gone") == 1
    landing.mkdir()
    (landing / "orders_back.json").write_text("[]")
    started.follow()
    assert take(started, 1) == ["orders_back.json"]
    assert "is back" in caplog.text


def test_create_makes_the_folder_and_remakes_it(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    with pytest.raises(ConfigError, match="does not exist: check --landing, or pass --create"):
        LandingSource(missing, quiet_seconds=QUIET, rescan_seconds=3600).prepare()
    assert not missing.exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not a folder"):
        LandingSource(tmp_path / "file", quiet_seconds=0, rescan_seconds=1, create=True).prepare()

    source = LandingSource(missing, quiet_seconds=QUIET, rescan_seconds=3600, create=True)
    source.prepare()
    assert missing.is_dir()
    source.start()
    try:
        shutil.rmtree(missing)
        source.follow()
        assert missing.is_dir()
        os.replace(tmp_path / "file", missing / "orders_1.json")
        assert take(source, 1) == ["orders_1.json"]
    finally:
        source.stop()


def test_backlog_lists_batch_files_in_name_order(landing: Path) -> None:
    for name in ("orders_2.json", "orders_1.json", ".orders_3.json", "orders_4.json.part"):
        (landing / name).write_text("[]")
    (landing / "folder").mkdir()
    (landing / "link.json").symlink_to(landing / "orders_1.json")
    assert [p.name for p in backlog(landing)] == ["link.json", "orders_1.json", "orders_2.json"]
    assert backlog(landing / "missing") == []

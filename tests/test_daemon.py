"""The watcher daemon: readiness rules and retries in-process, then real daemon processes.

The in-process tests fake only the pipeline (the seam ``Daemon(pipeline_factory=...)``) and use
a real landing folder and a real observer. The ``slow`` tests run ``python -m ecom_stream watch``
as a subprocess on a tmp_path lake and check effects in the ledger and the tables, with
generous timeouts (process start-up imports Great Expectations: 5-8 s); nothing asserts speed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import REPO, assert_same_tables, run_cli, snapshot

from ecom_stream.config import Settings
from ecom_stream.service.daemon import Daemon
from ecom_stream.service.status import heartbeat
from ecom_stream.sources.landing import OVERFLOW_LOGGER
from ecom_stream.sources.ready import ReadyQueue, writers_open
from ecom_stream.storage.lake import Lake
from ecom_stream.transform.bookkeeping import FileOutcome

QUIET = 0.3  # seconds; short so the tests are quick, long enough for a slow CI box


# -- helpers -------------------------------------------------------------------------------
def wait_until(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    """Poll ``check`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def drop(src: Path, landing: Path) -> Path:
    """Deliver a file the recommended way: write a temporary name in landing, then rename."""
    tmp = landing / f".{src.name}.part"
    shutil.copyfile(src, tmp)
    target = landing / src.name
    os.replace(tmp, target)
    return target


def generate_files(
    folder: Path, *, batches: int, orders: int, seed: int, products: int = 60
) -> list[Path]:
    """Batch files from the simulated source: product files first, then orders, in name order."""
    from ecom_stream.tools.generate import GenerateOptions, generate

    paths = generate(GenerateOptions(out=folder, batches=batches, orders_per_batch=orders,
                                     products=products, product_batches=1, seed=seed))
    return sorted(paths, key=lambda p: (not p.name.startswith("products"), p.name))


# -- in-process: readiness rules -----------------------------------------------------------
def test_writers_open_sees_a_writer_until_it_closes(tmp_path: Path) -> None:
    path = tmp_path / "orders_1.json"
    with open(path, "w") as fh:
        fh.write("[")
        assert writers_open(path) in (True, None)  # None: no lease support here
        supported = writers_open(path) is not None
    assert writers_open(path) is (False if supported else None)


def test_ready_queue_waits_for_quiet_and_closed_writers(tmp_path: Path) -> None:
    queue = ReadyQueue(quiet_seconds=QUIET)
    done, slow = tmp_path / "orders_1.json", tmp_path / "orders_2.json"
    done.write_text("[]")
    queue.offer(done, "complete")
    assert [p for p, _ in queue.take_ready(10)] == [done]  # close/rename: no delay

    writer = open(slow, "w")  # noqa: SIM115 - kept open on purpose
    writer.write("[")
    writer.flush()
    queue.offer(slow, "changed")
    assert queue.take_ready(10) == []  # changed just now
    time.sleep(QUIET * 1.5)
    if writers_open(slow) is not None:
        assert queue.take_ready(10) == []  # quiet, but still open for writing
    writer.write("]")
    writer.close()
    queue.offer(slow, "changed")
    time.sleep(QUIET * 1.5)
    assert [p for p, _ in queue.take_ready(10)] == [slow]
    assert len(queue) == 0


def test_ready_queue_drops_vanished_files_and_keeps_order(tmp_path: Path) -> None:
    queue = ReadyQueue(quiet_seconds=0.0)
    paths = [tmp_path / f"orders_{i}.json" for i in (3, 1, 2)]
    for p in paths:
        p.write_text("[]")
        queue.offer(p, "seen")
    paths[0].unlink()
    queue.offer(paths[1], "seen")  # a rescan does not reorder or duplicate
    assert [p for p, _ in queue.take_ready(1)] == [paths[1]]
    assert [p for p, _ in queue.take_ready(10)] == [paths[2]]
    assert len(queue) == 0


# -- in-process: the daemon with a fake pipeline -------------------------------------------
class FakePipeline:
    """Stands in for ``Pipeline``: records calls, fails on demand, deletes what it "merges"."""

    lake = None

    def __init__(
        self, poison: Iterable[str] = (), fail_batches: int = 0, poison_error: type = RuntimeError
    ) -> None:
        self.poison = set(poison)
        self.poison_error = poison_error
        self.fail_batches = fail_batches
        self.calls: list[list[str]] = []
        self.quarantined: dict[str, str] = {}
        self.built = 0

    def factory(self) -> FakePipeline:
        self.built += 1
        return self

    def process(
        self, paths: Iterable[Path], *, on_outcome: Callable[[FileOutcome], None] | None = None
    ) -> list[FileOutcome]:
        paths = list(paths)
        self.calls.append([p.name for p in paths])
        if self.fail_batches and len(paths) > 1:
            self.fail_batches -= 1
            raise RuntimeError("transient failure")
        if self.poison & {p.name for p in paths}:
            raise self.poison_error("bug triggered by this file")
        outcomes = []
        for p in paths:
            p.unlink()
            outcome = FileOutcome(p.name, "orders", "b", "a", "merged")
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
        return outcomes

    def quarantine_path(self, path: Path, reason: str) -> FileOutcome:
        self.quarantined[path.name] = reason
        path.unlink()
        return FileOutcome(path.name, "orders", "b", "a", "quarantined", reason=reason)

    def done(self) -> set[str]:
        return {n for call in self.calls for n in call} - set(self.poison) - set(self.quarantined)


@pytest.fixture
def run_in_process(tmp_path: Path) -> Iterator[Callable[..., tuple[Daemon, FakePipeline]]]:
    """Start a Daemon on a thread with a fake pipeline; stops it (and checks it exits 0) after."""
    started: list[tuple[Daemon, threading.Thread, list[int]]] = []

    def start(
        fake: FakePipeline, create_landing: bool = False, **changes: Any
    ) -> tuple[Daemon, FakePipeline]:
        if not create_landing:
            (tmp_path / "landing").mkdir(exist_ok=True)
        values = {"quiet_seconds": QUIET, "retry_backoff_seconds": 0.05, **changes}
        settings = Settings(landing_dir=tmp_path / "landing", lake_dir=tmp_path / "lake", **values)
        daemon = Daemon(settings, pipeline_factory=fake.factory, create_landing=create_landing)
        daemon.open()
        ready = threading.Event()
        codes: list[int] = []
        thread = threading.Thread(target=lambda: codes.append(daemon.run(ready.set)))
        thread.start()
        assert ready.wait(30)
        started.append((daemon, thread, codes))
        return daemon, fake

    yield start
    for daemon, thread, codes in started:
        daemon.stop()
        thread.join(30)
        assert codes == [0]


def test_a_transient_error_is_retried_but_never_quarantines(
    tmp_path: Path, run_in_process: Callable[..., tuple[Daemon, FakePipeline]]
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "orders_001.json").write_text("[]")
    fake = FakePipeline(poison={"orders_001.json"}, poison_error=OSError)
    daemon, _ = run_in_process(fake, batch_retries=1, rescan_seconds=0.2)
    # Retried after its retries ran out too (by the rescans), never quarantined, never halted.
    wait_until(lambda: fake.calls.count(["orders_001.json"]) >= 4, 30, "repeated retries")
    assert fake.quarantined == {} and (landing / "orders_001.json").exists()
    assert not daemon.stop_event.is_set()
    fake.poison.clear()  # the disk has room again: the file goes through
    wait_until(lambda: not (landing / "orders_001.json").exists(), 30, "the file's merge")


def test_a_failing_batch_is_retried_one_by_one_and_the_culprit_quarantined(
    tmp_path: Path, run_in_process: Callable[..., tuple[Daemon, FakePipeline]]
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    names = [f"orders_{i:03d}.json" for i in range(6)]
    for name in names:
        (landing / name).write_text("[]")
    daemon, fake = run_in_process(FakePipeline(poison={"orders_002.json"}), batch_retries=2)
    wait_until(lambda: "orders_002.json" in fake.quarantined, 30, "the poison file's quarantine")
    reason = fake.quarantined["orders_002.json"]
    assert reason.startswith("processing failed 3 times: bug triggered")
    assert fake.calls[0] == names  # the backlog went as one micro-batch, in name order
    assert fake.calls.count(["orders_002.json"]) == 2  # batch_retries single attempts
    assert fake.done() == set(names) - {"orders_002.json"}
    assert fake.built > 1  # rebuilt from the lake after a failure, as after a crash

    # The daemon is still running: a new file goes through.
    drop_src = tmp_path / "orders_100.json"
    drop_src.write_text("[]")
    drop(drop_src, landing)
    wait_until(lambda: "orders_100.json" in fake.done(), 30, "the next file")
    beat = daemon.lake.markers.read("heartbeat")
    assert "bug triggered" in beat["last_error"]
    assert beat["files_processed"] == len(names) + 1 and beat["stopped"] is False


def test_a_missing_landing_folder_is_refused_unless_create(
    tmp_path: Path, run_in_process: Callable[..., tuple[Daemon, FakePipeline]]
) -> None:
    from ecom_stream.errors import ConfigError

    settings = Settings(landing_dir=tmp_path / "typo", lake_dir=tmp_path / "lake")
    with pytest.raises(ConfigError, match="does not exist: check --landing, or pass --create"):
        Daemon(settings, pipeline_factory=FakePipeline().factory).open()
    assert not (tmp_path / "typo").exists()

    _, fake = run_in_process(FakePipeline(), create_landing=True)
    assert (tmp_path / "landing").is_dir()
    (tmp_path / "landing" / "orders_1.json").write_text("[]")
    wait_until(lambda: "orders_1.json" in fake.done(), 30, "the file in the created folder")


def test_a_transient_failure_loses_nothing(
    tmp_path: Path, run_in_process: Callable[..., tuple[Daemon, FakePipeline]]
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    for i in range(4):
        (landing / f"orders_{i}.json").write_text("[]")
    _, fake = run_in_process(FakePipeline(fail_batches=1))
    wait_until(lambda: len(fake.done()) == 4, 30, "all four files")
    assert fake.quarantined == {}


def test_the_stop_summary_counts_the_files_left_in_landing(
    tmp_path: Path, run_in_process: Callable[..., tuple[Daemon, FakePipeline]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ecom_stream.service.daemon")
    landing = tmp_path / "landing"
    landing.mkdir()
    for i in range(3):
        (landing / f"orders_{i}.json").write_text("[]")
    (landing / ".orders_9.json.part").write_text("[")  # a producer's temporary file
    # The micro-batch fails and its files wait for a long backoff: taken from the queue,
    # still in landing when the stop comes.
    daemon, _ = run_in_process(FakePipeline(fail_batches=1), retry_backoff_seconds=600)
    wait_until(lambda: any("one by one" in r.getMessage() for r in caplog.records), 30,
               "the failing micro-batch")
    daemon.stop()
    stopped = wait_until(
        lambda: [m for r in caplog.records if (m := r.getMessage()).startswith("stopped:")] or None,
        30, "the stop summary",
    )
    assert stopped == ["stopped: 0 file(s) processed, 3 left in landing for the next start"]


@pytest.mark.parametrize("trigger", ["overflow", "periodic"])
def test_rescan_finds_files_whose_events_were_lost(
    tmp_path: Path, run_in_process: Callable[..., tuple[Daemon, FakePipeline]],
    monkeypatch: pytest.MonkeyPatch, trigger: str,
) -> None:
    from ecom_stream.sources import landing as landing_module

    # Simulate an inotify overflow: the handler gets no event at all.
    monkeypatch.setattr(landing_module._LandingHandler, "on_any_event", lambda self, event: None)
    rescan = 1.0 if trigger == "periodic" else 3600.0
    _, fake = run_in_process(FakePipeline(), rescan_seconds=rescan)
    (tmp_path / "landing" / "orders_lost.json").write_text("[]")
    time.sleep(QUIET * 3)
    if trigger == "overflow":
        assert fake.calls == []
        # What watchdog 7.1 logs on IN_Q_OVERFLOW (and all it does).
        logging.getLogger(OVERFLOW_LOGGER).warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
    wait_until(lambda: "orders_lost.json" in fake.done(), 30, "the rescan to find the file")


def test_temporary_names_are_never_read(
    tmp_path: Path, run_in_process: Callable[..., tuple[Daemon, FakePipeline]]
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    _, fake = run_in_process(FakePipeline())
    for name in (".orders_1.json", "orders_2.json.tmp", "orders_3.json.part"):
        (landing / name).write_text("[")
    os.replace(landing / "orders_3.json.part", landing / "orders_3.json")
    wait_until(lambda: "orders_3.json" in fake.done(), 30, "the renamed file")
    time.sleep(QUIET * 3)
    assert fake.calls == [["orders_3.json"]]


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_an_in_place_writer_is_read_once_complete(
    tmp_path: Path, run_in_process: Callable[..., tuple[Daemon, FakePipeline]], polling: bool
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    seen: dict[str, bytes] = {}
    fake = FakePipeline()
    original = fake.process

    def process(paths: Iterable[Path], **kwargs: Any) -> list[FileOutcome]:
        paths = list(paths)
        seen.update((p.name, p.read_bytes()) for p in paths)
        return original(paths, **kwargs)

    fake.process = process  # type: ignore[method-assign]
    run_in_process(fake, polling=polling)
    with open(landing / "orders_1.json", "w") as fh:  # slower than the quiet period
        for chunk in ("[1,", "2,", "3]"):
            fh.write(chunk)
            fh.flush()
            time.sleep(QUIET * 3)
    wait_until(lambda: "orders_1.json" in seen, 30, "the file")
    # With polling there is no close event: the read lease kept the reader out between chunks.
    assert seen == {"orders_1.json": b"[1,2,3]"}


# -- real daemon processes -----------------------------------------------------------------
class DaemonProcess:
    """``python -m ecom_stream watch`` on a tmp_path lake, logging to a file."""

    def __init__(
        self, tmp_path: Path, landing: Path, lake: Path, env: dict[str, str] | None = None
    ) -> None:
        self.landing, self.lake = landing, lake
        self.log = tmp_path / f"daemon-{time.monotonic_ns()}.log"
        full_env = {
            **os.environ, "PYTHONPATH": str(REPO), "ECOM_QUIET_SECONDS": str(QUIET),
            "ECOM_RESCAN_SECONDS": "5", **(env or {}),
        }
        with open(self.log, "wb") as log:
            # Options after the subcommand: the subcommand's own copies of them win in argparse.
            cmd = [sys.executable, "-m", "ecom_stream", "watch",
                   "--landing", str(landing), "--lake", str(lake)]
            self.proc = subprocess.Popen(
                cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
            )

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 90) -> None:
        """Until the heartbeat carries our pid: watching, backlog enqueued."""

        def ready() -> bool:
            code = self.proc.poll()
            assert code is None, f"daemon exited with {code}:\n{self.logs()}"
            beat = heartbeat(Lake(self.lake), 3600)
            return bool(beat and beat.get("pid") == self.proc.pid)

        wait_until(ready, timeout, "the daemon to start")

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Factory of daemon processes; any still running at the end are killed."""
    procs: list[DaemonProcess] = []

    def start(landing: Path, lake: Path, env: dict[str, str] | None = None) -> DaemonProcess:
        landing.mkdir(parents=True, exist_ok=True)
        procs.append(DaemonProcess(tmp_path, landing, lake, env))
        return procs[-1]

    yield start
    for d in procs:
        if d.proc.poll() is None:
            d.kill()


def read_ledger(lake: Path) -> pd.DataFrame:
    try:
        if Lake(lake).tables.exists():
            return Lake(lake).tables.read_pandas("ledger")
    except Exception:  # read while a commit lands: try again at the next poll
        pass
    columns = ["file_name", "outcome", "micro_batch_files", "table_versions", "rows_in"]
    return pd.DataFrame(columns=columns)


def wait_for_outcomes(lake: Path, names: Iterable[str], timeout: float = 90) -> pd.DataFrame:
    """Until every named file has a ledger row; returns the ledger."""
    wanted = set(names)

    def check() -> pd.DataFrame | None:
        ledger = read_ledger(lake)
        return ledger if wanted <= set(ledger["file_name"]) else None

    return wait_until(check, timeout, f"{len(wanted)} file(s) in the ledger", poll=0.5)


def outcome_of(ledger: pd.DataFrame, name: str) -> list[str]:
    return ledger.loc[ledger["file_name"] == name, "outcome"].tolist()


@pytest.mark.slow
def test_catch_up_then_stream_then_sigterm(
    tmp_path: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    files = generate_files(tmp_path / "source", batches=8, orders=50, seed=3)
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    before, after = files[:4], files[4:]
    for f in before:  # present before the daemon starts
        drop(f, landing)

    daemon = daemons(landing, lake)
    daemon.wait_ready()
    ledger = wait_for_outcomes(lake, [f.name for f in before])
    for f in after:  # then one by one
        drop(f, landing)
        ledger = wait_for_outcomes(lake, [f.name])
    merged = [f.name for f in files if outcome_of(ledger, f.name) == ["merged"]]
    assert merged == [f.name for f in files], ledger[["file_name", "outcome"]]

    # A burst, then SIGTERM at once: the micro-batch in hand finishes, the rest waits in landing.
    burst = generate_files(tmp_path / "burst", batches=20, orders=20, seed=4, products=60)
    burst = [f for f in burst if f.name.startswith("orders")]
    for f in burst:
        f.rename(landing / f.name.replace("orders", "orders_late", 1))
    assert daemon.stop() == 0, daemon.logs()
    ledger = read_ledger(lake)
    waiting = {p.name for p in landing.iterdir() if not p.name.startswith(".")}
    assert f"{len(waiting)} left in landing" in daemon.logs(), daemon.logs()
    expected = {f.name.replace("orders", "orders_late", 1) for f in burst}
    assert expected <= waiting | set(ledger["file_name"]), "a file was lost"
    assert not (waiting & set(ledger["file_name"])), "a recorded file was left in landing"
    beat = heartbeat(Lake(lake), 60)
    assert beat is not None and beat["stopped"] is True and beat["alive"] is False

    status = run_cli("status", "--json", "--landing", str(landing), "--lake", str(lake))
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["daemon"]["stopped"] is True and report["backlog"] == len(waiting)


@pytest.mark.slow
def test_slow_writer_poison_files_and_a_second_daemon(
    tmp_path: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    files = generate_files(tmp_path / "source", batches=4, orders=80, seed=5)
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    daemon = daemons(landing, lake)
    daemon.wait_ready()

    second = run_cli("watch", "--landing", str(landing), "--lake", str(lake), timeout=120)
    assert second.returncode == 1
    assert "another ecom-stream process" in second.stderr

    products, orders = files[0], [f for f in files if f.name.startswith("orders")]
    drop(products, landing)
    wait_for_outcomes(lake, [products.name])

    # A producer writing in place, slowly, in three chunks over ~3 s (quiet period is 0.3 s).
    data = orders[0].read_bytes()
    slow = landing / "orders_slow.json"
    third = len(data) // 3
    with open(slow, "wb") as fh:
        for part in (data[:third], data[third : 2 * third], data[2 * third :]):
            fh.write(part)
            fh.flush()
            time.sleep(1.2)

    # Poison: invalid JSON, an unknown entity, binary junk; good files after them.
    (landing / "orders_bad_json.json").write_text('[{"order_id": 1, "total": ')
    (landing / "customers_1.json").write_text('[{"customer_id": 1}]')
    (landing / "orders_junk.json").write_bytes(random.Random(9).randbytes(3000))
    for f in orders[1:]:
        drop(f, landing)

    poison = ["orders_bad_json.json", "customers_1.json", "orders_junk.json"]
    ledger = wait_for_outcomes(lake, ["orders_slow.json", *poison, *(f.name for f in orders[1:])])
    assert outcome_of(ledger, "orders_slow.json") == ["merged"], daemon.logs()
    rows_in = ledger.loc[ledger["file_name"] == "orders_slow.json", "rows_in"].item()
    assert rows_in == len(json.loads(data))
    for name in poison:
        assert outcome_of(ledger, name) == ["quarantined"]
    assert all(outcome_of(ledger, f.name) == ["merged"] for f in orders[1:])
    quarantined = {p.name for p in Lake(lake).blobs.quarantined_files()}
    assert set(poison) <= quarantined and "orders_slow.json" not in quarantined
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0, daemon.logs()


@pytest.mark.slow
def test_a_burst_of_500_files_is_merged_in_few_micro_batches(
    tmp_path: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    files = generate_files(tmp_path / "source", batches=500, orders=20, seed=6, products=100)
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    daemon = daemons(landing, lake)
    daemon.wait_ready()
    for f in files:  # all at once, by plain rename from another folder (created events only)
        f.rename(landing / f.name)
    ledger = wait_for_outcomes(lake, [f.name for f in files], timeout=180)
    orders = ledger[ledger["file_name"].str.startswith("orders")]
    assert len(orders) == 500 and set(orders["outcome"]) == {"merged"}
    merges = orders["table_versions"].nunique()
    assert merges <= 50, f"{merges} merges for 500 files"
    assert orders["micro_batch_files"].max() > 1
    assert Lake(lake).tables.version("silver_orders") < 100
    assert daemon.stop() == 0, daemon.logs()


@pytest.mark.slow
def test_a_replaced_or_removed_landing_folder_is_followed(
    tmp_path: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    files = generate_files(tmp_path / "source", batches=3, orders=30, seed=8)  # products first
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    # No periodic rescan during the test: only the watcher can find the files in time.
    daemon = daemons(landing, lake, {"ECOM_RESCAN_SECONDS": "3600"})
    daemon.wait_ready()
    drop(files[0], landing)
    wait_for_outcomes(lake, [files[0].name])

    # Replaced by a new folder (the old one kept under another name).
    landing.rename(tmp_path / "landing.old")
    landing.mkdir()
    drop(files[1], landing)
    wait_for_outcomes(lake, [files[1].name], timeout=60)

    # Removed and recreated.
    shutil.rmtree(landing)
    landing.mkdir()
    drop(files[2], landing)
    wait_for_outcomes(lake, [files[2].name], timeout=60)

    # Removed for good: one warning, no crash, not recreated; back when it is back.
    shutil.rmtree(landing)
    wait_until(lambda: "is gone" in daemon.logs(), 30, "the warning")
    time.sleep(3)
    assert daemon.proc.poll() is None and not landing.exists()
    assert daemon.logs().count("is gone") == 1, daemon.logs()
    landing.mkdir()
    drop(files[3], landing)
    ledger = wait_for_outcomes(lake, [files[3].name], timeout=60)
    assert set(ledger["outcome"]) == {"merged"}, ledger[["file_name", "outcome"]]
    assert daemon.stop() == 0, daemon.logs()
    assert "0 left in landing" in daemon.logs()


def ledger_commits(lake: Path) -> int:
    """Commits in the ledger table so far (its last commit ends every micro-batch)."""
    return len(list((lake / "_ledger" / "_delta_log").glob("*.json")))


@pytest.mark.slow
def test_a_second_signal_aborts_mid_batch_and_a_restart_loses_nothing(
    tmp_path: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    files = generate_files(tmp_path / "source", batches=200, orders=40, seed=11, products=80)
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    daemon = daemons(landing, lake)
    daemon.wait_ready()
    for f in files:
        f.rename(landing / f.name)
    # A micro-batch recorded and files still waiting: the next micro-batch is under way (the
    # ledger's first commit is its creation, before any file: a signal then stops at once).
    wait_until(lambda: 0 < len(read_ledger(lake)) < len(files), 90, "the first micro-batch")
    # Two different signals (two SIGTERMs could coalesce into one pending signal).
    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(30) == 130, daemon.logs()  # interrupted, not a graceful 0
    logs = daemon.logs()
    assert "interrupted" in logs and "stopped:" not in logs, logs  # no graceful summary

    again = daemons(landing, lake)
    again.wait_ready()
    ledger = wait_for_outcomes(lake, [f.name for f in files], timeout=180)
    assert set(ledger["outcome"]) <= {"merged", "recovered"}, ledger["outcome"].value_counts()
    assert again.stop() == 0, again.logs()


@pytest.mark.slow
def test_kill_minus_nine_during_a_stream_then_restart_equals_a_clean_run(
    tmp_path: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    files = generate_files(tmp_path / "source", batches=40, orders=60, seed=7)
    clean_landing, clean_lake = tmp_path / "clean-landing", tmp_path / "clean-lake"
    shutil.copytree(tmp_path / "source", clean_landing)
    done = run_cli("backfill", "--no-progress",
                   "--landing", str(clean_landing), "--lake", str(clean_lake))
    assert done.returncode == 0, done.stderr

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    rng = random.Random(2024)
    pending = list(files)
    # Small micro-batches: a kill then lands between the commits of one process() call too.
    env = {"ECOM_MICROBATCH_MAX_FILES": "3"}
    for _kill in range(3):
        for f in pending[:3]:  # arrive while the daemon is down: caught up at start
            drop(f, landing)
        pending = pending[3:]
        daemon = daemons(landing, lake, env)
        daemon.wait_ready()
        before = ledger_commits(lake)
        wait_until(lambda: ledger_commits(lake) > before, 90, "a commit")  # noqa: B023
        # Keep the stream flowing, then kill at a random moment of it.
        deadline = time.monotonic() + rng.uniform(0.0, 1.5)
        while time.monotonic() < deadline:
            if pending:
                drop(pending.pop(0), landing)
            time.sleep(0.15)
        daemon.kill()

    daemon = daemons(landing, lake, env)
    daemon.wait_ready()
    for f in pending:
        drop(f, landing)
    wait_for_outcomes(lake, [f.name for f in files], timeout=120)
    wait_until(lambda: not any(landing.iterdir()), 60, "landing to be empty")
    assert daemon.stop() == 0, daemon.logs()

    assert Lake(lake).blobs.quarantined_files() == []
    ledger = read_ledger(lake)
    assert set(ledger["outcome"]) <= {"merged", "recovered"}, ledger["outcome"].value_counts()
    assert_same_tables(snapshot(lake), snapshot(clean_lake))


def test_an_unusable_lake_is_a_clear_error(tmp_path: Path) -> None:
    from ecom_stream.errors import EcomStreamError
    from ecom_stream.service.daemon import run_daemon

    not_a_folder = tmp_path / "lake"
    not_a_folder.write_text("")
    settings = Settings(landing_dir=tmp_path / "landing", lake_dir=not_a_folder)
    with pytest.raises(EcomStreamError, match="lake"):
        run_daemon(settings, threading.Event())


# -- the demo ------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _demo(tmp_path: Path, port: int, history: int = 6) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "ecom_stream", "demo", "--landing", str(tmp_path / "landing"),
           "--lake", str(tmp_path / "lake"), "--port", str(port), "--interval", "1",
           "--orders-per-batch", "20", "--history-batches", str(history)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "ECOM_QUIET_SECONDS": str(QUIET)}
    with open(tmp_path / "demo.log", "wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)


@pytest.mark.slow
def test_demo_runs_daemon_source_and_dashboard_until_ctrl_c(tmp_path: Path) -> None:
    port = _free_port()
    health = f"http://127.0.0.1:{port}/_stcore/health"
    demo = _demo(tmp_path, port)
    try:
        def orders_merged() -> bool:
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()
            ledger = read_ledger(tmp_path / "lake")
            merged = ledger[ledger["outcome"] == "merged"]["file_name"]
            return int(merged.str.startswith("orders").sum()) > 6  # history, then the drip

        wait_until(orders_merged, 120, "history and dripped batches to be merged", poll=0.5)
        wait_until(lambda: _http_ok(health), 60, "the dashboard to answer", poll=0.5)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0, (tmp_path / "demo.log").read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
    output = (tmp_path / "demo.log").read_text()
    assert f"http://127.0.0.1:{port}" in output
    beat = heartbeat(Lake(tmp_path / "lake"), 60)
    assert beat is not None and beat["stopped"] is True  # the daemon stopped gracefully
    assert not _http_ok(health)


def _proc_stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, process group, state) of a live process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2]), fields[0]


def _descendants(pid: int) -> dict[int, int]:
    """Every live descendant of ``pid`` (pid -> process group), walking /proc."""
    stats = {int(d): st for d in os.listdir("/proc") if d.isdigit() and (st := _proc_stat(int(d)))}
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, pgid, _state) in stats.items():
            if ppid == parent and child not in found:
                found[child] = pgid
                frontier.append(child)
    return found


def _alive(pids: Iterable[int], groups: Iterable[int]) -> list[tuple[int, int]]:
    """Processes that are still running: one of ``pids``, or a member of one of ``groups``."""
    pids, groups = set(pids), set(groups)
    stats = {int(d): st for d in os.listdir("/proc") if d.isdigit() and (st := _proc_stat(int(d)))}
    return [(pid, st[1]) for pid, st in stats.items()
            if st[2] != "Z" and (pid in pids or st[1] in groups)]  # fmt: skip


def _children_by_command(parent: int, *words: str) -> list[int]:
    """Direct children of ``parent`` with one of ``words`` as an argument."""
    found = []
    for pid in _descendants(parent):
        if (st := _proc_stat(pid)) is None or st[0] != parent:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(w.encode() in cmdline for w in words):
            found.append(pid)
    return found


@pytest.mark.slow
def test_demo_stops_everything_when_a_child_dies(tmp_path: Path) -> None:
    """The dashboard dies: the others stop, exit 1, and the unmerged generated files go."""
    port = _free_port()
    demo = _demo(tmp_path, port, history=40)
    try:
        wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/_stcore/health"), 60,
                   "the dashboard to answer", poll=0.5)  # fmt: skip
        tree = _descendants(demo.pid)
        (dashboard,) = _children_by_command(demo.pid, "dashboard", "streamlit")
        os.kill(dashboard, signal.SIGKILL)
        code = demo.wait(120)
    finally:
        if demo.poll() is None:
            demo.kill()
    output = (tmp_path / "demo.log").read_text()
    assert code == 1, output
    assert "exited unexpectedly" in output, output
    assert _alive(tree, tree.values()) == [], output
    left = sorted(p.name for p in (tmp_path / "landing").iterdir())
    assert left == [], left  # merged files were removed by the daemon, the rest by the demo


@pytest.mark.slow
def test_demo_piped_into_tee_stops_its_whole_tree_on_ctrl_c(tmp_path: Path) -> None:
    """`ecom-stream demo | tee log`, then Ctrl-C: the terminal sends SIGINT to the foreground
    group (the demo and tee), tee dies, and the demo's output pipe has no reader any more."""
    port = _free_port()
    cmd = [sys.executable, "-m", "ecom_stream", "demo", "--landing", str(tmp_path / "landing"),
           "--lake", str(tmp_path / "lake"), "--port", str(port), "--interval", "0.2",
           "--orders-per-batch", "20", "--history-batches", "6"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "ECOM_QUIET_SECONDS": str(QUIET)}
    # The shell leads the "foreground" group, as a terminal's shell would make it.
    line = f"{shlex.join(cmd)} 2>stderr.log | cat > tee.log"
    shell = subprocess.Popen(["sh", "-c", line], env=env, cwd=tmp_path, start_new_session=True)
    demo_pid = wait_until(lambda: next(iter(_children_by_command(shell.pid, "demo")), None), 30,
                          "the demo to start")  # fmt: skip
    tree: dict[int, int] = {}
    left: list[tuple[int, int]] = []
    try:
        wait_until(lambda: shell.poll() is None and _http_ok(f"http://127.0.0.1:{port}/_stcore/health"),
                   90, "the demo's dashboard", poll=0.5)  # fmt: skip
        wait_until(lambda: len(_children_by_command(demo_pid, "watch", "generate")) == 2, 30,
                   "the daemon and the source")  # fmt: skip
        tree = _descendants(shell.pid)
        assert len(tree) >= 5, tree  # the demo, cat, the daemon, the source, the dashboard
        os.killpg(shell.pid, signal.SIGINT)  # Ctrl-C
        wait_until(lambda: _proc_stat(demo_pid) is None or _proc_stat(demo_pid)[2] == "Z", 90,
                   "the demo to exit")  # fmt: skip
        shell.wait(30)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
        left = _alive(tree, tree.values())
        for pid, _pgid in left:  # do not leave them to the next test
            os.kill(pid, signal.SIGKILL)
    errors = (tmp_path / "stderr.log").read_text()
    assert left == [], errors
    assert "Traceback" not in errors, errors


def _product_rejects(lake: Path) -> int:
    rejects = Lake(lake).tables.read_pandas("rejected_rows", columns=["entity"])
    return int((rejects["entity"] == "products").sum())


def test_demo_start_up_continues_the_series_without_resending(tmp_path: Path) -> None:
    """Three starts on one lake: each continues where the last stopped, and the catalogue
    (with its rejected rows) is sent once."""
    from ecom_stream.cli.main import main as cli
    from ecom_stream.tools.demo import source_args, start_up

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    settings = Settings(landing_dir=landing, lake_dir=lake)
    common = ["--lake", str(lake), "--landing", str(landing)]
    plans, rejected = [], []
    for _ in range(3):
        plan = start_up(settings, history_batches=3, orders_per_batch=20, say=lambda _line: None)
        plans.append(plan)
        # The source child's own command line, for two batches instead of "forever".
        assert cli(["generate", *source_args(settings, plan, 0.01, 20, batches=2)]) == 0
        # What the daemon does: merge them, then remove the merged files from landing.
        assert cli(["backfill", *common, str(landing), "--no-progress"]) == 0
        for path in landing.glob("*.json"):
            path.unlink()
        rejected.append(_product_rejects(lake))
    assert [(p.start, p.send_catalogue) for p in plans] == [(4, False), (6, False), (8, False)]
    assert rejected[0] > 0 and rejected == [rejected[0]] * 3
    names = Lake(lake).tables.read_pandas("ledger", columns=["file_name"])["file_name"].tolist()
    assert sorted(names) == [f"orders-{n:06d}.json" for n in range(1, 10)] + [
        "products-000001.json"
    ]


def test_demo_start_up_writes_the_missing_history_only(tmp_path: Path) -> None:
    """A run that stopped early (its unmerged history removed) is completed, without the
    catalogue; with no history asked and an empty lake, the source sends the catalogue."""
    from ecom_stream.cli.main import main as cli
    from ecom_stream.tools.demo import start_up

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    settings = Settings(landing_dir=landing, lake_dir=lake)
    assert start_up(settings, 0, 20, say=lambda _line: None) == _start(1, True)
    start_up(settings, history_batches=5, orders_per_batch=20, say=lambda _line: None)
    for n in range(3, 6):  # the daemon merged the catalogue and days 1-2 only
        (landing / f"orders-{n:06d}.json").unlink()
    common = ["--lake", str(lake), "--landing", str(landing)]
    assert cli(["backfill", *common, str(landing), "--no-progress"]) == 0
    for path in landing.glob("*.json"):
        path.unlink()
    plan = start_up(settings, history_batches=5, orders_per_batch=20, say=lambda _line: None)
    assert plan == _start(6, False)
    assert sorted(p.name for p in landing.iterdir()) == [f"orders-{n:06d}.json" for n in (3, 4, 5)]


def _start(start: int, send_catalogue: bool) -> Any:
    from ecom_stream.tools.demo import StartUp

    return StartUp(start, send_catalogue)


@pytest.mark.slow
def test_demo_restarted_three_times_counts_the_catalogue_once(tmp_path: Path) -> None:
    """The real command, started and stopped three times on one lake."""
    lake = tmp_path / "lake"

    def merged_orders() -> int:
        ledger = read_ledger(lake)
        merged = ledger[ledger["outcome"] == "merged"]["file_name"]
        return int(merged.str.startswith("orders").sum())

    rejected = []
    for _ in range(3):
        before = merged_orders()
        demo = _demo(tmp_path, _free_port(), history=3)
        try:
            def dripped(demo: subprocess.Popen[bytes] = demo, before: int = before) -> bool:
                assert demo.poll() is None, (tmp_path / "demo.log").read_text()
                landing = tmp_path / "landing"
                products = landing.exists() and any(
                    p.name.startswith("products") for p in landing.iterdir()
                )
                return merged_orders() >= before + 2 and not products

            wait_until(dripped, 120, "two more batches to be merged", poll=0.5)
            demo.send_signal(signal.SIGINT)
            assert demo.wait(60) == 0, (tmp_path / "demo.log").read_text()
        finally:
            if demo.poll() is None:
                demo.kill()
        rejected.append(_product_rejects(lake))
    assert rejected[0] > 0 and rejected == [rejected[0]] * 3, rejected


@pytest.mark.parametrize("obstacle", ["lake", "port"])
def test_demo_that_cannot_start_writes_nothing(tmp_path: Path, obstacle: str) -> None:
    """A held lake or a taken port: one line, exit 1, and no history left in landing."""
    import contextlib
    import socket

    from ecom_stream.storage.lock import LakeLock

    with contextlib.ExitStack() as stack:
        port = _free_port()
        if obstacle == "lake":
            lock_path = Lake(tmp_path / "lake").layout.lock_path
            stack.enter_context(LakeLock(lock_path, "test holding it"))
        else:
            busy = stack.enter_context(socket.socket())
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
        demo = _demo(tmp_path, port)
        try:
            code = demo.wait(120)
        finally:
            if demo.poll() is None:
                demo.kill()
    output = (tmp_path / "demo.log").read_text()
    assert code == 1, output
    expected = "another ecom-stream process" if obstacle == "lake" else "cannot listen on"
    assert expected in output and "Traceback" not in output, output
    assert sorted(p.name for p in (tmp_path / "landing").iterdir()) == []

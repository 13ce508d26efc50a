"""``ecom-stream bench``: the ``backfill`` and ``watch`` runners (ecom-stream itself)."""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ecom_stream.errors import EcomStreamError
from ecom_stream.tools.bench_peers import file_entity
from ecom_stream.tools.bench_procs import (
    POLL,
    PROGRESS_EVERY,
    SEED,
    DataSet,
    bench_env,
    ecom_command,
    generate_files,
    log_tail,
    supervise,
)
from ecom_stream.tools.bench_report import RunResult, latency_stats

STOP_TIMEOUT = 60.0


# -- ecom-stream itself -------------------------------------------------------------------
def _ledger(lake_dir: Path) -> Any:
    from ecom_stream.storage.lake import Lake

    return Lake(lake_dir).tables.read_pandas(
        "ledger",
        columns=["file_name", "entity", "outcome", "rows_in", "finished_at", "gold_committed_at"],
    )


def _files_in(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if not p.name.startswith("."))


def run_backfill(ds: DataSet, work: Path, timeout: float) -> RunResult:
    """Copy every file into a landing folder and time ``ecom-stream backfill`` over it."""
    landing, lake = work / "backfill" / "landing", work / "backfill" / "lake"
    landing.mkdir(parents=True)
    for path in ds.files:
        shutil.copy2(path, landing / path.name)
    log = work / "backfill.log"
    total = len(ds.files)
    child = supervise(
        "backfill",
        ecom_command("backfill", lake, landing, "--no-progress"),
        log,
        done=lambda: total - _files_in(landing),
        total=total,
        timeout=timeout,
    )
    result = RunResult(
        "backfill",
        files_total=total,
        total_s=child.wall_s,
        peak_rss_mb=child.maxrss_kb / 1024,
        files_done=total - _files_in(landing),
    )
    if child.finished and child.returncode != 0:
        result.error = f"exit {child.returncode}: {log_tail(log)}"
    from ecom_stream.storage.lake import Lake

    if Lake(lake).tables.exists():
        ledger = _ledger(lake)
        result.orders = int(ledger.loc[ledger["entity"] == "orders", "rows_in"].sum())
        outcomes = ledger["outcome"].value_counts().to_dict()
        result.notes.append(
            "outcomes: " + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
        )
    match = re.search(r"; ([\d.]+) s \(", log.read_text(errors="replace"))
    result.work_s = float(match.group(1)) if match else None
    result.finished = child.finished and child.returncode == 0 and result.files_done == total
    return result


def _seed_watch_lake(args: argparse.Namespace, ds: DataSet, work: Path, lake: Path) -> int:
    """Backfill the product files (and ``--seed-orders`` extra orders) into the watch lake."""
    staging = work / "watch" / "staging"
    staging.mkdir(parents=True)
    seed_files = 0
    if args.seed_orders > 0:
        batches = math.ceil(args.seed_orders / args.orders_per_file)
        print(f"watch: generating {batches} seed files (~{args.seed_orders:,} orders)", flush=True)
        # Order files numbered after the data set's: their ids continue, nothing collides.
        generate_files(args, staging, batches=batches, seed=SEED + 1, start=args.files + 1)
        for path in staging.iterdir():
            if file_entity(path) == "products":
                path.unlink()
        seed_files = _files_in(staging)
    for path in ds.product_files:
        shutil.copy2(path, staging / path.name)
    print(f"watch: backfilling {_files_in(staging)} files into the watch lake", flush=True)
    started = time.monotonic()
    proc = subprocess.run(
        ecom_command("backfill", lake, staging, "--no-progress"),
        env=bench_env(),
        cwd=work,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise EcomStreamError(f"bench: seeding the watch lake failed: {proc.stderr.strip()[-500:]}")
    print(f"watch: lake ready in {time.monotonic() - started:.0f} s", flush=True)
    return seed_files


def _vm_hwm_kb(pid: int) -> int | None:
    """Peak resident set size of ``pid`` so far (Linux /proc), in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_watch(args: argparse.Namespace, ds: DataSet, work: Path) -> RunResult:
    """Seed a lake, start the daemon and measure each dropped file's latency to gold."""
    lake, landing = work / "watch" / "lake", work / "watch" / "landing"
    steady = ds.order_files[: args.steady_files]
    result = RunResult("watch", files_total=len(steady))
    if len(steady) < args.steady_files:
        result.notes.append(f"only {len(steady)} order files to drop")
    seeded = _seed_watch_lake(args, ds, work, lake)
    if seeded:
        result.notes.append(f"lake seeded with {seeded} extra order files")
    landing.mkdir(parents=True)
    log = work / "watch.log"
    with open(log, "ab") as out:
        daemon = subprocess.Popen(
            ecom_command("watch", lake, landing),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=bench_env(),
            cwd=work,
            start_new_session=True,
        )
    spawned = time.monotonic()
    try:
        _drive_daemon(args, daemon, steady, lake, landing, result, spawned)
    finally:
        hwm = _vm_hwm_kb(daemon.pid)
        usage = _stop(daemon)
        result.peak_rss_mb = max(hwm or 0, usage) / 1024
    if daemon.returncode not in (0, None) and not result.error:
        result.notes.append(f"daemon exit {daemon.returncode}: {log_tail(log)}")
    return result


def _drive_daemon(
    args: argparse.Namespace,
    daemon: subprocess.Popen[bytes],
    steady: list[Path],
    lake: Path,
    landing: Path,
    result: RunResult,
    spawned: float,
) -> None:
    """Wait for the heartbeat, drop the files at ``--pace`` and collect their latencies.
    """
    if not _await_heartbeat(args, daemon, lake, result, spawned):
        return
    dropped: dict[str, float] = {}
    finished: dict[str, float] = {}  # gold committed (the dashboard can show the file)
    recorded: dict[str, float] = {}  # ledger row written (every bookkeeping step done)
    rows: dict[str, int] = {}
    first_drop = time.time()
    last_print = last_ledger = time.monotonic()
    while len(finished) < len(steady):
        now = time.time()
        if len(dropped) < len(steady) and now >= first_drop + len(dropped) * args.pace:
            dropped[steady[len(dropped)].name] = _drop(steady[len(dropped)], landing)
        gone = [n for n in dropped if n not in finished and not (landing / n).exists()]
        if gone and time.monotonic() - last_ledger > 0.2:
            last_ledger = time.monotonic()
            ledger = _ledger(lake)
            for row in ledger[ledger["file_name"].isin(gone)].itertuples():
                gold_at = row.gold_committed_at
                done_at = row.finished_at if gold_at is None or gold_at != gold_at else gold_at
                finished[row.file_name] = done_at.timestamp()
                recorded[row.file_name] = row.finished_at.timestamp()
                rows[row.file_name] = int(row.rows_in)
        elapsed = time.monotonic() - spawned
        if daemon.poll() is not None:
            result.error = f"daemon exited with {daemon.returncode}"
            break
        if elapsed > args.timeout:
            break
        if time.monotonic() - last_print >= PROGRESS_EVERY:
            last_print = time.monotonic()
            print(f"watch: {len(finished)}/{len(steady)} files, {elapsed:.0f} s", flush=True)
        time.sleep(POLL / 2)
    _record_latencies(result, steady, dropped, finished, recorded, rows, first_drop)


def _await_heartbeat(
    args: argparse.Namespace,
    daemon: subprocess.Popen[bytes],
    lake: Path,
    result: RunResult,
    spawned: float,
) -> bool:
    """Wait until the daemon writes its first heartbeat; False when it exits or times out."""
    from ecom_stream.storage.lake import Lake

    markers = Lake(lake).markers
    while not markers.exists("heartbeat"):
        if daemon.poll() is not None:
            result.error = f"daemon exited with {daemon.returncode} before its first heartbeat"
            return False
        if time.monotonic() - spawned > args.timeout:
            return False
        time.sleep(POLL)
    return True


def _record_latencies(
    result: RunResult,
    steady: list[Path],
    dropped: dict[str, float],
    finished: dict[str, float],
    recorded: dict[str, float],
    rows: dict[str, int],
    first_drop: float,
) -> None:
    """Fill ``result`` from the drop, gold and ledger times of the files that finished."""
    names = [p.name for p in steady if p.name in finished]
    result.files_done = len(names)
    result.latencies_ms = [(finished[n] - dropped[n]) * 1000 for n in names]
    to_ledger = latency_stats([(recorded[n] - dropped[n]) * 1000 for n in names])
    if to_ledger["p50_ms"] is not None:
        result.notes.append(
            "latency to the ledger row (after the bronze, rejected-row and ledger commits): "
            f"p50 {to_ledger['p50_ms']:.0f} ms, p95 {to_ledger['p95_ms']:.0f} ms"
        )
    result.orders = sum(rows[n] for n in names)
    if names:
        result.total_s = max(finished.values()) - first_drop
        result.work_s = result.total_s
    result.finished = not result.error and len(names) == len(steady)


def _drop(path: Path, landing: Path) -> float:
    """Write the file under a temporary name and rename it into landing; returns the drop time."""
    tmp = landing / f".{path.name}.tmp"
    tmp.write_bytes(path.read_bytes())
    os.replace(tmp, landing / path.name)
    return time.time()


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the daemon finishes its micro-batch), SIGKILL after a while; returns maxrss kB."""
    if proc.returncode is None:
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_maxrss
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(POLL)



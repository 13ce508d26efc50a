"""``ecom-stream bench``: the generated data set and the peer runners' child processes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecom_stream.tools.bench_peers import file_entity, load_records, ordered_files
from ecom_stream.tools.bench_report import REPO, RunResult

SEED = 42
PROGRESS_EVERY = 10.0  # seconds between progress lines
POLL = 0.05
STOP_TIMEOUT = 60.0


# -- the data set -------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSet:
    """The generated files, products first then orders in name order, with record counts."""

    product_files: list[Path]
    order_files: list[Path]
    records: dict[str, int]

    @property
    def files(self) -> list[Path]:
        return self.product_files + self.order_files

    @property
    def orders(self) -> int:
        return sum(self.records[p.name] for p in self.order_files)


def generate_files(
    args: argparse.Namespace, out: Path, *, batches: int, seed: int, start: int
) -> None:
    """Generate ``batches`` order files (and the product files) of the bench's size into ``out``."""
    from ecom_stream.tools.generate import GenerateOptions, generate

    generate(
        GenerateOptions(
            out=out,
            batches=batches,
            orders_per_batch=args.orders_per_file,
            products=args.products,
            product_batches=args.product_files,
            seed=seed,
            interval=0.0,
            start=start,
        )
    )


def make_data_set(args: argparse.Namespace, source: Path) -> DataSet:
    """Generate the benchmark files into ``source`` and count their records."""
    generate_files(args, source, batches=args.files, seed=SEED, start=1)
    files = ordered_files(source)
    records = {p.name: len(load_records(p)) for p in files}
    return DataSet(
        [p for p in files if file_entity(p) == "products"],
        [p for p in files if file_entity(p) == "orders"],
        records,
    )


# -- child processes ----------------------------------------------------------------------
@dataclass
class Child:
    """A finished (or stopped) child process."""

    finished: bool
    returncode: int | None
    wall_s: float
    maxrss_kb: int


def bench_env() -> dict[str, str]:
    """The environment of a bench child: this checkout importable, dates far ahead allowed."""
    path = os.environ.get("PYTHONPATH")
    # The simulated days run years past today: lift the contract's "not after receipt" bound.
    ahead = os.environ.get("ECOM_MAX_DAYS_AHEAD", "36500")
    return {**os.environ, "ECOM_MAX_DAYS_AHEAD": ahead,
            "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}


def ecom_command(command: str, lake: Path, landing: Path, *args: str) -> list[str]:
    """``python -m ecom_stream COMMAND --lake L --landing D ARGS`` (options after the command)."""
    return [
        sys.executable,
        "-m",
        "ecom_stream",
        command,
        "--lake",
        str(lake),
        "--landing",
        str(landing),
        *args,
    ]


def supervise(
    name: str,
    cmd: list[str],
    log: Path,
    *,
    done: Callable[[], int],
    total: int,
    timeout: float,
) -> Child:
    """Run ``cmd`` to completion or until ``timeout``, printing progress; rusage via wait4."""
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=bench_env(),
            cwd=log.parent,
            start_new_session=True,
        )
    last_print = started
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            elapsed = time.monotonic() - started
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return Child(True, proc.returncode, elapsed, usage.ru_maxrss)
            if elapsed > timeout:
                break
            if time.monotonic() - last_print >= PROGRESS_EVERY:
                last_print = time.monotonic()
                print(f"{name}: {done()}/{total} files, {elapsed:.0f} s", flush=True)
            time.sleep(POLL * 2)
    finally:
        if proc.returncode is None:  # over time, or the bench itself was interrupted
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    return Child(False, None, elapsed, usage.ru_maxrss)


def log_tail(log: Path, lines: int = 3) -> str:
    """The last lines of a child's log on one line (for an error message)."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def _progress_lines(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in raw:
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # the last line of a killed child may be cut short
    return out


def run_peer(name: str, ds: DataSet, source: Path, work: Path, timeout: float) -> RunResult:
    """Run one peer (see ``bench_peers``) over the data set in its own process."""
    folder = work / name
    folder.mkdir(parents=True)
    progress, result_path = folder / "progress.jsonl", folder / "result.json"
    log = work / f"{name}.log"
    cmd = [
        sys.executable,
        "-m",
        "ecom_stream.tools.bench_peers",
        "--runner",
        name,
        "--source",
        str(source),
        "--out",
        str(folder / "out"),
        "--progress",
        str(progress),
        "--result",
        str(result_path),
    ]
    child = supervise(
        name,
        cmd,
        log,
        done=lambda: len(_progress_lines(progress)),
        total=len(ds.files),
        timeout=timeout,
    )
    lines = _progress_lines(progress)
    result = RunResult(
        name,
        files_done=len(lines),
        files_total=len(ds.files),
        total_s=child.wall_s,
        peak_rss_mb=child.maxrss_kb / 1024,
    )
    result.orders = sum(line["rows"] for line in lines if line["entity"] == "orders")
    result.latencies_ms = [line["ms"] for line in lines if line["entity"] == "orders"]
    if lines:
        result.work_s = lines[-1]["end"] - lines[0]["start"]
    if child.finished and child.returncode == 0 and result_path.exists():
        reported = json.loads(result_path.read_text())
        result.peak_rss_mb = reported["maxrss_kb"] / 1024
        result.finished = result.files_done == len(ds.files)
    elif child.finished:
        result.error = f"exit {child.returncode}: {log_tail(log)}"
    return result



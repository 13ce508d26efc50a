"""``ecom-stream bench``: ecom-stream against the loops people write instead, on the same files.

One run generates a data set and then runs, one after another, each in its own process:

* ``floor``: read each file and append it to a Parquet dataset, nothing else (the I/O floor);
* ``naive``: per file, pandas cleaning, a default ``deltalake`` MERGE into unpartitioned silver
  tables, then daily revenue recomputed over the whole silver orders table (gold overwritten);
* ``tutorial``: per file, the whole batch pipeline re-run over every file received so far;
* ``backfill``: the real ``ecom-stream backfill`` (validation, bronze, silver, gold, ledger);
* ``watch``: the real daemon in steady state, fed one file at a time at a fixed pace, with the
  latency from drop to gold committed read from the lake's ledger.

The peers run as ``python -m ecom_stream.tools.bench_peers --runner NAME`` (see that module): they
append one JSON line per file to a progress file (so a peer stopped at ``--timeout`` still
reports how far it got) and their own peak RSS at the end. Results are ratios within one run,
never absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ecom_stream.config import Settings
from ecom_stream.errors import ConfigError, EcomStreamError
from ecom_stream.tools.bench_peers import PEERS, file_entity, load_records, ordered_files

__all__ = ["RunResult", "latency_stats", "run_bench"]

RUNNERS = ("floor", "naive", "tutorial", "backfill", "watch")
PACKAGES = ("deltalake", "pandas", "pyarrow", "great_expectations")
SEED = 42
PROGRESS_EVERY = 10.0  # seconds between progress lines
POLL = 0.05
STOP_TIMEOUT = 60.0
REPO = Path(__file__).resolve().parents[2]


# -- results ------------------------------------------------------------------------------
@dataclass
class RunResult:
    """What one runner did; ``finished`` is False when it was stopped or failed."""

    name: str
    finished: bool = False
    files_done: int = 0
    files_total: int = 0
    orders: int = 0
    total_s: float | None = None
    work_s: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def status(self, timeout: float) -> str:
        if self.finished:
            return "ok"
        if self.error:
            return f"failed: {self.error}"
        return f"did not finish in {timeout:g} s ({self.files_done} files)"

    def to_json(self, timeout: float) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status(timeout)
        data["orders_per_s"] = _rate(self.orders, self.total_s)
        data["latency"] = latency_stats(self.latencies_ms) if self.name != "backfill" else None
        return data


def latency_stats(values: Sequence[float]) -> dict[str, float | None]:
    """p50 / p95 / max in ms, and growth: mean of the last tenth over mean of the first tenth."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None, "growth": None}
    ordered = sorted(values)
    tenth = max(1, len(values) // 10)
    first = sum(values[:tenth]) / tenth
    last = sum(values[-tenth:]) / tenth
    return {
        "p50_ms": _quantile(ordered, 0.50),
        "p95_ms": _quantile(ordered, 0.95),
        "max_ms": ordered[-1],
        "growth": last / first if first > 0 else None,
    }


def _quantile(ordered: Sequence[float], q: float) -> float:
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _rate(orders: int, seconds: float | None) -> float | None:
    return orders / seconds if seconds and orders else None


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


def _generate(args: argparse.Namespace, out: Path, *, batches: int, seed: int, start: int) -> None:
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
    _generate(args, source, batches=args.files, seed=SEED, start=1)
    files = ordered_files(source)
    records = {p.name: len(load_records(p)) for p in files}
    return DataSet(
        [p for p in files if file_entity(p) == "products"],
        [p for p in files if file_entity(p) == "orders"],
        records,
    )


# -- child processes ----------------------------------------------------------------------
@dataclass
class _Child:
    """A finished (or stopped) child process."""

    finished: bool
    returncode: int | None
    wall_s: float
    maxrss_kb: int


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    # The simulated days run years past today: lift the contract's "not after receipt" bound.
    ahead = os.environ.get("ECOM_MAX_DAYS_AHEAD", "36500")
    return {**os.environ, "ECOM_MAX_DAYS_AHEAD": ahead,
            "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}


def _cli(command: str, lake: Path, landing: Path, *args: str) -> list[str]:
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


def _supervise(
    name: str,
    cmd: list[str],
    log: Path,
    *,
    done: Callable[[], int],
    total: int,
    timeout: float,
) -> _Child:
    """Run ``cmd`` to completion or until ``timeout``, printing progress; rusage via wait4."""
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
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
                return _Child(True, proc.returncode, elapsed, usage.ru_maxrss)
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
    return _Child(False, None, elapsed, usage.ru_maxrss)


def _tail(log: Path, lines: int = 3) -> str:
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


def _run_peer(name: str, ds: DataSet, source: Path, work: Path, timeout: float) -> RunResult:
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
    child = _supervise(
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
        result.error = f"exit {child.returncode}: {_tail(log)}"
    return result


# -- ecom-stream itself -------------------------------------------------------------------
def _ledger(lake_dir: Path) -> Any:
    from ecom_stream.storage.lake import Lake

    return Lake(lake_dir).read_pandas(
        "ledger",
        columns=["file_name", "entity", "outcome", "rows_in", "finished_at", "gold_committed_at"],
    )


def _files_in(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if not p.name.startswith("."))


def _run_backfill(ds: DataSet, work: Path, timeout: float) -> RunResult:
    landing, lake = work / "backfill" / "landing", work / "backfill" / "lake"
    landing.mkdir(parents=True)
    for path in ds.files:
        shutil.copy2(path, landing / path.name)
    log = work / "backfill.log"
    total = len(ds.files)
    child = _supervise(
        "backfill",
        _cli("backfill", lake, landing, "--no-progress"),
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
        result.error = f"exit {child.returncode}: {_tail(log)}"
    if (lake / "_ledger").exists():
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
        _generate(args, staging, batches=batches, seed=SEED + 1, start=args.files + 1)
        for path in staging.iterdir():
            if file_entity(path) == "products":
                path.unlink()
        seed_files = _files_in(staging)
    for path in ds.product_files:
        shutil.copy2(path, staging / path.name)
    print(f"watch: backfilling {_files_in(staging)} files into the watch lake", flush=True)
    started = time.monotonic()
    proc = subprocess.run(
        _cli("backfill", lake, staging, "--no-progress"),
        env=_env(),
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


def _run_watch(args: argparse.Namespace, ds: DataSet, work: Path) -> RunResult:
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
            _cli("watch", lake, landing),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
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
        result.notes.append(f"daemon exit {daemon.returncode}: {_tail(log)}")
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
    """Wait for the heartbeat, drop the files at ``--pace`` and collect their latencies."""
    heartbeat = lake / "_daemon" / "heartbeat.json"
    while not heartbeat.exists():
        if daemon.poll() is not None:
            result.error = f"daemon exited with {daemon.returncode} before its first heartbeat"
            return
        if time.monotonic() - spawned > args.timeout:
            return
        time.sleep(POLL)
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


# -- the report ---------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU count, platform, Python and the versions of the libraries that matter."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None


def _vs_backfill(result: RunResult, backfill: RunResult | None) -> tuple[str, float | None]:
    if result.name in ("backfill", "watch") or not backfill or not backfill.finished:
        return ("n/a (paced)" if result.name == "watch" else "n/a"), None
    if not result.total_s or not backfill.total_s:
        return "n/a", None
    ratio = result.total_s / backfill.total_s
    if result.name == "floor":
        # The floor is faster: say how far backfill is above it (the target is within 5x).
        return f"backfill/floor = {1 / ratio:.1f}x", ratio
    sign = "=" if result.finished else ">"
    return f"{result.name}/backfill {sign} {ratio:.1f}x", ratio


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_table(results: list[RunResult], timeout: float) -> list[str]:
    """The comparison table, one runner a line."""
    backfill = next((r for r in results if r.name == "backfill"), None)
    head = (
        f"{'runner':<9}{'files':>11}{'orders':>10}{'total s':>9}{'orders/s':>10}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'growth':>8}{'peak MB':>9}  vs backfill"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        stats = (
            latency_stats(r.latencies_ms)
            if r.name != "backfill"
            else dict.fromkeys(("p50_ms", "p95_ms", "max_ms", "growth"))
        )
        lines.append(
            f"{r.name:<9}{f'{r.files_done}/{r.files_total}':>11}{r.orders:>10,}"
            f"{_fmt(r.total_s, '.1f'):>9}{_fmt(_rate(r.orders, r.total_s), ',.0f'):>10}"
            f"{_fmt(stats['p50_ms'], '.0f'):>9}{_fmt(stats['p95_ms'], '.0f'):>9}"
            f"{_fmt(stats['max_ms'], '.0f'):>9}{_fmt(stats['growth'], '.2f'):>8}"
            f"{_fmt(r.peak_rss_mb, '.0f'):>9}  {_vs_backfill(r, backfill)[0]}"
        )
    for r in results:
        if r.status(timeout) != "ok" or r.notes:
            lines.append(f"{r.name}: {'; '.join([r.status(timeout), *r.notes])}")
    return lines


def _write_json(target: Path, data: dict[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, target)


# -- the command --------------------------------------------------------------------------
def _check(args: argparse.Namespace) -> list[str]:
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(RUNNERS))
    if unknown or not only:
        raise ConfigError(
            f"--only: unknown runner(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(RUNNERS)}"
        )
    for flag in ("files", "orders_per_file", "product_files", "products", "steady_files"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.timeout <= 0 or args.pace < 0 or args.seed_orders < 0:
        raise ConfigError("--timeout must be > 0, --pace and --seed-orders >= 0")
    return [name for name in RUNNERS if name in only]


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Run the benchmark, print the table and write the JSON; 1 when a runner failed outright."""
    runners = _check(args)
    if args.workdir:
        work = Path(args.workdir).absolute()
    else:
        work = Path(tempfile.mkdtemp(prefix="ecom-bench-"))
    started_at = datetime.now(UTC)
    try:
        for name in ("source", *RUNNERS):
            shutil.rmtree(work / name, ignore_errors=True)
        (work / "source").mkdir(parents=True)
        print(
            f"bench: generating {args.files} order files x {args.orders_per_file} orders and "
            f"{args.product_files} product files in {work}",
            flush=True,
        )
        ds = make_data_set(args, work / "source")
        results = []
        for name in runners:
            print(f"{name}: starting", flush=True)
            if name in PEERS:
                result = _run_peer(name, ds, work / "source", work, args.timeout)
            elif name == "backfill":
                result = _run_backfill(ds, work, args.timeout)
            else:
                result = _run_watch(args, ds, work)
            print(
                f"{name}: {result.status(args.timeout)}, {result.files_done} files, "
                f"{_fmt(result.total_s, '.1f')} s",
                flush=True,
            )
            results.append(result)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    table = render_table(results, args.timeout)
    print("\n" + "\n".join(table), flush=True)
    backfill = next((r for r in results if r.name == "backfill"), None)
    steady = ds.order_files[: args.steady_files]
    data = {
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine_info(),
        "parameters": {
            k: getattr(args, k)
            for k in (
                "files",
                "orders_per_file",
                "product_files",
                "products",
                "seed_orders",
                "only",
                "timeout",
                "steady_files",
                "pace",
            )
        },
        "input": {
            "order_files": len(ds.order_files),
            "product_files": len(ds.product_files),
            "orders": ds.orders,
            "steady_orders": sum(ds.records[p.name] for p in steady),
            "products": sum(ds.records[p.name] for p in ds.product_files),
        },
        "runners": {
            r.name: {**r.to_json(args.timeout), "vs_backfill": _vs_backfill(r, backfill)[1]}
            for r in results
        },
        "table": table,
    }
    _write_json(Path(args.json_out), data)
    print(f"\nwrote {args.json_out}", flush=True)
    return 1 if any(r.error for r in results) else 0

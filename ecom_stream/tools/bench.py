"""``ecom-stream bench``: ecom-stream against the loops people write instead, on the same files.

One run generates a data set and then runs, one after another, each in its own process:

* ``floor``: read each file and append it to a Parquet dataset, nothing else (the I/O floor);
* ``naive``: per file, pandas cleaning, a default ``deltalake`` MERGE into unpartitioned silver
  tables, then daily revenue recomputed over the whole silver orders table (gold overwritten);
* ``tutorial``: per file, the whole batch pipeline re-run over every file received so far;
* ``backfill``: the real ``ecom-stream backfill`` (validation, bronze, silver, gold, ledger);
* ``watch``: the real daemon in steady state, fed one file at a time at a fixed pace, with the
  latency from drop to gold committed read from the lake's ledger;
* ``dashboard``: the dashboard on the backfill's lake (or ``--lake``) in headless Chromium: time
  to the first full view, and of its auto-refreshes (see ``bench_dashboard``).

The peers run as ``python -m ecom_stream.tools.bench_peers --runner NAME`` (see that module): they
append one JSON line per file to a progress file (so a peer stopped at ``--timeout`` still
reports how far it got) and their own peak RSS at the end. Results are ratios within one run,
never absolute seconds.
"""


from __future__ import annotations

import argparse
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ecom_stream.config import Settings
from ecom_stream.errors import ConfigError
from ecom_stream.tools.bench_dashboard import run_dashboard
from ecom_stream.tools.bench_ecom import run_backfill, run_watch
from ecom_stream.tools.bench_peers import PEERS
from ecom_stream.tools.bench_procs import DataSet, make_data_set, run_peer
from ecom_stream.tools.bench_report import (
    RunResult,
    fmt,
    latency_stats,
    machine_info,
    render_table,
    vs_backfill,
    write_json,
)

__all__ = ["RunResult", "latency_stats", "run_bench"]

RUNNERS = ("floor", "naive", "tutorial", "backfill", "watch", "dashboard")


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
        ds = _data_set(args, runners, work)
        results = [_run_one(name, args, ds, work) for name in runners]
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    table = render_table(results, args.timeout)
    print("\n" + "\n".join(table), flush=True)
    data = _results_json(args, ds, results, table, started_at)
    write_json(Path(args.json_out), data)
    print(f"\nwrote {args.json_out}", flush=True)
    return 1 if any(r.error for r in results) else 0


def _data_set(args: argparse.Namespace, runners: list[str], work: Path) -> DataSet:
    """Generate the files, unless only the dashboard runs (on a lake that exists)."""
    # The dashboard runner without the backfill one reads an earlier run's lake: keep it.
    keep = {"backfill"} if "dashboard" in runners and "backfill" not in runners else set()
    for name in ("source", *RUNNERS):
        if name not in keep:
            shutil.rmtree(work / name, ignore_errors=True)
    if runners == ["dashboard"]:
        return DataSet([], [], {})
    (work / "source").mkdir(parents=True)
    print(
        f"bench: generating {args.files} order files x {args.orders_per_file} orders and "
        f"{args.product_files} product files in {work}",
        flush=True,
    )
    return make_data_set(args, work / "source")


def _run_one(name: str, args: argparse.Namespace, ds: DataSet, work: Path) -> RunResult:
    """Run one runner, printing a line before and after."""
    print(f"{name}: starting", flush=True)
    if name in PEERS:
        result = run_peer(name, ds, work / "source", work, args.timeout)
    elif name == "backfill":
        result = run_backfill(ds, work, args.timeout)
    elif name == "dashboard":
        result = run_dashboard(args, work)
    else:
        result = run_watch(args, ds, work)
    print(
        f"{name}: {result.status(args.timeout)}, {result.files_done} files, "
        f"{fmt(result.total_s, '.1f')} s",
        flush=True,
    )
    return result


def _results_json(
    args: argparse.Namespace,
    ds: DataSet,
    results: list[RunResult],
    table: list[str],
    started_at: datetime,
) -> dict[str, Any]:
    """The results file's content: machine, parameters, input sizes, each runner, the table."""
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
            r.name: {**r.to_json(args.timeout), "vs_backfill": vs_backfill(r, backfill)[1]}
            for r in results
        },
        "table": table,
    }
    return data

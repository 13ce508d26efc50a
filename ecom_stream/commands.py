"""One function per CLI subcommand; heavy modules are imported inside, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ecom_stream.config import Settings
from ecom_stream.errors import ConfigError, EcomStreamError

__all__: list[str] = []

EXIT_OK, EXIT_QUARANTINED = 0, 3


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.generate import GenerateOptions, generate

    for flag in ("batches", "orders_per_batch", "products", "product_batches"):
        if getattr(args, flag) < (0 if flag == "batches" else 1):
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    out = Path(args.out) if args.out else settings.landing_dir
    options = GenerateOptions(
        out=out,
        batches=args.batches,
        orders_per_batch=args.orders_per_batch,
        products=args.products,
        product_batches=args.product_batches,
        seed=args.seed,
        interval=args.interval,
        start=args.start,
        catalogue=not args.no_products,
    )
    paths = generate(options, on_file=lambda p: print(f"wrote {p}") if args.interval else None)
    print(f"generated {len(paths)} files in {out}")
    return EXIT_OK


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.backfill import run_backfill

    folder = Path(args.dir) if args.dir else None
    summary = run_backfill(settings, folder, keep=args.keep, progress=not args.no_progress)
    print(f"backfill: {summary.text()}")
    if args.strict and summary.outcomes.get("quarantined"):
        print(
            "backfill: some files were quarantined (see `ecom-stream quarantine`)", file=sys.stderr
        )
        return EXIT_QUARANTINED
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.status import lake_status

    status = lake_status(settings)
    if args.json:
        _print_json(status)
        return EXIT_OK
    print(f"lake     {status['lake']}")
    print(f"landing  {status['landing']} ({status['backlog']} files waiting)")
    if status.get("message"):
        print(status["message"])
    if status["tables"]:
        print(f"\n{'table':<26}{'version':>8}{'rows':>12}{'files':>8}")
        for name, t in status["tables"].items():
            if "error" in t:
                print(f"{name:<26} error: {t['error']}")
            else:
                print(f"{name:<26}{t['version']:>8}{t['rows']:>12,}{t['files']:>8}")
        batches = ", ".join(f"{n} {k}" for k, n in sorted(status["batches"].items())) or "none yet"
        print(f"\nbatches: {batches}")
        print(
            f"newest batch: {status['newest_batch_file'] or '-'} "
            f"at {status['newest_batch_at'] or '-'}"
        )
    daemon = status["daemon"]
    if daemon:
        state = "alive" if daemon["alive"] else "stopped" if daemon.get("stopped") else "stale"
        print(
            f"daemon: {state} (pid {daemon.get('pid')}, heartbeat {daemon['age_seconds']} s ago, "
            f"{daemon.get('files_processed', 0)} files, queue {daemon.get('queue', 0)}, "
            f"last error: {daemon.get('last_error') or 'none'})"
        )
    else:
        print("daemon: never ran on this lake")
    _print_quarantine(status["quarantine"])
    return EXIT_OK


def _print_quarantine(items: list[dict[str, Any]]) -> None:
    if not items:
        print("quarantine: empty")
        return
    print(f"quarantine: {len(items)} file(s)")
    for item in items:
        print(f"  {item['file']}: {item['reason']}")


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.lake import Lake
    from ecom_stream.status import quarantine_list

    items = quarantine_list(Lake(settings.lake_dir))
    if args.json:
        _print_json(items)
    else:
        _print_quarantine(items)
    return EXIT_OK


def cmd_requeue(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.requeue import requeue

    if not args.all and not args.names:
        raise ConfigError("name the quarantined file(s) to requeue, or pass --all")
    moved = requeue(settings, None if args.all else args.names)
    for src, dst in moved:
        print(f"requeued {src.name} -> {dst}")
    print(f"requeued {len(moved)} file(s); they are processed like new ones")
    return EXIT_OK


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.rebuild import rebuild

    summary = rebuild(settings, Path(args.into))
    print(f"rebuild into {args.into}: {summary.text()}")
    return EXIT_OK


def cmd_rebuild_gold(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.lake import Lake
    from ecom_stream.lock import LakeLock
    from ecom_stream.refresh import GoldRefresher

    lake = Lake(settings.lake_dir)
    if not lake.exists():
        raise EcomStreamError(f"no lake at {lake.root}: nothing to rebuild")
    with LakeLock(lake.lock_path, "rebuild-gold"):
        lake.ensure_tables()
        GoldRefresher(lake, settings).rebuild()
    print(
        f"gold rebuilt: {lake.count('daily_revenue')} daily rows, "
        f"{lake.count('revenue_anomalies')} anomaly rows"
    )
    return EXIT_OK


def cmd_anomalies(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.lake import Lake

    lake = Lake(settings.lake_dir)
    if not lake.exists():
        raise EcomStreamError(f"no lake at {lake.root}: run a backfill or the daemon first")
    flagged = lake.read_pandas("revenue_anomalies")
    flagged = flagged[flagged["is_anomaly"].fillna(False).astype(bool)]
    if args.category:
        flagged = flagged[flagged["category"] == args.category]
    flagged = flagged.sort_values(["order_date", "category"]).reset_index(drop=True)
    if args.export:
        target = Path(args.export)
        if target.suffix != ".parquet":
            raise ConfigError(f"--export {target}: the file name must end in .parquet")
        target.parent.mkdir(parents=True, exist_ok=True)
        flagged.to_parquet(target, index=False)
        print(f"wrote {len(flagged)} anomalies to {target}")
    else:
        if flagged.empty:
            print("no anomalies flagged")
        for row in flagged.itertuples():
            print(
                f"{row.order_date} {row.category:<12} revenue {row.revenue:>12,.2f} "
                f"mean {row.rolling_mean:>12,.2f} z {row.z_score:+.2f}"
            )
    return EXIT_OK


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.report import build_report

    report = build_report(settings)
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.daemon import run_daemon

    return run_daemon(settings)


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.serve import serve_dashboard

    return serve_dashboard(settings)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.demo import run_demo

    return run_demo(
        settings,
        interval=args.interval,
        orders_per_batch=args.orders_per_batch,
        history_batches=args.history_batches,
    )


def cmd_maintain(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.maintain import maintain

    if args.retention_hours is not None:
        settings = settings.replace(vacuum_retention_hours=args.retention_hours)
    for line in maintain(settings, dry_run=args.dry_run):
        print(line)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.bench import run_bench

    return run_bench(args, settings)

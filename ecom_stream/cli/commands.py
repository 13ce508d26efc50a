"""One function per CLI subcommand; heavy modules are imported inside, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ecom_stream.config import Settings
from ecom_stream.errors import ConfigError, EcomStreamError, UsageError

__all__: list[str] = []

EXIT_OK, EXIT_QUARANTINED = 0, 3


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.tools.generate import GenerateOptions, generate

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
    from ecom_stream.engine.backfill import run_backfill
    from ecom_stream.storage.folders import check_lake_to_write, landing_folder

    folder = Path(args.dir) if args.dir else settings.landing_dir
    landing_folder(folder, create=args.create)
    check_lake_to_write(settings.lake_dir)
    summary = run_backfill(settings, folder, keep=args.keep, progress=not args.no_progress)
    print(f"backfill: {summary.text()}")
    if args.strict and summary.outcomes.get("quarantined"):
        print(
            "backfill: some files were quarantined (see `ecom-stream quarantine`)", file=sys.stderr
        )
        return EXIT_QUARANTINED
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.service.status import lake_status
    from ecom_stream.storage.folders import check_lake_to_read

    check_lake_to_read(settings.lake_dir)
    status = lake_status(settings)
    if args.json:
        _print_json(status)
        return _damage_exit(status["damage"])
    print(f"lake     {status['lake']}")
    print(f"landing  {status['landing']} ({status['backlog']} files waiting)")
    if status.get("message"):
        print(status["message"])
    for item in status["damage"]:
        print(f"damaged  {item['table'] or status['lake']}: {item['problem']}")
    if status["damage"]:
        print(f"way out: {status['damage'][0]['fix']}")
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
    _print_sources(status.get("sources") or {})
    _print_quarantine(status["quarantine"])
    return _damage_exit(status["damage"])


def _damage_exit(damage: list[dict[str, Any]]) -> int:
    """A damaged lake makes ``status`` fail (exit 1) with one line on stderr."""
    if not damage:
        return EXIT_OK
    what = ", ".join(d["table"] or "the lake" for d in damage)
    print(
        f"ecom-stream status: error: the lake is damaged ({what}): {damage[0]['fix']}",
        file=sys.stderr,
    )
    return 1


def _print_sources(sources: dict[str, Any]) -> None:
    """The last pull of each REST source endpoint: reported, landed, merged."""
    for e in sources.get("endpoints", []):
        check = {True: "balanced", False: "MISMATCH", None: "unchecked"}[e["balanced"]]
        print(
            f"pulled {e['endpoint']} from {e['source']} at {e['pulled_at']}: {e['outcome']}, "
            f"source reported {e['reported_total']}, landed {e['records_landed']} "
            f"({e['overlap']} overlap), merged {e['rows_merged']} "
            f"({e['files_waiting']} files waiting): {check}"
        )


def _print_quarantine(items: list[dict[str, Any]]) -> None:
    if not items:
        print("quarantine: empty")
        return
    print(f"quarantine: {len(items)} file(s)")
    for item in items:
        print(f"  {item['file']}: {item['reason']}")


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.service.status import quarantine_list
    from ecom_stream.storage.folders import check_lake_to_read
    from ecom_stream.storage.lake import Lake

    check_lake_to_read(settings.lake_dir)
    items = quarantine_list(Lake(settings.lake_dir))
    if args.json:
        _print_json(items)
    else:
        _print_quarantine(items)
    return EXIT_OK


def cmd_requeue(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.engine.requeue import requeue

    if not args.all and not args.names:
        raise UsageError("name the quarantined file(s) to requeue, or pass --all")
    if args.as_name is not None and (args.all or len(args.names) != 1):
        raise UsageError("--as renames one file: name exactly one quarantined file, not --all")
    moved = requeue(settings, None if args.all else args.names, as_name=args.as_name)
    from ecom_stream.transform.parse import display_name

    for src, dst in moved:
        # display_name: the restored name may hold a line break or bytes that are not UTF-8.
        print(f"requeued {src.name} -> {dst.parent / display_name(dst.name)}")
    print(f"requeued {len(moved)} file(s); they are processed like new ones")
    return EXIT_OK


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.engine.rebuild import rebuild

    summary = rebuild(settings, Path(args.into))
    print(f"rebuild into {args.into}: {summary.text()}")
    return EXIT_OK


def cmd_rebuild_gold(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.engine.refresh import GoldRefresher
    from ecom_stream.storage.lake import Lake

    lake = Lake(settings.lake_dir, log_retention=settings.log_retention_interval)
    if not lake.tables.exists():
        raise EcomStreamError(f"no lake at {lake.root}: nothing to rebuild")
    with lake.writer_lock("rebuild-gold"):
        lake.ensure_tables()
        GoldRefresher(lake, settings).rebuild()
    print(
        f"gold rebuilt: {lake.queries.count('daily_revenue')} daily rows, "
        f"{lake.queries.count('revenue_anomalies')} anomaly rows"
    )
    return EXIT_OK


def cmd_anomalies(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.storage.lake import Lake

    lake = Lake(settings.lake_dir)
    if not lake.tables.exists():
        raise EcomStreamError(f"no lake at {lake.root}: run a backfill or the daemon first")
    scored = lake.tables.read_pandas("revenue_anomalies")
    if args.category:
        known = sorted(scored["category"].dropna().unique())
        if args.category not in known:
            raise ConfigError(
                f"unknown category {args.category!r}: the lake has "
                + (", ".join(known) if known else "no categories yet")
            )
        scored = scored[scored["category"] == args.category]
    flagged = scored[scored["is_anomaly"].fillna(False).astype(bool)]
    flagged = flagged.sort_values(["order_date", "category"]).reset_index(drop=True)
    if args.export:
        target = Path(args.export)
        if target.suffix != ".parquet":
            raise ConfigError(f"--export {target}: the file name must end in .parquet")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            flagged.to_parquet(target, index=False)
        except OSError as exc:
            raise EcomStreamError(f"cannot write {target}: {exc.strerror or exc}") from exc
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
    from ecom_stream.service.report import build_report

    report = build_report(settings)
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        try:
            Path(args.out).write_text(text + "\n")
        except OSError as exc:
            raise EcomStreamError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
        print(f"wrote {args.out}")
    else:
        print(text)
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.service.daemon import run_daemon
    from ecom_stream.storage.folders import check_lake_to_write, landing_folder

    landing_folder(settings.landing_dir, create=args.create)
    check_lake_to_write(settings.lake_dir)
    return run_daemon(settings, create_landing=args.create)


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.dashboard.serve import serve_dashboard

    return serve_dashboard(settings)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.tools.demo import run_demo

    return run_demo(
        settings,
        interval=args.interval,
        orders_per_batch=args.orders_per_batch,
        history_batches=args.history_batches,
        source=args.source,
    )


def cmd_maintain(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.service.maintain import maintain

    if args.retention_hours is not None:
        settings = settings.replace(vacuum_retention_hours=args.retention_hours)
    for line in maintain(settings, dry_run=args.dry_run):
        print(line)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.tools.bench import run_bench

    return run_bench(args, settings)


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.cli.main import resolve_args
    from ecom_stream.config import Origin

    resolved = resolve_args(args)
    rows = []
    for name, value in effective_values(resolved.settings).items():
        origin = resolved.origins.get(name, Origin("default"))
        rows.append({"name": name, "value": value, "source": origin.source, "from": origin.detail})
    if args.json:
        path = str(resolved.path.absolute()) if resolved.path else None
        _print_json({"file": path, "settings": rows})
        return EXIT_OK
    print(f"config file: {resolved.path.absolute() if resolved.path else 'none'}")
    width = max(len(r["name"]) for r in rows) + 2
    for r in rows:
        where = f"{r['source']} {r['from']}".rstrip()
        print(f"{r['name']:<{width}}{json.dumps(r['value'], default=str):<28} {where}")
    return EXIT_OK


def effective_values(settings: Settings) -> dict[str, Any]:
    """Every setting as plain JSON values; policies one per expectation (``policies.NAME``)."""
    from dataclasses import fields

    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name == "policies":
            out.update({f"policies.{k}": v for k, v in sorted(value.items())})
        elif f.name == "extra_rules":
            out[f.name] = [rule.name for rule in value]
        elif isinstance(value, Path):
            out[f.name] = str(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def cmd_service_unit(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.cli.main import resolve_args
    from ecom_stream.service.unit import CONTAINERFILE, systemd_unit

    if args.containerfile:
        print(CONTAINERFILE, end="")
        return EXIT_OK
    workdir = Path(args.workdir) if args.workdir else None
    config = resolve_args(args).path if args.config else None
    print(systemd_unit(settings, workdir=workdir, user=args.user, config=config), end="")
    return EXIT_OK


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    from ecom_stream.service.pull import run_pull
    from ecom_stream.storage.folders import check_lake_to_write, landing_folder

    if not settings.pull_url:
        raise UsageError("give the API's base URL with --url (or ECOM_PULL_URL)")
    landing_folder(settings.landing_dir, create=args.create)
    check_lake_to_write(settings.lake_dir)
    return run_pull(settings, None, once=args.once)


def cmd_serve_api(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from ecom_stream.service.signals import stop_signals
    from ecom_stream.tools.generate import GenerateOptions
    from ecom_stream.tools.serve_api import SimulatedApi, serving

    options = GenerateOptions(
        out=settings.landing_dir,
        batches=args.batches,
        orders_per_batch=args.orders_per_batch,
        products=args.products,
        seed=args.seed,
    )
    api = SimulatedApi(options)
    token = settings.pull_token or None
    with stop_signals() as signals, serving(
        api, args.api_port, token=token, interval=args.interval
    ) as url:
        print(f"serving the simulated source at {url} (Ctrl-C stops)", flush=True)
        while not signals.received:
            time.sleep(0.2)
    return EXIT_OK

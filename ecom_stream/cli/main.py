"""The ``ecom-stream`` command: argparse subcommands mapping errors to exit codes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ecom_stream import __version__
from ecom_stream.cli.pull_args import add_pull_commands
from ecom_stream.config import Settings
from ecom_stream.config_file import Resolved, resolve
from ecom_stream.errors import EcomStreamError, UsageError
from ecom_stream.logs import configure_logging

__all__ = ["main", "run"]

logger = logging.getLogger(__name__)
EXIT_ERROR, EXIT_USAGE = 1, 2  # 0 and 3 (backfill --strict) come from the commands


def _common(defaults: bool) -> argparse.ArgumentParser:
    """Global options, accepted before or after the subcommand.

    Subcommands get SUPPRESS defaults so that they do not overwrite a value given before them.
    """
    common = argparse.ArgumentParser(add_help=False)
    none = None if defaults else argparse.SUPPRESS
    common.add_argument(
        "--landing",
        metavar="PATH",
        default=none,
        help="drop folder (default ./landing, env ECOM_LANDING)",
    )
    common.add_argument(
        "--lake", metavar="PATH", default=none, help="lake folder (default ./lake, env ECOM_LAKE)"
    )
    common.add_argument(
        "--config",
        metavar="FILE",
        default=none,
        help="settings file (default ./ecom-stream.toml if present, env ECOM_CONFIG)",
    )
    common.add_argument(
        "--log-json", action="store_true", default=none, help="log one JSON object per line"
    )
    common.add_argument(
        "--log-level", metavar="LEVEL", default=none, help="DEBUG, INFO (default), WARNING, ERROR"
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="show tracebacks on errors",
    )
    return common


_Add = Callable[[str, str], argparse.ArgumentParser]
"""Adds one subcommand (name, help) with the common flags; returns its parser."""


def _parser() -> argparse.ArgumentParser:
    """The ``ecom-stream`` parser: common flags, then one subcommand per group helper."""
    common = _common(defaults=False)
    parser = argparse.ArgumentParser(
        prog="ecom-stream",
        description="Incremental e-commerce pipeline: JSON -> Great Expectations -> Delta Lake.",
        parents=[_common(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"ecom-stream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, parents=[common])

    _add_generate(add)
    _add_lake_commands(add)
    _add_service_commands(add)
    _add_bench(add)
    _add_config(add)
    _add_service_unit(add)
    add_pull_commands(add)
    return parser


def _add_generate(add: _Add) -> None:
    """``generate``: the simulated source."""
    p = add("generate", "write simulated product and order batch files")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the landing folder)")
    p.add_argument("--batches", type=int, default=10, help="order batch files (default 10)")
    p.add_argument(
        "--orders-per-batch", type=int, default=1000, help="orders per file (default 1000)"
    )
    p.add_argument("--products", type=int, default=500, help="catalogue size (default 500)")
    p.add_argument(
        "--product-batches", type=int, default=1, help="split products over K files (default 1)"
    )
    p.add_argument(
        "--seed", type=int, default=42, help="random seed: same seed, same bytes (default 42)"
    )
    p.add_argument(
        "--interval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="drip order files this many seconds apart (default 0: all at once)",
    )
    p.add_argument(
        "--start", type=int, default=1, help="number of the first order file (default 1)"
    )
    p.add_argument(
        "--no-products",
        action="store_true",
        help="write only order files (the lake already holds the catalogue)",
    )


def _add_lake_commands(add: _Add) -> None:
    """Commands that process, inspect or rebuild the lake."""
    p = add("backfill", "process every batch file in DIR (default: landing) and exit")
    p.add_argument(
        "dir", nargs="?", metavar="DIR", help="folder of batch files (default: the landing folder)"
    )
    p.add_argument("--strict", action="store_true", help="exit 3 when any file was quarantined")
    p.add_argument("--keep", action="store_true", help="leave the source files in place")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--create", action="store_true", help="create the folder if it is missing")

    p = add("status", "table versions, row and file counts, ledger outcomes, quarantine, daemon")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("quarantine", "list quarantined files with their reasons")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("requeue", "move quarantined files back to landing to be processed again")
    p.add_argument("names", nargs="*", metavar="NAME", help="quarantined file name(s)")
    p.add_argument("--all", action="store_true", help="requeue every quarantined file")
    p.add_argument(
        "--as",
        dest="as_name",
        metavar="NEW",
        help="put the one NAME back into landing under this name (for a file quarantined "
        "for its name)",
    )

    p = add("rebuild", "rebuild bronze, silver and gold from raw/ into a fresh lake")
    p.add_argument(
        "--into",
        metavar="PATH",
        required=True,
        help="the new lake folder (must not exist or be empty)",
    )

    add("rebuild-gold", "recompute the gold tables from silver from scratch")

    p = add("anomalies", "list flagged revenue anomalies")
    p.add_argument(
        "--export", metavar="FILE.parquet", help="write the flagged days to a Parquet file"
    )
    p.add_argument("--category", help="only this category (or All)")

    p = add("report", "product and order insights as JSON")
    p.add_argument("--out", metavar="FILE.json", help="write to a file instead of stdout")


def _add_service_commands(add: _Add) -> None:
    """The daemon, the dashboard, the demo and maintenance."""
    p = add("watch", "run the watcher daemon on the landing folder")
    p.add_argument(
        "--polling",
        action="store_true",
        default=None,
        help="poll instead of inotify (network filesystems)",
    )
    p.add_argument(
        "--create",
        action="store_true",
        help="create the landing folder if it is missing (also if it disappears later)",
    )
    _add_watch_observability(p)

    p = add("dashboard", "serve the Streamlit dashboard")
    p.add_argument("--port", type=int, help="port (default 8501)")
    p.add_argument("--address", help="bind address (default 127.0.0.1)")

    p = add("demo", "daemon + simulated source + dashboard on a local lake (Ctrl-C stops all)")
    p.add_argument("--port", type=int, help="dashboard port (default 8501)")
    p.add_argument(
        "--interval", type=float, default=3.0, help="seconds between simulated batches (default 3)"
    )
    p.add_argument(
        "--orders-per-batch", type=int, default=300, help="orders per simulated batch (default 300)"
    )
    p.add_argument(
        "--history-batches",
        type=int,
        default=90,
        help="days of history generated first, one batch a day (default 90)",
    )
    p.add_argument(
        "--source",
        choices=("files", "api"),
        default="files",
        help="files: batch files dropped in landing; api: serve-api and pull from it",
    )

    p = add("maintain", "compact small files, checkpoint and vacuum old files")
    p.add_argument("--retention-hours", type=int, help="vacuum files older than this (default 168)")
    p.add_argument("--dry-run", action="store_true", help="only show what vacuum would delete")


def _add_watch_observability(p: argparse.ArgumentParser) -> None:
    """``watch``'s metrics, health endpoints and alerts."""
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="serve /metrics, /healthz and /ready on this port (default: off; 0: any free port)",
    )  # fmt: skip
    p.add_argument("--metrics-host", metavar="ADDRESS",
                   help="address of the metrics port (default 127.0.0.1)")
    p.add_argument("--alert-url", metavar="URL",
                   help="POST JSON alerts to this webhook (default: no alerts)")


def _add_bench(add: _Add) -> None:
    """``bench``: ecom-stream against the loops people write instead."""
    p = add("bench", "benchmark ecom-stream against the alternatives")
    p.add_argument("--files", type=int, default=300, help="order files (default 300)")
    p.add_argument(
        "--orders-per-file", type=int, default=1000, help="orders per file (default 1000)"
    )
    p.add_argument("--product-files", type=int, default=5, help="product files (default 5)")
    p.add_argument("--products", type=int, default=2000, help="catalogue size (default 2000)")
    p.add_argument(
        "--seed-orders",
        type=int,
        default=0,
        help="grow the lake to about this many orders before the steady-state run",
    )
    p.add_argument(
        "--only",
        default="floor,naive,tutorial,backfill,watch",
        help="comma-separated runners (default all but dashboard, which needs Chromium)",
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="give up on a peer after this many seconds"
    )
    p.add_argument(
        "--steady-files", type=int, default=100, help="files dropped one by one into the daemon"
    )
    p.add_argument("--pace", type=float, default=0.5, help="seconds between steady-state drops")
    p.add_argument("--workdir", metavar="DIR", help="scratch folder (default: a temporary folder)")
    p.add_argument(
        "--json-out", metavar="FILE", default="bench-results/latest.json", help="results JSON"
    )


def _add_config(add: _Add) -> None:
    """``config``: every effective setting and where it came from."""
    p = add("config", "print every effective setting and where it came from")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_service_unit(add: _Add) -> None:
    """``service-unit``: the example systemd unit (or container file) for the daemon."""
    p = add("service-unit", "print a systemd unit running the daemon with these settings")
    p.add_argument("--user", help="run the service as this user (User=)")
    p.add_argument(
        "--workdir", metavar="DIR", help="working directory (default: the current one)"
    )
    p.add_argument(
        "--containerfile", action="store_true", help="print the example container file instead"
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Defaults < config file < ECOM_* environment < flags."""
    return resolve_args(args).settings


def resolve_args(args: argparse.Namespace) -> Resolved:
    """The settings of ``args`` with the origin of each (see ``ecom-stream config``)."""
    overrides: dict[str, Any] = {
        "landing_dir": args.landing,
        "lake_dir": args.lake,
        "log_json": args.log_json,
        "log_level": args.log_level,
        "polling": getattr(args, "polling", None),
        "dashboard_port": getattr(args, "port", None),
        "dashboard_address": getattr(args, "address", None),
        "metrics_port": getattr(args, "metrics_port", None),
        "metrics_host": getattr(args, "metrics_host", None),
        "alert_url": getattr(args, "alert_url", None),
        # pull
        "pull_url": getattr(args, "url", None),
        "pull_every_seconds": getattr(args, "every", None),
        "pull_page_size": getattr(args, "page_size", None),
        "pull_lag_seconds": getattr(args, "lag", None),
    }
    return resolve(overrides, os.environ, args.config)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        configure_logging(settings.log_level, json_lines=settings.log_json)
        from ecom_stream.cli import commands

        handler = getattr(commands, "cmd_" + args.command.replace("-", "_"))
        return int(handler(args, settings))
    except UsageError as exc:
        # One line, as argparse words its own errors, and its exit code.
        print(f"ecom-stream {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EcomStreamError as exc:
        if args.verbose:
            logger.exception("failed")
        print(f"ecom-stream {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"ecom-stream {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    from ecom_stream.engine.memory import tune_process

    tune_process()
    try:
        code = main()
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        # The reader went away (`ecom-stream quarantine --json | head -3`): stop quietly
        # with the status of a process killed by SIGPIPE, as Unix tools do. Output still
        # buffered goes to /dev/null so that no flush reports the broken pipe again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    # os._exit: skip interpreter teardown, where Arrow/Delta native threads can abort
    # the process with SIGABRT ("terminate called without an active exception": an I/O
    # thread wants the GIL during finalization); everything is committed and flushed.
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()

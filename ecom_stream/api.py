"""The public Python API: open a lake, process batch files, run the daemon, read tables.

Heavy modules (deltalake, pandas, Great Expectations) are imported inside the functions, so
``import ecom_stream`` (and the CLI's ``--help``) stays fast.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ecom_stream.config import Settings
from ecom_stream.contract.rules import Part, Rule
from ecom_stream.errors import ConfigError, EcomStreamError

if TYPE_CHECKING:
    import pandas as pd

    from ecom_stream.engine.backfill import BackfillSummary
    from ecom_stream.storage.lake import Lake
    from ecom_stream.transform.bookkeeping import FileOutcome

__all__ = [
    "PUBLIC_TABLES",
    "Part",
    "ProcessSummary",
    "Rule",
    "backfill",
    "open_lake",
    "process_files",
    "read_table",
    "run_daemon",
]

# Public table names (as in the README's lake layout) -> the lake's internal table names.
PUBLIC_TABLES: dict[str, str] = {
    "bronze.products": "bronze_products",
    "bronze.orders": "bronze_orders",
    "silver.products": "silver_products",
    "silver.orders": "silver_orders",
    "silver.order_lines": "silver_order_lines",
    "gold.daily_revenue": "daily_revenue",
    "gold.revenue_anomalies": "revenue_anomalies",
    "rejected_rows": "rejected_rows",
    "quality.validations": "quality_validations",
    "quarantine.records": "quarantine_records",
    "ledger": "ledger",
    "sources.pulls": "sources",
}


@dataclass
class ProcessSummary:
    """What :func:`process_files` did: one :class:`FileOutcome` per file handled."""

    outcomes: list[FileOutcome] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        """Number of files per outcome (``merged``, ``quarantined``, ``duplicate``, ...)."""
        return Counter(o.outcome for o in self.outcomes)

    def by_name(self) -> dict[str, str]:
        """File name -> outcome."""
        return {o.name: o.outcome for o in self.outcomes}

    @property
    def rows_merged(self) -> int:
        return sum(o.rows_merged for o in self.outcomes)

    @property
    def rows_rejected(self) -> int:
        return sum(o.rows_rejected for o in self.outcomes)


def _settings_for(lake_dir: Path, settings: Settings | None) -> Settings:
    base = settings if settings is not None else Settings.from_sources()
    return base.replace(lake_dir=Path(lake_dir))


def _lake_dir(lake_or_path: Lake | str | Path) -> Path:
    from ecom_stream.storage.lake import Lake

    return lake_or_path.root if isinstance(lake_or_path, Lake) else Path(lake_or_path)


def open_lake(path: str | Path, settings: Settings | None = None) -> Lake:
    """Open the lake at ``path``, creating its tables if it is new (as a writer would).

    Raises ``EcomStreamError`` when ``path`` is a file or a folder holding something else than
    a lake, ``LockError`` when another process is writing it, ``LakeDamagedError`` if damaged.
    """
    from ecom_stream.storage.folders import check_lake_to_write
    from ecom_stream.storage.lake import Lake

    root = Path(path)
    check_lake_to_write(root)
    lake = Lake(root)
    if not lake.tables.exists():
        with lake.writer_lock("open_lake"):
            lake.ensure_tables()
    return Lake(root)


def process_files(
    lake_or_path: Lake | str | Path,
    paths: Iterable[str | Path],
    settings: Settings | None = None,
    *,
    keep: bool = False,
) -> ProcessSummary:
    """Process these batch files once, like ``backfill`` does (same pipeline, same writer
    lock); the source files are removed afterwards unless ``keep``."""
    from ecom_stream.engine.pipeline import Pipeline
    from ecom_stream.storage.folders import check_lake_to_write
    from ecom_stream.storage.lake import Lake

    lake_dir = _lake_dir(lake_or_path)
    files = [Path(p) for p in paths]
    missing = [str(p) for p in files if not (p.exists() or p.is_symlink())]
    if missing:
        raise ConfigError(f"no such batch file: {', '.join(missing[:3])}")
    check_lake_to_write(lake_dir)
    summary = ProcessSummary()
    with Lake(lake_dir).writer_lock("process_files"):
        pipeline = Pipeline(_settings_for(lake_dir, settings), keep_source=keep)
        pipeline.process(files, on_outcome=summary.outcomes.append)
    return summary


def backfill(
    landing: str | Path,
    lake: Lake | str | Path,
    settings: Settings | None = None,
    *,
    keep: bool = False,
) -> BackfillSummary:
    """Process every batch file in ``landing`` into ``lake`` (``ecom-stream backfill``)."""
    from ecom_stream.engine.backfill import run_backfill
    from ecom_stream.storage.folders import check_lake_to_write, landing_folder

    folder = landing_folder(Path(landing), create=False)
    lake_dir = _lake_dir(lake)
    check_lake_to_write(lake_dir)
    cfg = _settings_for(lake_dir, settings).replace(landing_dir=folder)
    return run_backfill(cfg, folder, keep=keep, progress=False)


def run_daemon(settings: Settings, *, create_landing: bool = False) -> int:
    """Watch ``settings.landing_dir`` until SIGINT/SIGTERM (``ecom-stream watch``); blocks and
    returns the exit code."""
    from ecom_stream.service.daemon import run_daemon as _run_daemon
    from ecom_stream.storage.folders import check_lake_to_write, landing_folder

    landing_folder(settings.landing_dir, create=create_landing)
    check_lake_to_write(settings.lake_dir)
    return _run_daemon(settings, create_landing=create_landing)


def read_table(
    lake: Lake | str | Path,
    name: str,
    columns: Sequence[str] | None = None,
    filters: str | None = None,
) -> pd.DataFrame:
    """A table by its public name (``"silver.orders"``, ``"gold.daily_revenue"``, see
    ``PUBLIC_TABLES``) as a DataFrame; ``filters`` is a SQL predicate on partitions and file
    statistics, e.g. ``"order_month = '2024-01'"`` (it prunes files, not rows)."""
    from ecom_stream.storage.folders import check_lake_to_read
    from ecom_stream.storage.lake import Lake

    if name not in PUBLIC_TABLES:
        raise ConfigError(f"unknown table {name!r}: the tables are {', '.join(PUBLIC_TABLES)}")
    handle = lake if isinstance(lake, Lake) else Lake(Path(lake))
    check_lake_to_read(handle.root)
    if not handle.tables.exists():
        raise EcomStreamError(f"no lake at {handle.root}: run a backfill or the daemon first")
    return handle.tables.read_pandas(PUBLIC_TABLES[name], columns=columns, files=filters)


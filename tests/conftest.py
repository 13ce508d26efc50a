"""Project-internal test helpers (table snapshots, the CLI runner); the fixtures for a temporary
lake come from the package's pytest plugin, ``ecom_stream.testing.plugin``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pytest

from ecom_stream.config import Settings
from ecom_stream.storage.lake import Lake
from ecom_stream.testing import plugin

REPO = Path(__file__).resolve().parent.parent

# Columns that legitimately differ between two runs over the same files.
VOLATILE = {
    "_ingested_at",
    "rejected_at",
    "validated_at",
    "quarantined_at",
    "received_at",
    "finished_at",
    # An arrival id includes the file's inode: two copies of a file are two arrivals.
    "_arrival_id",
    "arrival_id",
}
COMPARED_TABLES = (
    "silver_products",
    "silver_orders",
    "silver_order_lines",
    "daily_revenue",
    "revenue_anomalies",
)


def pytest_configure(config: pytest.Config) -> None:
    """Load the package's pytest plugin unless its entry point (an installed ecom-stream) or
    ``-p ecom_stream.testing.plugin`` already did: registering it twice is an error. It is
    registered under its module name, the name ``-p`` (handled after conftests) looks up."""
    manager = config.pluginmanager
    if not manager.has_plugin("ecom_stream") and not manager.is_registered(plugin):
        manager.register(plugin, plugin.__name__)


# Our tests' historical names for the plugin's fixtures.
@pytest.fixture
def settings(ecom_settings: Settings) -> Settings:
    return ecom_settings


@pytest.fixture
def write_batch(drop_batch: Callable[..., Path]) -> Callable[..., Path]:
    return drop_batch


def snapshot(lake_dir: Path, tables: Sequence[str] = COMPARED_TABLES) -> dict[str, pd.DataFrame]:
    """Tables as sorted DataFrames without volatile columns, for equality checks."""
    lake = Lake(lake_dir)
    out = {}
    for name in tables:
        df = lake.tables.read(name).to_pandas()
        df = df[[c for c in df.columns if c not in VOLATILE]]
        for col in df.columns if not df.empty else ():  # an empty table: nothing to convert
            if df[col].map(lambda v: isinstance(v, list | tuple) or hasattr(v, "tolist")).any():
                df[col] = df[col].map(lambda v: tuple(v) if v is not None else None)
        out[name] = df.sort_values(list(df.columns)).reset_index(drop=True)
    return out


def assert_same_tables(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_dtype=True, obj=name)


def run_cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ecom_stream ARGS`` in a subprocess."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ecom_stream", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,
    )

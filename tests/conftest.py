"""Shared fixtures: temporary landing and lake folders, batch writers, table snapshots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ecom_stream.config import Settings
from ecom_stream.storage.lake import Lake

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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    return Settings(landing_dir=landing, lake_dir=lake)


@pytest.fixture
def write_batch(settings: Settings) -> Callable[..., Path]:
    """Write records as a batch file (JSON array by default) into landing or ``folder``."""

    def write(
        name: str,
        records: Sequence[dict[str, Any]],
        *,
        folder: Path | None = None,
        lines: bool = False,
    ) -> Path:
        target = (folder or settings.landing_dir) / name
        if lines:
            text = "\n".join(json.dumps(r) for r in records) + "\n"
        else:
            text = json.dumps(list(records))
        target.write_text(text)
        return target

    return write


def snapshot(lake_dir: Path, tables: Sequence[str] = COMPARED_TABLES) -> dict[str, pd.DataFrame]:
    """Tables as sorted DataFrames without volatile columns, for equality checks."""
    lake = Lake(lake_dir)
    out = {}
    for name in tables:
        df = lake.read(name).to_pandas()
        df = df[[c for c in df.columns if c not in VOLATILE]]
        for col in df.columns:
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

"""Crash safety: kill -9 a real backfill at random moments, restart, compare with a clean run."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, assert_same_tables, run_cli, snapshot

from ecom_stream.storage.lake import Lake

pytestmark = pytest.mark.slow


def _generate(folder: Path) -> None:
    result = run_cli(
        "generate",
        "--out",
        str(folder),
        "--batches",
        "40",
        "--orders-per-batch",
        "150",
        "--products",
        "120",
        "--product-batches",
        "2",
        "--seed",
        "7",
    )
    assert result.returncode == 0, result.stderr
    # One large JSON Lines file (1,200 orders of eight batches) that the micro-batch bound of
    # 300 rows cuts into four pieces: a kill can land between the commits of its pieces.
    parts = sorted(folder.glob("orders-*.json"))[-8:]
    rows = [json.dumps(r) for p in parts for r in json.loads(p.read_text())]
    (folder / parts[0].name.replace(".json", ".jsonl")).write_text("\n".join(rows) + "\n")
    for p in parts:
        p.unlink()


def test_kill_minus_nine_then_restart_equals_clean_run(tmp_path: Path) -> None:
    source = tmp_path / "source"
    _generate(source)

    clean_landing, clean_lake = tmp_path / "clean-landing", tmp_path / "clean-lake"
    shutil.copytree(source, clean_landing)
    # Small micro-batches so that a kill can land between many commits.
    env = {"ECOM_MICROBATCH_MAX_FILES": "2", "ECOM_MICROBATCH_MAX_ROWS": "300"}
    done = run_cli(
        "--landing",
        str(clean_landing),
        "--lake",
        str(clean_lake),
        "backfill",
        "--no-progress",
        env=env,
    )
    assert done.returncode == 0, done.stderr

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    shutil.copytree(source, landing)
    rng = random.Random(1234)
    kills = 0
    cmd = [
        sys.executable,
        "-m",
        "ecom_stream",
        "--landing",
        str(landing),
        "--lake",
        str(lake),
        "backfill",
        "--no-progress",
    ]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    for _attempt in range(6):
        proc = subprocess.Popen(
            cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        started = time.monotonic()
        # Wait until the process is past start-up (it has committed something), then kill at random.
        while time.monotonic() - started < 60 and proc.poll() is None:
            ledger = lake / "_ledger" / "_delta_log"
            if ledger.exists() and len(list(ledger.glob("*.json"))) > 1:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.8))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if not any(p for p in landing.iterdir() if not p.name.startswith(".")):
            break
    final = run_cli(
        "--landing", str(landing), "--lake", str(lake), "backfill", "--no-progress", env=env
    )
    assert final.returncode == 0, final.stderr
    assert kills >= 2, "the backfill finished before it could be killed twice: make the data larger"

    assert_same_tables(snapshot(lake), snapshot(clean_lake))
    # Bronze and rejected rows: no row twice, none lost.
    bronze = ["bronze_orders", "bronze_products", "rejected_rows"]
    assert_same_tables(snapshot(lake, bronze), snapshot(clean_lake, bronze))
    outcomes = Lake(lake).tables.read_pandas("ledger").groupby("outcome").size().to_dict()
    clean_ledger = Lake(clean_lake).tables.read_pandas("ledger")
    clean_outcomes = clean_ledger.groupby("outcome").size().to_dict()
    assert outcomes == clean_outcomes

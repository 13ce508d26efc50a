"""``ecom-stream bench``: the report's arithmetic in-process, then real runs on a tiny data set.

The slow tests run the whole benchmark in a subprocess (it starts the real daemon and the real
backfill, each importing Great Expectations) and check the JSON for completeness and sanity:
every runner present, order counts equal to the input, positive ratios. Nothing asserts speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from ecom_stream.cli.main import main
from ecom_stream.tools.bench import RunResult, latency_stats, render_table

TINY = ("--files", "6", "--orders-per-file", "50", "--product-files", "1", "--products", "50")
PEERS = ("floor", "naive", "tutorial")


def bench(tmp_path: Path, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Run ``ecom-stream bench`` in a subprocess on ``tmp_path``; returns the JSON it wrote."""
    out = tmp_path / "results" / "latest.json"
    result = run_cli("bench", *args, "--workdir", str(tmp_path / "work"), "--json-out", str(out),
                     timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["table"][0].split()[0] == "runner"
    assert "\n".join(data["table"]) in result.stdout  # the printed table is the JSON's table
    return data


# -- in-process ----------------------------------------------------------------------------
def test_latency_stats_quantiles_and_growth() -> None:
    values = [10.0] * 10 + [20.0] * 80 + [40.0] * 10
    stats = latency_stats(values)
    assert stats["p50_ms"] == 20.0
    assert stats["max_ms"] == 40.0
    assert stats["growth"] == pytest.approx(4.0)  # mean of the last tenth / the first tenth
    assert latency_stats([5.0])["growth"] == 1.0
    assert latency_stats([]) == {"p50_ms": None, "p95_ms": None, "max_ms": None, "growth": None}


def test_table_reports_ratios_and_unfinished_peers() -> None:
    results = [
        RunResult("naive", finished=True, files_done=4, files_total=4, orders=400, total_s=30.0,
                  latencies_ms=[1.0, 2.0, 3.0, 4.0], peak_rss_mb=200.0),
        RunResult("tutorial", files_done=2, files_total=4, orders=200, total_s=60.0,
                  latencies_ms=[1.0, 9.0]),
        RunResult("backfill", finished=True, files_done=4, files_total=4, orders=400, total_s=10.0),
    ]
    text = "\n".join(render_table(results, timeout=60.0))
    assert "naive/backfill = 3.0x" in text
    assert "tutorial/backfill > 6.0x" in text  # a lower bound: it was stopped
    assert "tutorial: did not finish in 60 s (2 files)" in text
    backfill_row = next(line for line in text.splitlines() if line.startswith("backfill"))
    assert backfill_row.split()[5:9] == ["n/a"] * 4  # micro-batches: no per-file latency


def test_unknown_runner_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "--only", "floor,warp", "--json-out", str(tmp_path / "x.json")])
    assert code == 1
    assert "warp" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


# -- real runs -----------------------------------------------------------------------------
@pytest.mark.slow
def test_every_runner_on_a_tiny_data_set(tmp_path: Path) -> None:
    data = bench(tmp_path, *TINY, "--steady-files", "3", "--pace", "0.3", "--timeout", "120")
    runners, given = data["runners"], data["input"]
    assert list(runners) == [*PEERS, "backfill", "watch"]
    assert given == {"order_files": 6, "product_files": 1, "orders": 300, "steady_orders": 150,
                     "products": 50}
    for name, r in runners.items():
        assert r["status"] == "ok", (name, r)
        assert r["finished"] and r["error"] is None
        assert r["total_s"] > 0 and r["orders_per_s"] > 0 and r["peak_rss_mb"] > 0
    for name in (*PEERS, "backfill"):
        assert runners[name]["files_done"] == runners[name]["files_total"] == 7
        assert runners[name]["orders"] == given["orders"], name
    for name in PEERS:
        assert len(runners[name]["latencies_ms"]) == 6  # one per order file
        assert runners[name]["vs_backfill"] > 0
        assert runners[name]["latency"]["p50_ms"] <= runners[name]["latency"]["max_ms"]
    assert runners["backfill"]["latency"] is None
    watch = runners["watch"]
    assert watch["files_done"] == 3 and watch["orders"] == given["steady_orders"]
    assert len(watch["latencies_ms"]) == 3 and min(watch["latencies_ms"]) > 0
    assert watch["vs_backfill"] is None
    assert data["parameters"]["files"] == 6
    machine = data["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"]
    assert set(machine["packages"]) == {"deltalake", "pandas", "pyarrow", "great_expectations"}
    assert (tmp_path / "work" / "backfill.log").exists()  # --workdir is kept


@pytest.mark.slow
def test_a_peer_over_the_timeout_is_reported_as_not_finished(tmp_path: Path) -> None:
    data = bench(tmp_path, "--files", "30", "--orders-per-file", "100", "--product-files", "1",
                 "--products", "50", "--only", "tutorial", "--timeout", "0.5")
    tutorial = data["runners"]["tutorial"]
    assert list(data["runners"]) == ["tutorial"]
    assert not tutorial["finished"] and tutorial["error"] is None
    assert tutorial["files_done"] < tutorial["files_total"] == 31
    assert tutorial["status"] == f"did not finish in 0.5 s ({tutorial['files_done']} files)"
    assert any(line.startswith("tutorial: did not finish in 0.5 s") for line in data["table"])

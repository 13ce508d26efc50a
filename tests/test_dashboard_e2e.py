"""End to end: ``ecom-stream dashboard`` over a real lake, watched in a headless Chromium.

A new batch is merged by a separate process while the page is open; the KPIs must change
without a reload. Saves ``test-artifacts/dashboard.png`` (CI keeps it as an artifact).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli

from ecom_stream.storage.lake import Lake

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-gpu",
]  # fmt: skip
ARTIFACTS = REPO / "test-artifacts"
SIZE = ["--orders-per-batch", "40", "--products", "60"]
# The page's scroll container is not the document: measure it to screenshot the whole page.
PAGE_HEIGHT_JS = """() => Math.max(...[...document.querySelectorAll(
    '[data-testid="stMain"], [data-testid="stAppViewContainer"], section')
].map(e => e.scrollHeight))"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def merge_batches(lake: Path, landing: Path, source: Path, start: int, batches: int) -> None:
    """Generate order batches and backfill them, each step in its own process."""
    common = ["--lake", str(lake), "--landing", str(landing)]
    for args in (
        ["generate", *common, "--out", str(source), "--start", str(start),
         "--batches", str(batches), *SIZE],
        ["backfill", *common, str(source), "--no-progress"],
    ):  # fmt: skip
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the dashboard exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the dashboard was not healthy after {timeout:.0f} s:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@contextmanager
def dashboard_page(tmp_path: Path, lake: Path, landing: Path) -> Iterator[Any]:
    """A real ``ecom-stream dashboard`` on ``lake`` (refreshing every second), opened in
    headless Chromium; the server must then stop cleanly (exit 0)."""
    from playwright.sync_api import sync_playwright

    port, log = free_port(), tmp_path / "dashboard.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ECOM_DASHBOARD_REFRESH_SECONDS": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecom_stream", "dashboard", "--lake", str(lake),
             "--landing", str(landing), "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_healthy(proc, port, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/")
                yield page
            finally:
                browser.close()
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()


def test_open_page_shows_new_batches_without_reload(tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; CI installs it)")
    from playwright.sync_api import expect

    lake, landing = tmp_path / "lake", tmp_path / "landing"
    landing.mkdir()
    merge_batches(lake, landing, tmp_path / "first", start=1, batches=30)
    orders_before = Lake(lake).queries.count("silver_orders")

    with dashboard_page(tmp_path, lake, landing) as page:
        values = page.get_by_test_id("stMetricValue")
        orders = values.nth(1)  # Revenue, Orders, Avg order value, Unique customers
        expect(orders).to_have_text(f"{orders_before:,}", timeout=60_000)
        expect(values.first).to_have_text(re.compile(r"^\$[\d,.]+[KM]?$"))
        expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=30_000)
        page.evaluate("window.__not_reloaded = true")

        merge_batches(lake, landing, tmp_path / "second", start=31, batches=1)
        orders_after = Lake(lake).queries.count("silver_orders")
        assert orders_after > orders_before
        expect(orders).not_to_have_text(f"{orders_before:,}", timeout=60_000)
        expect(orders).to_have_text(f"{orders_after:,}", timeout=30_000)
        assert page.evaluate("window.__not_reloaded === true"), "the page was reloaded"
        assert page.get_by_test_id("stException").count() == 0

        ARTIFACTS.mkdir(exist_ok=True)
        height = int(page.evaluate(PAGE_HEIGHT_JS))
        page.set_viewport_size({"width": 1400, "height": height + 40})
        expect(page.get_by_test_id("stPlotlyChart").last).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


# Samples the page every 50 ms from inside the browser (the test's own thread is busy merging
# batches): how many elements are faded (computed opacity, the element's own or an
# ancestor's), how many Plotly charts are on the page, and how many re-runs were seen
# (Streamlit marks the elements a re-run has not re-sent yet with data-stale="true").
SAMPLER_JS = """() => {
  const s = window.__steady = {samples: 0, maxFaded: 0, minCharts: 1e9, reruns: 0, inRerun: false};
  const faded = e => { for (; e; e = e.parentElement) {
      if (parseFloat(getComputedStyle(e).opacity) < 0.99) return true; } return false; };
  setInterval(() => {
    const boxes = [...document.querySelectorAll('[data-testid="stElementContainer"]')];
    const charts = document.querySelectorAll('[data-testid="stPlotlyChart"]').length;
    const stale = document.querySelectorAll('[data-stale="true"]').length > 0;
    s.samples += 1;
    s.maxFaded = Math.max(s.maxFaded, boxes.filter(faded).length);
    s.minCharts = Math.min(s.minCharts, charts);
    if (stale && !s.inRerun) s.reruns += 1;
    s.inRerun = stale;
  }, 50);
}"""


def test_auto_refresh_keeps_the_page_steady(tmp_path: Path) -> None:
    """Across refresh cycles with a batch landing in between, nothing fades, charts stay."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; CI installs it)")
    from playwright.sync_api import expect

    lake, landing = tmp_path / "lake", tmp_path / "landing"
    landing.mkdir()
    merge_batches(lake, landing, tmp_path / "first", start=1, batches=10)
    with dashboard_page(tmp_path, lake, landing) as page:
        orders = page.get_by_test_id("stMetricValue").nth(1)
        before = Lake(lake).queries.count("silver_orders")
        expect(orders).to_have_text(f"{before:,}", timeout=60_000)
        charts = page.get_by_test_id("stPlotlyChart")
        expect(charts.last).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1500)  # the first view settles (one refresh)
        page.evaluate(SAMPLER_JS)

        merge_batches(lake, landing, tmp_path / "second", start=11, batches=1)
        after = Lake(lake).queries.count("silver_orders")
        expect(orders).to_have_text(f"{after:,}", timeout=60_000)
        page.wait_for_function("window.__steady.reruns >= 3", timeout=60_000)
        steady = page.evaluate("window.__steady")
    assert steady["samples"] > 20, steady
    assert steady["maxFaded"] == 0, f"elements faded during a refresh: {steady}"
    assert steady["minCharts"] > 0, f"the charts disappeared during a refresh: {steady}"

"""``ecom-stream bench --only dashboard``: how fast the dashboard shows a lake in a browser.

Serves ``ecom-stream dashboard`` on the lake (``--lake``, else the lake the ``backfill``
runner just built), opens it in headless Chromium (Playwright driving the system's
``chromium``) and times:

* the first full view on a fresh server (every chart drawn, the last section there),
* the same from a second browser on the warm server (its caches filled),
* the auto-refreshes that follow (from the first element marked stale to the last chart
  redrawn), a few of them, as latencies.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from ecom_stream.errors import EcomStreamError
from ecom_stream.tools.bench_procs import bench_env, ecom_command
from ecom_stream.tools.bench_report import RunResult

REFRESH_SECONDS = 2.0
REFRESHES = 5
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"]
# The page is complete when the last section (Raw data: tabs) is there, every Plotly chart
# has drawn its SVG, nothing is still loading and no element waits to be re-sent.
FULL_VIEW_JS = """() => {
  const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
  return document.querySelector('[data-testid="stTabs"]') !== null && charts.length > 0
    && charts.every(c => c.querySelector('.main-svg') !== null)
    && document.querySelector('[data-testid="stSkeleton"]') === null
    && document.querySelector('[data-stale="true"]') === null;
}"""
# Times each re-run in the page: from the first sample with a stale element to the first
# sample after it where the page is full again (sampled every 10 ms).
REFRESH_JS = """(full) => {
  const isFull = eval(full);
  const s = window.__refresh = {ms: [], started: null};
  setInterval(() => {
    const stale = document.querySelector('[data-stale="true"]') !== null;
    if (stale && s.started === null) s.started = performance.now();
    else if (s.started !== null && isFull()) {
      s.ms.push(performance.now() - s.started); s.started = null; }
  }, 10);
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EcomStreamError(f"the dashboard exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise EcomStreamError(f"the dashboard was not healthy after {timeout:.0f} s")


def _first_view(browser: Any, url: str, timeout: float) -> float:
    """Seconds from opening ``url`` in a new page to its full view."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    started = time.monotonic()
    page.goto(url)
    page.wait_for_function(FULL_VIEW_JS, timeout=timeout * 1000, polling=20)
    elapsed = time.monotonic() - started
    page.close()
    return elapsed


def _refreshes(browser: Any, url: str, timeout: float) -> list[float]:
    """Milliseconds of ``REFRESHES`` auto-refreshes of an open page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_function(FULL_VIEW_JS, timeout=timeout * 1000, polling=20)
    page.evaluate(REFRESH_JS, "(" + FULL_VIEW_JS + ")")
    wait_ms = (REFRESHES + 2) * (REFRESH_SECONDS * 1000) + timeout * 1000
    page.wait_for_function(f"window.__refresh.ms.length >= {REFRESHES}", timeout=wait_ms)
    values = [float(v) for v in page.evaluate("window.__refresh.ms")]
    page.close()
    return values


def _lake(args: argparse.Namespace, work: Path) -> Path:
    given = getattr(args, "lake", None)
    lake = Path(given).absolute() if given else work / "backfill" / "lake"
    if not (lake / "_ledger").exists():
        raise EcomStreamError(
            f"dashboard: no lake at {lake}: give --lake, or run backfill first (--only "
            "backfill,dashboard)"
        )
    return lake


def run_dashboard(args: argparse.Namespace, work: Path) -> RunResult:
    """Time the dashboard's first view (cold and warm) and its refreshes."""
    result = RunResult("dashboard")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        result.error = "chromium is not installed (apt-get install chromium)"
        return result
    from playwright.sync_api import sync_playwright

    lake = _lake(args, work)
    landing = work / "dashboard" / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    port, log = _free_port(), work / "dashboard.log"
    env = {**bench_env(), "ECOM_DASHBOARD_REFRESH_SECONDS": str(REFRESH_SECONDS)}
    cmd = ecom_command("dashboard", lake, landing, "--port", str(port))
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_healthy(proc, port, args.timeout)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                cold = _first_view(browser, url, args.timeout)
                warm = _first_view(browser, url, args.timeout)
                result.latencies_ms = _refreshes(browser, url, args.timeout)
            finally:
                browser.close()
    except Exception as exc:  # a failed runner is reported, the bench goes on
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    result.total_s, result.finished = cold, True
    result.notes.append(
        f"lake {lake}: first full view {cold:.2f} s on a fresh server, {warm:.2f} s warm; "
        f"refresh every {REFRESH_SECONDS:g} s, latencies = refresh durations"
    )
    return result

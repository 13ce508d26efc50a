"""The package as a user installs it: a wheel (not ``-e``) in a fresh venv, run from a folder
outside the checkout, with no ``PYTHONPATH``.

The venv gets the wheel only; a ``.pth`` file lets it import the test runner's dependencies
(streamlit, deltalake, ...) without reaching the checkout, so no download is needed besides
setuptools for the isolated build when the runner's setuptools is too old.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"]
SOURCES = ("pyproject.toml", "README.md", "ecom_stream")  # what the build reads
DASHBOARD_FILES = {"app.py", "data.py", "figures.py"}


def _run(*cmd: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return bool(r.read().strip() == b"ok")
    except OSError:
        return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources (an in-tree build would leave build/)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root), str(src)]
    if int(version("setuptools").split(".")[0]) >= 77:  # the build requirement: no download
        cmd.append("--no-build-isolation")
    _run(*cmd)
    (found,) = root.glob("ecom_stream-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (not editable); returns its bin folder."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(root))
    bindir = root / "bin"
    python = bindir / "python"
    site = _run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    deps = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    assert not any(Path(d).resolve() == REPO for d in deps)
    # Appended after the venv's own site-packages, and not a site dir: the runner's .pth files
    # (an editable install of this checkout among them) are not processed.
    (Path(site.stdout.strip()) / "zz_test_runner_deps.pth").write_text("\n".join(sorted(deps)))
    _run(sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel))  # fmt: skip
    return bindir


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1"}


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def test_the_wheel_ships_the_dashboard(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    assert {f"ecom_stream/dashboard/{f}" for f in DASHBOARD_FILES} <= names
    assert not any(n.startswith(("dashboard/", "tests/")) for n in names)


def test_installed_dashboard_serves_its_page_outside_the_checkout(
    venv: Path, tmp_path: Path
) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run(str(venv / "python"), "-c",
                 "import ecom_stream, ecom_stream.dashboard.serve as s; "
                 "print(ecom_stream.__file__); "
                 "print(s.APP)", cwd=work, env=_env()).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(venv.parent) for p in where), where
    assert Path(where[1]).is_file()

    port, log = _free_port(), tmp_path / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(venv / "ecom-stream"), "dashboard", "--lake", "lake", "--landing", "landing",
             "--port", str(port)],
            cwd=work, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            return _healthy(port)

        wait_until(healthy, 90, "the installed dashboard to answer", poll=0.3)
        if CHROMIUM is not None:  # the page script itself runs in the served session
            from playwright.sync_api import expect, sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page()
                    page.goto(f"http://127.0.0.1:{port}/")
                    expect(page.get_by_text("ecom-stream: live sales and pipeline")).to_be_visible(
                        timeout=60_000
                    )
                    expect(page.get_by_text("is empty")).to_be_visible(timeout=30_000)
                    assert page.get_by_test_id("stException").count() == 0
                finally:
                    browser.close()
    finally:
        code = _stop(proc)
    output = log.read_text()
    assert code == 0, output
    assert "not found" not in output and "Traceback" not in output, output
    # The page script from the wheel, run in the venv (also where no browser is installed).
    script = ("from streamlit.testing.v1 import AppTest; import ecom_stream.dashboard.serve as s; "
              "at = AppTest.from_file(str(s.APP), default_timeout=60).run(); "
              "assert not at.exception, at.exception; print(at.title[0].value)")  # fmt: skip
    shown = _run(str(venv / "python"), "-c", script, cwd=work, env=_env())
    assert "live sales and pipeline" in shown.stdout


def test_installed_demo_runs_and_stops_outside_the_checkout(venv: Path, tmp_path: Path) -> None:
    from ecom_stream.storage.lake import Lake

    work = tmp_path / "elsewhere"
    work.mkdir()
    port, log = _free_port(), tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(venv / "ecom-stream"), "demo", "--port", str(port), "--interval", "1",
             "--orders-per-batch", "20", "--history-batches", "3"],
            cwd=work, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        def running() -> bool:
            assert proc.poll() is None, log.read_text()
            lake = Lake(work / "lake")
            if not lake.tables.exists() or not _healthy(port):
                return False
            try:
                ledger = lake.tables.read_pandas("ledger", columns=["file_name", "outcome"])
            except Exception:  # read while a commit lands: try again at the next poll
                return False
            merged = ledger[ledger["outcome"] == "merged"]["file_name"]
            return int(merged.str.startswith("orders").sum()) > 3  # history, then the drip

        wait_until(running, 180, "the installed demo to merge and serve", poll=0.5)
    finally:
        code = _stop(proc, signal.SIGINT)
    output = log.read_text()
    assert code == 0, output
    assert "not found" not in output and "demo: stopped" in output, output
    assert not _healthy(port)

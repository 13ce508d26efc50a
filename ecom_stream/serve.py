"""``ecom-stream dashboard``: runs ``streamlit run dashboard/app.py`` as a child process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from ecom_stream.config import Settings
from ecom_stream.errors import EcomStreamError

__all__ = ["APP_PATH", "dashboard_command", "dashboard_env", "serve_dashboard"]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_PATH = REPO_ROOT / "dashboard" / "app.py"
STOP_TIMEOUT = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PRIMARY_COLOR = "#4C78A8"


def dashboard_command(settings: Settings, app: Path = APP_PATH) -> list[str]:
    """The ``streamlit run`` command line for ``settings``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.headless=true",
        f"--server.address={settings.dashboard_address}",
        f"--server.port={settings.dashboard_port}",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
        # A screen left open: no developer menu, and widgets in the charts' accent colour.
        "--client.toolbarMode=viewer",
        f"--theme.primaryColor={PRIMARY_COLOR}",
    ]  # fmt: skip


def dashboard_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the app rebuilds the same Settings from ``ECOM_*`` variables."""
    env = dict(os.environ if base is None else base)
    env.update(
        ECOM_LAKE=str(settings.lake_dir.absolute()),
        ECOM_LANDING=str(settings.landing_dir.absolute()),
        ECOM_DASHBOARD_REFRESH_SECONDS=str(settings.dashboard_refresh_seconds),
        ECOM_HEARTBEAT_STALE_SECONDS=str(settings.heartbeat_stale_seconds),
        ECOM_EXCLUDED_STATUSES=",".join(settings.excluded_statuses),
    )
    # The app imports ecom_stream from this checkout even when it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def serve_dashboard(settings: Settings, app: Path = APP_PATH) -> int:
    """Serve the dashboard until SIGINT/SIGTERM; returns the server's exit code (0 on Ctrl-C).

    Raises:
        EcomStreamError: the dashboard script is missing or Streamlit cannot be started.
    """
    if not app.is_file():
        raise EcomStreamError(f"dashboard script not found at {app}: is this a full checkout?")
    logger.info(
        "dashboard on http://%s:%s (lake %s); Ctrl-C stops it",
        settings.dashboard_address,
        settings.dashboard_port,
        settings.lake_dir.absolute(),
    )
    try:
        # Own session: a terminal Ctrl-C reaches only us, and we forward it exactly once.
        proc = subprocess.Popen(
            dashboard_command(settings, app), env=dashboard_env(settings), start_new_session=True
        )
    except OSError as exc:
        raise EcomStreamError(f"cannot start streamlit: {exc}") from exc
    stopped: list[int] = []
    with _forward_signals(proc, stopped):
        code = proc.wait()
        if stopped:
            try:
                code = proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
    if stopped and (code == 0 or abs(code) in STOP_SIGNALS or code - 128 in STOP_SIGNALS):
        return 0  # stopped on request (Ctrl-C, SIGTERM)
    return code if code >= 0 else 128 - code


@contextmanager
def _forward_signals(proc: subprocess.Popen[bytes], stopped: list[int]) -> Iterator[None]:
    """Pass SIGINT/SIGTERM on to the child (only the main thread can install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        stopped.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

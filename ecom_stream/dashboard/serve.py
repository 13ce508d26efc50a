"""``ecom-stream dashboard``: becomes ``streamlit run`` on the app shipped in the package.

The app is ``ecom_stream/dashboard/app.py``, found through ``importlib.resources`` so that it
runs the same from a wheel, an editable install or a checkout. The command replaces itself
with the Streamlit server (``exec``) instead of running it as a child: there is one process,
which handles SIGINT/SIGTERM itself, so a supervisor (``ecom-stream demo``, a service manager)
that stops or kills it leaves nothing behind.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import os
import site
import sys
from importlib.resources.abc import Traversable
from pathlib import Path

import ecom_stream
from ecom_stream.config import Settings
from ecom_stream.errors import EcomStreamError

__all__ = [
    "APP", "check_dashboard", "child_env", "dashboard_command", "dashboard_env", "serve_dashboard",
]  # fmt: skip

logger = logging.getLogger(__name__)

APP: Traversable = importlib.resources.files("ecom_stream.dashboard").joinpath("app.py")
PRIMARY_COLOR = "#4C78A8"


def dashboard_command(settings: Settings, app: Path) -> list[str]:
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
    return child_env(env)


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` such that a child Python imports this same ``ecom_stream``.

    Needed when it comes from a checkout on ``PYTHONPATH`` or the current folder; an
    installed package (wheel or editable) is found by the child anyway, and its
    site-packages is not put on ``PYTHONPATH`` (that would move it before the standard
    library).
    """
    root = str(Path(ecom_stream.__file__).resolve().parent.parent)
    sites = [*site.getsitepackages(), site.getusersitepackages()]
    installed = {str(Path(p).resolve()) for p in sites}
    if root in installed:
        return env
    path = env.get("PYTHONPATH", "")
    if root not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, path) if p)
    return env


def check_dashboard(app: Traversable | Path = APP) -> None:
    """Raise EcomStreamError unless the app and Streamlit are there (before anything starts)."""
    if not app.is_file():
        raise EcomStreamError(
            f"dashboard script not found at {app}: reinstall the package (pip install .)"
        )
    if importlib.util.find_spec("streamlit") is None:
        raise EcomStreamError("streamlit is not installed: pip install streamlit (or the package)")


def serve_dashboard(settings: Settings, app: Traversable | Path = APP) -> int:
    """Replace this process with the Streamlit server (exit code: Streamlit's, 0 on Ctrl-C or
    SIGTERM); does not return.

    Raises:
        EcomStreamError: the app is missing, Streamlit is not installed or cannot be started.
    """
    check_dashboard(app)
    logger.info(
        "dashboard on http://%s:%s (lake %s); Ctrl-C stops it",
        settings.dashboard_address,
        settings.dashboard_port,
        settings.lake_dir.absolute(),
    )
    sys.stdout.flush()
    sys.stderr.flush()
    # A regular install has the file on disk (as_file gives the path itself); a zipped one
    # gets a copy, which the server (this process, after exec) keeps.
    with importlib.resources.as_file(app) as path:
        cmd = dashboard_command(settings, path)
        try:
            os.execve(cmd[0], cmd, dashboard_env(settings))
        except OSError as exc:
            raise EcomStreamError(f"cannot start streamlit ({cmd[0]}): {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover (execve returns only by raising)

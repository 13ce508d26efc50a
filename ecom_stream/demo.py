"""``ecom-stream demo``: history, then the daemon, a simulated source and the dashboard, together.

The three run as child processes of the current Python (``python -m ecom_stream ...``) on the
configured lake and landing folder. They get their own session, so a Ctrl-C in the terminal
reaches only this process, which then stops each child exactly once (SIGTERM, then SIGKILL
after a timeout); a child that receives SIGINT from the terminal and SIGTERM from us would
take the second signal for "abort now".
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from ecom_stream.config import Settings
from ecom_stream.errors import ConfigError
from ecom_stream.lake import Lake
from ecom_stream.lock import LakeLock
from ecom_stream.serve import check_dashboard, child_env

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)

DEMO_SEED = 42
SOURCE_BATCHES = 1_000_000  # "forever": the source drips until the demo stops
STOP_TIMEOUT = 30.0  # the daemon finishes its micro-batch in hand before it exits
POLL_SECONDS = 0.5
_ORDER_NUMBER = re.compile(r"^orders\D*(\d+)", re.IGNORECASE)
_GENERATED = re.compile(r"^(orders|products)-\d{6}\.json$")  # the names `generate` writes


def run_demo(
    settings: Settings,
    *,
    interval: float = 3.0,
    orders_per_batch: int = 300,
    history_batches: int = 90,
) -> int:
    """Run the demo until SIGINT/SIGTERM (exit 0) or until a child dies (exit 1).

    Raises:
        ConfigError: bad arguments, the landing folder cannot be created, the port is taken.
        EcomStreamError: the lake is held by another writer, or the dashboard cannot run.
    """
    if interval <= 0 or orders_per_batch < 1 or history_batches < 0:
        raise ConfigError("--interval must be > 0, --orders-per-batch >= 1, --history-batches >= 0")
    landing = settings.landing_dir.absolute()
    try:
        landing.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the landing folder {landing}: {exc}") from exc
    _preflight(settings)
    before = {p.name for p in landing.iterdir()}  # a failed start removes only what it added
    if history_batches and not _has_data(settings):
        _write_history(settings, history_batches, orders_per_batch)
    start = _next_order_number(settings)

    stop: list[int] = []  # a signal only appends (no locks inside a signal handler)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: dict[str, subprocess.Popen[bytes]] = {}
    code = 1
    try:
        common = _common_args(settings)
        children["daemon"] = _spawn("watch", *common)
        children["source"] = _spawn(
            "generate", *common, "--out", str(landing), "--interval", str(interval),
            "--start", str(start), "--batches", str(SOURCE_BATCHES),
            "--orders-per-batch", str(orders_per_batch), "--seed", str(DEMO_SEED),
        )
        children["dashboard"] = _spawn(
            "dashboard", *common, "--port", str(settings.dashboard_port),
            "--address", settings.dashboard_address,
        )
        host = settings.dashboard_address
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # a wildcard is not a URL
        print(f"demo: dashboard at http://{host}:{settings.dashboard_port}", flush=True)
        print(f"demo: a batch of {orders_per_batch} orders lands in {landing} every {interval:g} s",
              flush=True)
        print("demo: press Ctrl-C to stop the daemon, the source and the dashboard", flush=True)
        code = _wait(children, stop)
    except BaseException:
        code = 1
        raise
    finally:
        _stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if code != 0:
            _remove_unprocessed(landing, before)
    print("demo: stopped" if code == 0 else "demo: stopped because a process died", flush=True)
    return code


def _wait(children: dict[str, subprocess.Popen[bytes]], stop: list[int]) -> int:
    """Until a stop signal (0) or a child exiting on its own (1)."""
    while not stop:
        for name, proc in children.items():
            code = proc.poll()
            if code is not None:
                print(f"demo: the {name} (pid {proc.pid}) exited unexpectedly with code {code}; "
                      "stopping the others", file=sys.stderr, flush=True)
                return 1
        time.sleep(POLL_SECONDS)
    return 0


def _common_args(settings: Settings) -> list[str]:
    args = ["--lake", str(settings.lake_dir.absolute()),
            "--landing", str(settings.landing_dir.absolute()), "--log-level", settings.log_level]
    return [*args, "--log-json"] if settings.log_json else args


def _spawn(command: str, *args: str) -> subprocess.Popen[bytes]:
    # Options go after the subcommand: argparse lets a subcommand's defaults override
    # options given before it.
    cmd = [sys.executable, "-m", "ecom_stream", command, *args]
    proc = subprocess.Popen(cmd, env=child_env(dict(os.environ)), start_new_session=True)
    logger.debug("started %s (pid %d): %s", command, proc.pid, " ".join(cmd))
    return proc


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM every child still running, wait, SIGKILL those that do not exit in time."""
    # The source first, so that no new file lands while the daemon is finishing.
    order = [n for n in ("source", "dashboard", "daemon") if n in children]
    for name in order:
        if children[name].poll() is None:
            children[name].terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for name in order:
        proc = children[name]
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"demo: the {name} did not stop in {STOP_TIMEOUT:.0f} s; killing it",
                  file=sys.stderr, flush=True)
            proc.kill()
            proc.wait()


def _preflight(settings: Settings) -> None:
    """What would make a child fail at once, checked before anything is written to landing."""
    check_dashboard()
    address, port = settings.dashboard_address, settings.dashboard_port
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise ConfigError(
                f"the dashboard cannot listen on {address}:{port} ({exc.strerror or exc}): "
                "stop what uses it or pass another --port"
            ) from None
    with LakeLock(Lake(settings.lake_dir).lock_path, "demo (start-up check)"):
        pass  # another writer holds the lake: LockError now, not a dead daemon later


def _remove_unprocessed(landing: Path, before: set[str]) -> None:
    """After a failed run, remove the batch files this run generated that the daemon never took.

    The daemon removes a file once merged, so what is left was not merged; a restart
    generates those batches again (they continue from the ledger's highest number).
    """
    removed = 0
    for path in landing.iterdir():
        if _GENERATED.match(path.name) and path.name not in before:
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        print(f"demo: removed {removed} generated files that were not merged from {landing}",
              flush=True)


def _has_data(settings: Settings) -> bool:
    """Whether the lake or landing already holds orders (then no history is generated)."""
    if any(_ORDER_NUMBER.match(p.name) for p in settings.landing_dir.iterdir()):
        return True
    lake = Lake(settings.lake_dir)
    return lake.exists() and lake.count("silver_orders") > 0


def _write_history(settings: Settings, batches: int, orders_per_batch: int) -> None:
    from ecom_stream.generate import GenerateOptions, generate

    print(f"demo: the lake is empty: writing {batches} history batches into {settings.landing_dir} "
          "(the daemon merges them first)", flush=True)
    generate(GenerateOptions(out=settings.landing_dir, batches=batches,
                             orders_per_batch=orders_per_batch, seed=DEMO_SEED))


def _next_order_number(settings: Settings) -> int:
    """One past the highest order batch number seen in landing or in the lake's ledger."""
    names = [p.name for p in settings.landing_dir.iterdir()]
    lake = Lake(settings.lake_dir)
    if lake.exists():
        names += lake.read_pandas("ledger", columns=["file_name"])["file_name"].dropna().tolist()
    numbers = [int(m.group(1)) for n in names if (m := _ORDER_NUMBER.match(n))]
    return max(numbers, default=0) + 1

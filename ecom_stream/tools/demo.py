"""``ecom-stream demo``: history, then the daemon, a simulated source and the dashboard, together.

The three run as child processes of the current Python (``python -m ecom_stream ...``) on the
configured lake and landing folder. Each gets a session (and so a process group) of its own:
a Ctrl-C in the terminal reaches only this process, which then stops each child exactly once
(a child that got SIGINT from the terminal and SIGTERM from us would take the second signal for
"abort now"). Stopping, on SIGINT, SIGTERM, SIGHUP or SIGPIPE, when the reader of our output
goes away, or when a child dies: SIGTERM to every child's group, ``demo_stop_seconds`` to
finish (the daemon completes its micro-batch in hand), then SIGKILL to the groups; a second
signal skips the wait. On Linux each child also gets SIGTERM from the kernel if the demo itself
is killed.

The children write into pipes that the demo copies to its own stdout and stderr, so when those
break (``demo | tee`` and a Ctrl-C that kills tee too), no child sees a broken pipe: the demo
notices it, stops them, and goes on draining their output into nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ecom_stream.config import Settings
from ecom_stream.dashboard.serve import check_dashboard, child_env
from ecom_stream.errors import ConfigError
from ecom_stream.service.signals import stop_signals
from ecom_stream.storage.lake import Lake

__all__ = ["StartUp", "run_demo", "source_args", "start_up"]

logger = logging.getLogger(__name__)

DEMO_SEED = 42
SOURCES = ("files", "api")  # --source: files dropped by `generate`, or `serve-api` + `pull`
SOURCE_BATCHES = 1_000_000  # "forever": the source drips until the demo stops
POLL_SECONDS = 0.5
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)
# A generated file's day number; pulled files (orders-api-<time>-<page>) have none.
_ORDER_NUMBER = re.compile(r"^orders(?!-api-)\D*(\d+)", re.IGNORECASE)
_GENERATED = re.compile(r"^(orders|products)-\d{6}\.json$")  # the names `generate` writes
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def run_demo(
    settings: Settings,
    *,
    interval: float = 3.0,
    orders_per_batch: int = 300,
    history_batches: int = 90,
    source: str = "files",
) -> int:
    """Run the demo until a stop signal or a gone reader (exit 0) or a child's death (exit 1).

    Raises:
        ConfigError: bad arguments, the landing folder cannot be created, the port is taken.
        EcomStreamError: the lake is held by another writer, or the dashboard cannot run.
    """
    if interval <= 0 or orders_per_batch < 1 or history_batches < 0 or source not in SOURCES:
        raise ConfigError("--interval must be > 0, --orders-per-batch >= 1, --history-batches >= 0")
    landing = settings.landing_dir.absolute()
    try:
        landing.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the landing folder {landing}: {exc}") from exc
    _preflight(settings)
    before = {p.name for p in landing.iterdir()}  # a failed start removes only what it added
    out = _Output()
    # From an API, the history is served by it (and pulled first), not written to landing.
    plan = start_up(settings, 0 if source == "api" else history_batches, orders_per_batch, out.say)

    code = 1
    try:
        # A signal only appends to ``stop``; stop_all counts them: a second one skips its wait.
        with stop_signals(STOP_SIGNALS, abort_on_second=False, main_thread_only=True) as signals:
            stop = signals.received
            children = _Children(out, settings.demo_stop_seconds)
            try:
                common = _common_args(settings)
                children.spawn("daemon", "watch", *common)
                _spawn_source(children, settings, plan, source, interval, orders_per_batch,
                              history_batches)  # fmt: skip
                children.spawn(
                    "dashboard", "dashboard", *common, "--port", str(settings.dashboard_port),
                    "--address", settings.dashboard_address,
                )  # fmt: skip
                host = settings.dashboard_address
                # A wildcard is not a URL.
                host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
                out.say(f"demo: dashboard at http://{host}:{settings.dashboard_port}")
                out.say(f"demo: a batch of {orders_per_batch} orders lands in {landing} "
                        f"every {interval:g} s" + (" (pulled from the API)" if source == "api"
                                                   else ""))  # fmt: skip
                out.say("demo: press Ctrl-C to stop the daemon, the source and the dashboard")
                code = children.wait(stop)
            finally:
                # Also on an error or a KeyboardInterrupt: nothing is left running.
                children.stop_all(stop)
    finally:
        if code != 0:
            _remove_unprocessed(landing, before, out)
    out.say("demo: stopped" if code == 0 else "demo: stopped because a process died")
    return code


class _Output:
    """The demo's stdout and stderr, written with ``os.write``; a broken one is dropped."""

    def __init__(self) -> None:
        self.broken: set[int] = set()

    def write(self, fd: int, data: bytes) -> None:
        if fd in self.broken:
            return
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError:  # EPIPE (reader gone), EIO (terminal gone): keep running, quietly
            self.broken.add(fd)

    def say(self, line: str, err: bool = False) -> None:
        self.write(2 if err else 1, (line + "\n").encode())

    def reader_gone(self) -> bool:
        """Whether stdout is a pipe (or socket) whose reading end has been closed."""
        if 1 in self.broken:
            return True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            poller = select.poll()
            poller.register(1, select.POLLOUT)
            for _fd, events in poller.poll(0):
                if events & (select.POLLERR | select.POLLHUP):
                    self.broken.add(1)
                    return True
        return False


class _Children:
    """The demo's child processes, each in its own session, with their output relayed."""

    def __init__(self, out: _Output, stop_seconds: float) -> None:
        self.out = out
        self.stop_seconds = stop_seconds
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pipes: dict[int, int] = {}  # read end of a relay pipe -> the fd it is copied to

    def spawn(self, name: str, command: str, *args: str) -> None:
        # Options go after the subcommand: argparse lets a subcommand's defaults override
        # options given before it.
        cmd = [sys.executable, "-m", "ecom_stream", command, *args]
        # The simulated days (one a batch from 2026-01-01) outrun the calendar: lift the
        # contract's "created at most a day after receipt" bound unless the user set it.
        env = child_env({"ECOM_MAX_DAYS_AHEAD": "36500", **os.environ})
        ends = [os.pipe(), os.pipe()]  # stdout, stderr
        try:
            proc = subprocess.Popen(
                cmd, env=env, stdout=ends[0][1], stderr=ends[1][1],
                start_new_session=True, preexec_fn=_die_with_parent(),
            )  # fmt: skip
        except BaseException:
            for fd in (*ends[0], *ends[1]):
                os.close(fd)
            raise
        for target, (read_end, write_end) in zip((1, 2), ends, strict=True):
            os.close(write_end)
            os.set_blocking(read_end, False)
            self.pipes[read_end] = target
        self.procs[name] = proc
        logger.debug("started %s (pid %d): %s", name, proc.pid, " ".join(cmd))

    def relay(self, timeout: float) -> None:
        """Copy what the children wrote to our stdout/stderr, waiting up to ``timeout``."""
        if not self.pipes:
            time.sleep(timeout)
            return
        ready, _, _ = select.select(list(self.pipes), [], [], timeout)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if data:
                self.out.write(self.pipes[fd], data)
            else:  # every writer closed it: the child (and its group) is gone
                os.close(fd)
                del self.pipes[fd]

    def wait(self, stop: list[int]) -> int:
        """Until a stop signal or a gone reader (0), or a child exiting on its own (1)."""
        while not stop and not self.out.reader_gone():
            for name, proc in self.procs.items():
                code = proc.poll()
                if code is not None:
                    self.out.say(f"demo: the {name} (pid {proc.pid}) exited unexpectedly with "
                                 f"code {code}; stopping the others", err=True)
                    return 1
            self.relay(POLL_SECONDS)
        return 0

    def stop_all(self, stop: list[int]) -> None:
        """SIGTERM every child's group, wait, then SIGKILL the groups; keep relaying output."""
        # The source first, so that no new file lands while the daemon is finishing.
        order = [n for n in ("source", "api", "dashboard", "daemon") if n in self.procs]
        for name in order:
            if self.procs[name].poll() is None:
                _signal_group(self.procs[name], signal.SIGTERM)
        signals_so_far = len(stop)
        deadline = time.monotonic() + self.stop_seconds
        while any(p.poll() is None for p in self.procs.values()):
            if time.monotonic() > deadline or len(stop) > signals_so_far:
                late = [n for n in order if self.procs[n].poll() is None]
                why = "on a second signal" if len(stop) > signals_so_far else (
                    f"after {self.stop_seconds:g} s")
                self.out.say(f"demo: killing the {', '.join(late)} {why}", err=True)
                break
            self.relay(0.1)
        # Also the groups of children that exited: whatever they started goes with them.
        for name in order:
            _signal_group(self.procs[name], signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait()
        deadline = time.monotonic() + 2.0  # output still in the pipes
        while self.pipes and time.monotonic() < deadline:
            self.relay(0.1)
        for fd in self.pipes:
            os.close(fd)
        self.pipes.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the child's process group (its pid: it leads its own session).

    A child not yet waited for keeps its pid (a zombie at worst), so the group id cannot
    have been reused.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child if the demo dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not after the fork
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def _spawn_source(children: _Children, settings: Settings, plan: StartUp, source: str,
                  interval: float, orders_per_batch: int, history_batches: int) -> None:
    """The simulated source: ``generate`` dripping files, or ``serve-api`` and a ``pull``
    every ``interval`` (the late orders of the simulated source need a 3-day lag)."""
    if source == "files":
        args = source_args(settings, plan, interval, orders_per_batch)
        children.spawn("source", "generate", *args)
        return
    with socket.socket() as probe:  # a free port for the API
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    children.spawn("api", "serve-api", *_common_args(settings), "--port", str(port),
                   "--batches", str(max(1, history_batches)), "--interval", str(interval),
                   "--orders-per-batch", str(orders_per_batch), "--seed", str(DEMO_SEED))
    children.spawn("source", "pull", *_common_args(settings), "--url",
                   f"http://127.0.0.1:{port}", "--every", str(interval), "--lag", "3d")  # fmt: skip


def _common_args(settings: Settings) -> list[str]:
    args = ["--lake", str(settings.lake_dir.absolute()),
            "--landing", str(settings.landing_dir.absolute()), "--log-level", settings.log_level]
    return [*args, "--log-json"] if settings.log_json else args


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
    with Lake(settings.lake_dir).writer_lock("demo (start-up check)"):
        pass  # another writer holds the lake: LockError now, not a dead daemon later


def _remove_unprocessed(landing: Path, before: set[str], out: _Output) -> None:
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
        out.say(f"demo: removed {removed} generated files that were not merged from {landing}")


@dataclass(frozen=True)
class StartUp:
    """Where the simulated source resumes: its first order batch, and whether it sends the
    catalogue (only when neither landing nor the lake has product files yet)."""

    start: int
    send_catalogue: bool


def start_up(settings: Settings, history_batches: int, orders_per_batch: int,
             say: Callable[[str], None] = print) -> StartUp:
    """Write the history batches still missing; return where the source continues.

    The demo's data is one numbered series (batch ``n`` is simulated day ``n``, always the same
    bytes): batch numbers in landing and in the lake's ledger say where an earlier run stopped,
    so a restart neither re-sends the catalogue nor re-drops a batch the lake already holds.
    A lake with orders of another origin gets no history.
    """
    names = [p.name for p in settings.landing_dir.iterdir()]
    lake = Lake(settings.lake_dir)
    if lake.tables.exists():
        ledger = lake.tables.read_pandas("ledger", columns=["file_name"])
        names += ledger["file_name"].dropna().tolist()
    numbers = [int(m.group(1)) for n in names if (m := _ORDER_NUMBER.match(n))]
    start = max(numbers, default=0) + 1
    has_catalogue = any(n.lower().startswith("products") for n in names) or (
        lake.tables.exists() and lake.queries.count("silver_products") > 0)
    foreign = start == 1 and lake.tables.exists() and lake.queries.count("silver_orders") > 0
    if start <= history_batches and not foreign:
        from ecom_stream.tools.generate import GenerateOptions, generate

        what = "the lake is empty" if start == 1 else f"the history stopped at day {start - 1}"
        say(f"demo: {what}: writing history batches {start}-{history_batches} into "
            f"{settings.landing_dir} (the daemon merges them first)")
        generate(GenerateOptions(
            out=settings.landing_dir, batches=history_batches - start + 1, start=start,
            orders_per_batch=orders_per_batch, seed=DEMO_SEED, catalogue=not has_catalogue,
        ))  # fmt: skip
        return StartUp(history_batches + 1, send_catalogue=False)
    return StartUp(start, send_catalogue=not has_catalogue)


def source_args(settings: Settings, plan: StartUp, interval: float, orders_per_batch: int,
                batches: int = SOURCE_BATCHES) -> list[str]:
    """The ``generate`` command line of the simulated source (after the subcommand)."""
    args = [*_common_args(settings), "--out", str(settings.landing_dir.absolute()),
            "--interval", str(interval), "--start", str(plan.start), "--batches", str(batches),
            "--orders-per-batch", str(orders_per_batch), "--seed", str(DEMO_SEED)]  # fmt: skip
    return args if plan.send_catalogue else [*args, "--no-products"]

"""Stop signals (``service/signals.py``): real signals sent to a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import REPO

from ecom_stream.service.signals import stop_signals

# Waits for ``want`` signals, printing what it has after each one; exits 130 on an abort.
SCRIPT = """
import signal, sys, time
from ecom_stream.service.signals import stop_signals

abort, want = sys.argv[1] == "abort", int(sys.argv[2])
sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
firsts = []
try:
    with stop_signals(sigs, on_first=firsts.append, abort_on_second=abort) as stops:
        print("ready", flush=True)
        seen, deadline = 0, time.monotonic() + 60
        while seen < want and time.monotonic() < deadline:
            if len(stops.received) > seen:
                seen = len(stops.received)
                print("got", stops.received, firsts, flush=True)
            time.sleep(0.01)
except KeyboardInterrupt:
    print("aborted", stops.received, firsts, flush=True)
    sys.exit(130)
restored = (signal.getsignal(signal.SIGINT) is signal.default_int_handler
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
print("restored" if restored else "not restored", flush=True)
"""


def start(tmp_path: Path, mode: str, want: int) -> subprocess.Popen[str]:
    script = tmp_path / "signals_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), mode, str(want)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def test_the_first_signal_asks_to_stop_and_a_second_aborts(tmp_path: Path) -> None:
    proc = start(tmp_path, "abort", 3)
    try:
        proc.send_signal(signal.SIGTERM)
        assert line(proc) == "got [15] [15]"  # the callback ran; nothing raised
        proc.send_signal(signal.SIGINT)
        assert line(proc) == "aborted [15, 2] [15]"
        assert proc.wait(30) == 130
    finally:
        proc.kill()


def test_without_abort_signals_are_only_counted_and_handlers_restored(tmp_path: Path) -> None:
    proc = start(tmp_path, "count", 2)
    try:
        proc.send_signal(signal.SIGHUP)
        assert line(proc) == "got [1] [1]"
        proc.send_signal(signal.SIGTERM)
        assert line(proc) == "got [1, 15] [1]"  # the callback only on the first
        assert line(proc) == "restored"
        assert proc.wait(30) == 0
    finally:
        proc.kill()


def test_outside_the_main_thread_nothing_is_installed_unless_required() -> None:
    results: list[object] = []

    def run() -> None:
        before = signal.getsignal(signal.SIGTERM)
        with stop_signals() as stops:
            results.append(signal.getsignal(signal.SIGTERM) is before and stops.received == [])
        try:
            with stop_signals(main_thread_only=True):
                pass
        except ValueError as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert results[0] is True
    assert isinstance(results[1], ValueError)


def test_the_handler_calls_back_once_then_raises() -> None:
    firsts: list[int] = []
    with stop_signals(on_first=firsts.append) as stops:
        assert signal.getsignal(signal.SIGTERM) == stops.handle
        stops.handle(signal.SIGTERM, None)
        with pytest.raises(KeyboardInterrupt):
            stops.handle(signal.SIGTERM, None)
    assert firsts == [signal.SIGTERM] and stops.received == [signal.SIGTERM] * 2
    assert signal.getsignal(signal.SIGTERM) != stops.handle

"""Stop signals, handled the one way every long-running command wants them.

The first signal asks for a graceful stop (the handler only records it, or calls a callback
that sets a plain attribute: taking a lock inside a signal handler can deadlock with the
interrupted thread); a second one means "abort now": either ``KeyboardInterrupt`` is raised
at once (``abort_on_second``), or the caller, which watches :attr:`StopSignals.received`,
cuts its own shutdown short.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

__all__ = ["DEFAULT_SIGNALS", "StopSignals", "stop_signals"]

DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """The stop signals received so far, in order (only ever appended to)."""

    def __init__(self, on_first: Callable[[int], None] | None, abort_on_second: bool) -> None:
        self.received: list[int] = []
        self._on_first = on_first
        self._abort_on_second = abort_on_second

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: record, then call back on the first or abort on a later one."""
        self.received.append(signum)
        if len(self.received) == 1:
            if self._on_first is not None:
                self._on_first(signum)
        elif self._abort_on_second:
            raise KeyboardInterrupt  # what a second Ctrl-C means


@contextmanager
def stop_signals(
    signals: Sequence[int] = DEFAULT_SIGNALS,
    *,
    on_first: Callable[[int], None] | None = None,
    abort_on_second: bool = True,
    main_thread_only: bool = False,
) -> Iterator[StopSignals]:
    """Handle ``signals`` inside the block, then put the previous handlers back.

    Outside the main thread Python cannot install handlers: with ``main_thread_only`` that is
    an error (``ValueError``), otherwise nothing is installed and the block runs as is (an
    in-process caller stops the work its own way).
    """
    stops = StopSignals(on_first, abort_on_second)
    if not main_thread_only and threading.current_thread() is not threading.main_thread():
        yield stops
        return
    previous = {sig: signal.signal(sig, stops.handle) for sig in signals}
    try:
        yield stops
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""Hooks the engine calls as it works, for whoever watches it (the daemon's metrics and alerts).

The engine imports nothing of the service: a watcher subclasses :class:`Observer` (every hook
is a no-op here) and hands it to ``Pipeline``. Hooks run on the writer's thread, inside its
work: they must be quick and must not raise.
"""

from __future__ import annotations

from collections.abc import Sequence

from ecom_stream.transform.bookkeeping import FileOutcome

__all__ = ["Anomaly", "Observer"]

Anomaly = tuple[str, str]
"""A gold anomaly: (order date as ISO text, category)."""


class Observer:
    """No-op hooks; override the ones you watch."""

    watches_anomalies = False
    """Whether gold should work out its new anomalies (one read of the anomaly table, then
    kept in memory) and report them to :meth:`new_anomalies`."""

    def microbatch(self, outcomes: Sequence[FileOutcome]) -> None:
        """A micro-batch's ledger rows are committed. Its files share the micro-batch's
        stage timings (``validate_ms``, ``merge_ms``, ``gold_ms``, ``commit_ms``); each has
        its own ``read_ms``."""

    def new_anomalies(self, found: Sequence[Anomaly]) -> None:
        """Gold now flags these (day, category) pairs, which it did not flag before."""

"""Logging set-up: the only place that adds handlers; and the fields bound to a batch's lines.

:func:`log_context` binds fields (the batch and arrival ids of the file or micro-batch being
processed) in a context variable; a filter on the handler copies them onto every record, so
every line logged meanwhile carries them, whichever logger (ours or a library's) wrote it.
The JSON format (``--log-json``) is documented field by field in the README (Logs).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "batch_context", "configure_logging", "log_context", "outcome_context"]

NOISY = ("great_expectations", "py4j", "urllib3", "watchdog", "streamlit", "deltalake", "numexpr")
# This GX module sets its own logger to INFO when imported (after us) and logs "Created
# temporary directory ... for ephemeral docs site" at every context creation: a filter stays.
GX_DOCS_LOGGER = "great_expectations.data_context.types.base"
# The fields a JSON line may carry beyond time, level, logger and message, in this order.
FIELDS = (
    "batch", "arrival", "file", "entity", "outcome", "rows", "timings", "batches", "arrivals",
)  # fmt: skip

_BOUND: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "ecom_stream_log_fields", default=None
)


def _warnings_and_up(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind ``fields`` (None values skipped) to every line logged inside, in this thread."""
    bound = {**(_BOUND.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _BOUND.set(bound)
    try:
        yield
    finally:
        _BOUND.reset(token)


def batch_context(
    batches: Sequence[str], arrivals: Sequence[str]
) -> contextlib.AbstractContextManager[None]:
    """The fields of a micro-batch: its ``batches`` and ``arrivals``; with one file, also its
    ``batch`` and ``arrival``."""
    one = len(batches) == 1
    return log_context(
        batches=list(batches),
        arrivals=list(arrivals),
        batch=batches[0] if one else None,
        arrival=arrivals[0] if one else None,
    )


def outcome_context(outcome: Any) -> contextlib.AbstractContextManager[None]:
    """The fields of one file's outcome line (a ``FileOutcome``)."""
    merged = outcome.outcome in ("merged", "empty")
    return log_context(
        batch=outcome.batch_id,
        arrival=outcome.arrival_id,
        file=outcome.name,
        entity=outcome.entity,
        outcome=outcome.outcome,
        rows={
            "in": outcome.rows_in,
            "merged": outcome.rows_merged,
            "rejected": outcome.rows_rejected,
            "rescued": outcome.rows_rescued,
        }
        if merged
        else None,
        timings=dict(outcome.timings) or None,
    )


class BoundFields(logging.Filter):
    """Copies the fields bound by :func:`log_context` onto each record (``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_BOUND.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the bound fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Log to stderr, plain or as JSON lines; quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(BoundFields())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.getLogger(GX_DOCS_LOGGER).addFilter(_warnings_and_up)  # added once (same object)

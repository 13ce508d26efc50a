"""Logging set-up: the only place that adds handlers."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["configure_logging"]

NOISY = ("great_expectations", "py4j", "urllib3", "watchdog", "streamlit", "deltalake", "numexpr")
# This GX module sets its own logger to INFO when imported (after us) and logs "Created
# temporary directory ... for ephemeral docs site" at every context creation: a filter stays.
GX_DOCS_LOGGER = "great_expectations.data_context.types.base"


def _warnings_and_up(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (plus ``extra`` fields)."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("batch", "outcome", "entity", "rows", "timings"):
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.getLogger(GX_DOCS_LOGGER).addFilter(_warnings_and_up)  # added once (same object)

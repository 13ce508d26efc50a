"""What a Delta or file error means: damage (with the way out) or a plain failure."""

from __future__ import annotations

import re
from pathlib import Path

from ecom_stream.storage.layout import REBUILD_FIX

_PARQUET_NAME = re.compile(r"[^\s/'\"]+\.parquet")


def damaged(path: Path, problem: str) -> str:
    """The one-line message for a damaged table at ``path``."""
    return f"table {path} is damaged: {problem}; {REBUILD_FIX}"


def short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def log_cause(exc: BaseException) -> str:
    """Why Delta could not load a table's log, in a few words."""
    text = str(exc)
    if "contiguous" in text or "gap" in text:
        return "its _delta_log has a gap (a commit file was deleted)"
    return f"its _delta_log cannot be read ({short(exc)})"


def file_cause(exc: BaseException) -> str | None:
    """The damage behind a read error (a data file missing or unreadable), or None when the
    error is of another kind."""
    text = str(exc)
    found = _PARQUET_NAME.search(text)
    name = found.group(0) if found else None
    if isinstance(exc, FileNotFoundError) or (
        "parquet" in text.lower() and ("not found" in text or "No such file" in text)
    ):
        return f"a data file is missing ({name or short(exc)})"
    if "parquet" in text.lower():
        return f"a data file cannot be read, truncated or corrupt ({name or short(exc)})"
    return None

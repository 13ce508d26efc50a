"""Reads what the lake says about itself: tables, ledger outcomes, quarantine, daemon heartbeat."""

from __future__ import annotations

import time
from typing import Any

from ecom_stream.config import Settings
from ecom_stream.errors import EcomStreamError, LakeDamagedError
from ecom_stream.sources.listing import backlog
from ecom_stream.sources.reconcile import reconciliation
from ecom_stream.storage.lake import (
    INCOMPLETE_REBUILD,
    REBUILD_FIX,
    TABLES,
    Lake,
    incomplete_rebuild_fix,
)

__all__ = ["backlog", "damage", "heartbeat", "lake_status", "quarantine_list"]


def heartbeat(lake: Lake, stale_after: float) -> dict[str, Any] | None:
    """The daemon's last heartbeat, with ``alive`` computed from its age."""
    beat = lake.markers.read("heartbeat")
    if beat is None:
        return None
    age = time.time() - float(beat.get("time", 0))
    beat["age_seconds"] = round(age, 1)
    beat["alive"] = age <= stale_after and not beat.get("stopped", False)
    return beat


def quarantine_list(lake: Lake) -> list[dict[str, Any]]:
    """Quarantined files with their reasons (from the ``.reason.json`` beside each)."""
    items = []
    for path in lake.blobs.quarantined_files():
        reason = lake.blobs.quarantine_reason(path) or {"reason": "(no reason file)"}
        items.append(
            {
                "file": path.name,
                "original_name": reason.get("file", path.name),
                "entity": reason.get("entity"),
                "batch_id": reason.get("batch_id"),
                "reason": reason.get("reason"),
                "quarantined_at": reason.get("quarantined_at"),
            }
        )
    return items


def damage(lake: Lake) -> list[dict[str, Any]]:
    """Everything damaged in the lake, as ``{"table", "problem", "fix"}``: an unfinished
    rebuild, a table log that cannot be loaded or went back below the version the writer
    recorded, and data files missing or of another size than the log says (a ``stat`` each)."""
    if lake.integrity.rebuild_incomplete():
        fix = incomplete_rebuild_fix(lake.root)
        return [{"table": None, "problem": INCOMPLETE_REBUILD, "fix": fix}]
    found: dict[str, str] = {}
    for name in TABLES:
        if not lake.tables.is_created(name):
            continue  # created by the next writer (or reported gone below, if recorded)
        try:
            lake.tables.table(name)
        except LakeDamagedError as exc:
            found[name] = str(exc)
        except EcomStreamError:
            continue  # a table being created right now
    try:
        problems = lake.integrity.version_problems()
    except LakeDamagedError as exc:  # the ledger's newest file itself
        problems = [("ledger", str(exc))]
    for name, message in problems:
        found.setdefault(name, message)
    for name in TABLES:
        if name in found or not lake.tables.is_created(name):
            continue
        try:
            files = lake.integrity.file_problems(name)
        except EcomStreamError:
            continue
        if files:
            found[name] = files[0]
    return [
        {"table": TABLES[name].path, "problem": _problem(message), "fix": REBUILD_FIX}
        for name, message in found.items()
    ]


def _problem(message: str) -> str:
    """The middle of "table X is damaged: PROBLEM; FIX"."""
    _, _, rest = message.partition(" is damaged: ")
    return (rest or message).removesuffix(f"; {REBUILD_FIX}")


def lake_status(settings: Settings) -> dict[str, Any]:
    """Everything ``ecom-stream status`` prints."""
    lake = Lake(settings.lake_dir)
    result: dict[str, Any] = {
        "lake": str(lake.root),
        "landing": str(settings.landing_dir.absolute()),
    }
    result["damage"] = damage(lake)
    damaged = {d["table"] for d in result["damage"]}
    if not lake.tables.exists():
        result["tables"] = {}
        if not result["damage"]:
            result["message"] = (
                "the lake is empty: run `ecom-stream backfill` or `ecom-stream watch`"
            )
    else:
        tables = {}
        for name, spec in TABLES.items():
            try:
                tables[spec.path] = {
                    "version": lake.tables.version(name),
                    "rows": lake.queries.count(name),
                    "files": lake.queries.file_count(name),
                }
            except Exception as exc:  # a table being created right now, or damaged
                tables[spec.path] = {"error": str(exc)}
        result["tables"] = tables
        result["batches"], result["newest_batch_at"], result["newest_batch_file"] = {}, None, None
        if "_ledger" not in damaged:
            columns = ["outcome", "finished_at", "file_name"]
            ledger = lake.tables.read_pandas("ledger", columns=columns)
            result["batches"] = {k: int(v) for k, v in ledger["outcome"].value_counts().items()}
            if not ledger.empty:
                result["newest_batch_at"] = ledger["finished_at"].max().isoformat()
                result["newest_batch_file"] = ledger.sort_values(
                    ["finished_at", "file_name"]
                )["file_name"].iloc[-1]
    result["quarantine"] = quarantine_list(lake)
    result["backlog"] = len(backlog(settings.landing_dir))
    result["daemon"] = heartbeat(lake, settings.heartbeat_stale_seconds)
    result["sources"] = _sources(lake, damaged)
    return result


def _sources(lake: Lake, damaged: set[str]) -> dict[str, Any]:
    """The REST sources' reconciliation (``ecom-stream pull``): reported, landed, merged."""
    if {TABLES["sources"].path, TABLES["ledger"].path} & damaged:
        return {"error": "the sources table or the ledger is damaged"}
    try:
        return reconciliation(lake)
    except EcomStreamError as exc:  # a table being created right now
        return {"error": str(exc)}

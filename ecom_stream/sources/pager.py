"""One pull of one endpoint: pages in order, each landed as a batch file, the cursor moved
only after the page's file is durably in landing.

The cursor of an endpoint (``Cursors``) holds ``since`` (the ``updated_since`` of the
traversal), ``next`` (the token of the page to fetch next, while a traversal is under way)
and ``high`` (the newest update seen in it). When a traversal ends, ``since`` becomes
``high`` minus the lag: the next pull asks only for what changed since (inclusive: the
records updated at exactly ``high`` come again; without a lag they are skipped by key, so an
idle source lands nothing; with one they land again, which is harmless since upserts are
idempotent). A crash
between a file landing and its cursor saving re-reads that page: never a gap.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from ecom_stream.contract.schema import KEYS
from ecom_stream.errors import EcomStreamError
from ecom_stream.sources.rest import ApiContract, Page, PullStopped, fetch_page
from ecom_stream.storage.cursors import Cursors, land_batch

__all__ = ["EndpointPull", "PullTarget", "parse_time", "pull_endpoint", "source_id"]

logger = logging.getLogger(__name__)
MAX_EDGE_KEYS = 10_000  # keys remembered at the newest instant (more: landed again, harmless)


@dataclass
class EndpointPull:
    """What one pull of one endpoint did: the reconciliation row of the ``sources`` table."""

    endpoint: str
    updated_since: str | None
    started_at: datetime
    finished_at: datetime | None = None
    reported_total: int | None = None
    records_landed: int = 0
    records_skipped: int = 0
    resumed: bool = False
    """It went on with a traversal a failed or stopped pull left (``total`` counts it whole)."""
    pages: int = 0
    files: list[str] = field(default_factory=list)
    keys: set[Any] = field(default_factory=set)
    outcome: str = "ok"
    error: str | None = None

    def row(self, pull_id: str, source: str) -> dict[str, Any]:
        return {
            "pull_id": pull_id,
            "source": source,
            "endpoint": self.endpoint,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "updated_since": self.updated_since,
            "reported_total": self.reported_total,
            "records_landed": self.records_landed,
            "records_skipped": self.records_skipped,
            "resumed": self.resumed,
            "distinct_keys": len(self.keys),
            "pages": self.pages,
            "files": list(self.files),
            "outcome": self.outcome,
            "error": self.error,
        }


def source_id(url: str) -> str:
    """A folder name for the cursors of the API at ``url``: its host and port, and a digest
    of the whole URL (two APIs on one host keep their own cursors)."""
    parsed = urlsplit(url)
    host = re.sub(r"[^A-Za-z0-9.]+", "-", parsed.netloc)[:60].strip("-") or "api"
    return f"{host}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def _hashable(value: Any) -> Any:
    """A key as a set member and JSON value (a messy list or object key becomes its text)."""
    if value is None or isinstance(value, str | int | float):
        return value
    return orjson.dumps(value).decode()


def parse_time(value: Any) -> datetime | None:
    """An ISO timestamp as an aware UTC datetime (naive means UTC); None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_batch(records: list[dict[str, Any]]) -> bytes:
    """A JSON array, one record a line (as the generator writes files)."""
    if not records:
        return b"[]\n"
    return b"[\n" + b",\n".join(orjson.dumps(r) for r in records) + b"\n]\n"


@dataclass
class PullTarget:
    """Where a pull writes: landing, the cursors, the source's id, this pull's file stamp."""

    landing: Path
    cursors: Cursors
    source: str
    stamp: str
    lag: timedelta


def _params(contract: ApiContract, state: dict[str, Any]) -> dict[str, str]:
    params = {contract.param_limit: str(contract.page_size)}
    if state.get("since"):
        params[contract.param_since] = state["since"]
    start = {"cursor": None, "page": "1", "offset": "0"}[contract.paging]
    position = state.get("next") or start
    if position is not None:
        params[contract.param_cursor] = str(position)
    return params


def _next(contract: ApiContract, page: Page, params: dict[str, str]) -> str | None:
    """Where the next page starts, or None after the last one."""
    if not page.records:
        return None
    if contract.paging == "cursor":
        return page.next_cursor
    if len(page.records) < contract.page_size:
        return None
    current = int(params[contract.param_cursor])
    step = 1 if contract.paging == "page" else len(page.records)
    return str(current + step)


def _edge(
    contract: ApiContract, key: str, records: list[dict[str, Any]], state: dict[str, Any]
) -> tuple[str | None, list[Any]]:
    """The newest update seen so far in the traversal and the keys updated at exactly then
    (the next pull, asking from that instant on, gets them again: they are skipped)."""
    best, edge = parse_time(state.get("high")), list(state.get("edge") or [])
    for r in records:
        t = parse_time(r.get(contract.field_updated))
        if t is None:
            continue
        if best is None or t > best:
            best, edge = t, [_hashable(r.get(key))]
        elif t == best and len(edge) < MAX_EDGE_KEYS:
            edge.append(_hashable(r.get(key)))
    return (iso(best) if best is not None else None), edge


def _fresh(
    contract: ApiContract, key: str, records: list[dict[str, Any]], state: dict[str, Any]
) -> list[dict[str, Any]]:
    """``records`` without those the previous traversal landed at its newest instant."""
    since, skip = parse_time(state.get("since")), state.get("skip") or []
    if since is None or not skip:
        return records
    known = set(skip)
    return [
        r
        for r in records
        if not (
            _hashable(r.get(key)) in known and parse_time(r.get(contract.field_updated)) == since
        )
    ]


def _land(
    target: PullTarget, endpoint: str, result: EndpointPull, key: str, records: list[dict[str, Any]]
) -> None:
    """Land one page's records as one batch file (durable when this returns)."""
    name = f"{endpoint}-api-{target.stamp}-{result.pages:06d}.json"
    land_batch(target.landing, name, encode_batch(records))
    result.files.append(name)
    result.records_landed += len(records)
    result.keys.update(_hashable(r.get(key)) for r in records)


def pull_endpoint(
    client: httpx.Client,
    contract: ApiContract,
    endpoint: str,
    target: PullTarget,
    *,
    sleep: Callable[[float], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> EndpointPull:
    """Fetch every page of ``endpoint`` from its cursor on, landing each as one file.

    ``stopping`` is asked between pages. Raises ``PullError`` (from ``fetch_page``) when a
    page keeps failing: the cursor then still points at that page, and the exception's
    ``endpoint_pull`` says what landed before it.
    """
    state = target.cursors.read(target.source, endpoint)
    result = EndpointPull(endpoint, state.get("since"), datetime.now(UTC))
    result.resumed = bool(state.get("next"))
    key = KEYS[endpoint]
    extra = {} if sleep is None else {"sleep": sleep}
    try:
        while True:
            params = _params(contract, state)
            page = fetch_page(client, contract, endpoint, params, **extra)
            if result.pages == 0:
                result.reported_total = page.total
            result.pages += 1
            fresh = _fresh(contract, key, page.records, state)
            result.records_skipped += len(page.records) - len(fresh)
            if fresh:
                _land(target, endpoint, result, key, fresh)
            nxt = _next(contract, page, params)
            if nxt is not None and nxt == state.get("next"):
                logger.warning("%s: the API returned the same cursor again; stopping", endpoint)
                nxt = None
            state = _advanced(state, nxt, *_edge(contract, key, page.records, state), target.lag)
            target.cursors.write(target.source, endpoint, state)  # the file is durable now
            if nxt is None:
                break
            if stopping():  # a stop signal: the saved cursor resumes this traversal
                result.outcome = "stopped"
                break
    except PullStopped:
        result.outcome = "stopped"  # the page waiting for its retry is the next one asked for
    except EcomStreamError as exc:
        result.outcome, result.error = "failed", str(exc)
        result.finished_at = datetime.now(UTC)
        exc.add_note(f"{endpoint}: {result.records_landed} records landed before the failure")
        exc.endpoint_pull = result  # type: ignore[attr-defined]
        raise
    result.finished_at = datetime.now(UTC)
    return result


def _advanced(
    state: dict[str, Any], nxt: str | None, high: str | None, edge: list[Any], lag: timedelta
) -> dict[str, Any]:
    """The cursor after a landed page: mid-traversal, or (``nxt`` None) the next ``since``
    (with a lag, nothing is skipped: the overlap is read again on purpose)."""
    if nxt is not None:
        return {**state, "next": nxt, "high": high, "edge": edge}
    newest = parse_time(high)
    if newest is None:
        return {"since": state.get("since"), "skip": state.get("skip") or []}
    return {"since": iso(newest - lag), "skip": [] if lag else edge}

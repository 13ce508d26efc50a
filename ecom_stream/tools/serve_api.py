"""``ecom-stream serve-api``: the simulated source served as a REST API, for the demo and tests.

It answers ``GET /products`` and ``GET /orders`` with the default contract of ``pull``:
``updated_since`` (ISO, inclusive), ``limit`` and ``cursor`` in, ``{"data": [...],
"next_cursor": token | null, "total": N}`` out. It holds the newest version of every record
(the generator's stream, its updates included: an order re-sent with a new status replaces
the earlier one, as in a database), ordered by (``updated_at``, key); a cursor is the
position after the last record sent (keyset paging: records updated meanwhile move to the
end, so a traversal never skips one). With ``interval``, one more simulated day of orders is
added every ``interval`` seconds.
"""

from __future__ import annotations

import base64
import bisect
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ecom_stream.contract.schema import ENTITIES, KEYS
from ecom_stream.tools.generate import GenerateOptions
from ecom_stream.tools.generate_stream import Catalogue, OrderStream

__all__ = ["SimulatedApi", "serving"]

logger = logging.getLogger(__name__)
MAX_LIMIT = 10_000


def _epoch(value: Any) -> float:
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return 0.0
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


class SimulatedApi:
    """The records of the simulated source by entity, newest version per key."""

    def __init__(self, options: GenerateOptions) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.records: dict[str, dict[Any, tuple[float, dict[str, Any]]]] = {e: {} for e in ENTITIES}
        self._index: dict[str, list[tuple[float, Any]] | None] = dict.fromkeys(ENTITIES)
        self.catalogue = Catalogue(options)
        self.stream = OrderStream(options, self.catalogue)
        self.next_batch = options.start
        for k in range(1, options.product_batches + 1):
            self.add("products", self.catalogue.file_rows(k))
        for _ in range(options.batches):
            self.add_day()

    def add(self, entity: str, rows: list[dict[str, Any]]) -> None:
        """Store ``rows`` (each replaces the key's earlier version)."""
        key = KEYS[entity]
        with self.lock:
            for row in rows:
                self.records[entity][row[key]] = (_epoch(row.get("updated_at")), row)
            self._index[entity] = None

    def add_day(self) -> None:
        """One more simulated day of orders (new orders and updates of open ones)."""
        self.add("orders", self.stream.batch(self.next_batch))
        self.next_batch += 1

    def page(self, entity: str, since: str | None, limit: int, cursor: str | None) -> dict:
        """The page after ``cursor`` of the records updated at or after ``since``."""
        with self.lock:
            index = self._index[entity]
            if index is None:
                index = sorted((t, k) for k, (t, _row) in self.records[entity].items())
                self._index[entity] = index
            low = bisect.bisect_left(index, (_epoch(since),)) if since else 0
            start = low
            if cursor:
                start = max(low, bisect.bisect_right(index, _decode(cursor)))
            chosen = index[start : start + limit]
            data = [self.records[entity][k][1] for _t, k in chosen]
            more = start + limit < len(index)
            return {
                "data": data,
                "next_cursor": _encode(chosen[-1]) if more and chosen else None,
                "total": len(index) - low,
            }


def _encode(position: tuple[float, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode()


def _decode(token: str) -> tuple[float, Any]:
    try:
        stamp, key = json.loads(base64.urlsafe_b64decode(token.encode()))
        return float(stamp), key
    except (ValueError, TypeError):
        raise ValueError(f"bad cursor {token!r}") from None


def _handler(api: SimulatedApi, token: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            entity = url.path.strip("/")
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                return self._send(401, {"error": "missing or wrong bearer token"})
            if entity not in ENTITIES:
                return self._send(404, {"error": f"no endpoint {url.path}"})
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                limit = min(MAX_LIMIT, max(1, int(query.get("limit", "1000"))))
                body = api.page(entity, query.get("updated_since"), limit, query.get("cursor"))
            except ValueError as exc:
                return self._send(400, {"error": str(exc)})
            return self._send(200, body)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

    return Handler


@contextmanager
def serving(
    api: SimulatedApi,
    port: int = 0,
    *,
    token: str | None = None,
    interval: float = 0.0,
    host: str = "127.0.0.1",
) -> Iterator[str]:
    """Serve ``api`` on ``host:port`` (0: a free port) in a thread; yields the base URL.
    With ``interval`` > 0 a day of orders is added every ``interval`` seconds."""
    server = ThreadingHTTPServer((host, port), _handler(api, token))
    server.daemon_threads = True
    stop = threading.Event()
    threads = [threading.Thread(target=server.serve_forever, daemon=True)]
    if interval > 0:

        def grow() -> None:
            while not stop.wait(interval):
                api.add_day()

        threads.append(threading.Thread(target=grow, daemon=True))
    for thread in threads:
        thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()

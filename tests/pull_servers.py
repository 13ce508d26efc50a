"""HTTP servers for tests/test_pull.py: the simulated source behind scripted faults, and an
API with other parameter and field names (offset paging)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ecom_stream.tools.serve_api import SimulatedApi


class FaultServer:
    """The simulated source behind scripted faults: ``faults[endpoint][i]`` applies to the
    endpoint's i-th request ("ok", "500", "429", "slow", "truncated", "cut", "html503",
    "overlap": the page plus the previous page's last records again; "down": 500 forever)."""

    def __init__(self, api: SimulatedApi, faults: dict[str, list[str]]) -> None:
        self.api, self.faults = api, faults
        self.requests: dict[str, list[dict[str, str]]] = {"products": [], "orders": []}
        self.last: dict[str, list[Any]] = {"products": [], "orders": []}

    def fault(self, endpoint: str, query: dict[str, str]) -> str:
        seen = self.requests[endpoint]
        seen.append(query)
        script = self.faults.get(endpoint, [])
        if "down" in script and len(seen) > script.index("down"):
            return "500"
        return script[len(seen) - 1] if len(seen) <= len(script) else "ok"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                endpoint = url.path.strip("/")
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fault = server.fault(endpoint, query)
                if fault in ("500", "429", "html503"):
                    status = {"500": 500, "429": 429, "html503": 503}[fault]
                    body = b"<html><body>Service Unavailable</body></html>"
                    self.send_response(status)
                    self.send_header("Content-Type", "text/html")
                    if fault == "429":
                        self.send_header("Retry-After", "7")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if fault == "slow":
                    time.sleep(1.5)
                page = server.api.page(
                    endpoint, query.get("updated_since"), int(query["limit"]), query.get("cursor")
                )
                if fault == "overlap":
                    page = {**page, "data": server.last[endpoint][-25:] + page["data"]}
                server.last[endpoint] = page["data"]
                data = json.dumps(page).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if fault != "cut":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault in ("truncated", "cut"):
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def fault_server(
    api: SimulatedApi, faults: dict[str, list[str]]
) -> Iterator[tuple[str, FaultServer]]:
    script = FaultServer(api, faults)
    server = ThreadingHTTPServer(("127.0.0.1", 0), script.handler())
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # a client gone after a slow page
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def offset_api(records: list[dict[str, Any]]) -> Iterator[str]:
    """An API of other names: ``GET /orders?per_page=N&offset=K`` -> ``{"items", "count"}``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            rows = records if url.path == "/v2/orders" else []
            start, size = int(query["offset"]), int(query["per_page"])
            data = json.dumps({"items": rows[start : start + size], "count": len(rows)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

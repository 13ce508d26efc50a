"""One small HTTP server for the daemon: ``/metrics`` (Prometheus text), ``/healthz`` and
``/ready``.

It is prometheus_client's WSGI app under the standard library's ``wsgiref`` server, one thread
per request (a slow scraper never holds up a health check), on its own daemon thread: the
pipeline never waits for it. ``/healthz`` answers 200 while the process can answer at all;
``/ready`` answers 200 or 503 with a JSON body naming what is wrong (see ``Readiness``).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from ecom_stream.errors import ConfigError

__all__ = ["HealthServer", "Readiness"]

logger = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, Any]]
"""Returns ``{"ready": bool, "checks": {...}, "reason": str | None}``."""
StartResponse = Callable[..., Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hung client never keeps the process from exiting
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6  # an IPv6 --metrics-host such as "::1"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


class HealthServer:
    """Serves the endpoints on ``host:port`` (port 0: any free port, see :attr:`port`)."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, readiness: Readiness
    ) -> None:
        self._metrics = make_wsgi_app(registry)
        self._readiness = readiness
        try:
            self._server = make_server(
                host, port, self._app, server_class=_Server6 if ":" in host else _Server,
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                "(--metrics-port/--metrics-host or ECOM_METRICS_PORT/ECOM_METRICS_HOST)"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="ecom-stream-metrics", daemon=True,
        )  # fmt: skip

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when asked for port 0)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        logger.info("metrics on %s/metrics, health on %s/healthz and %s/ready",
                    self.url, self.url, self.url)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _app(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return _reply(start, "200 OK", {"alive": True})
        if path == "/ready":
            try:
                state = self._readiness()
            except Exception as exc:  # a check that fails is an answer too: not ready
                state = {"ready": False, "reason": f"readiness check failed: {exc}"}
            return _reply(start, "200 OK" if state["ready"] else "503 Service Unavailable", state)
        if path in ("/metrics", "/"):
            return self._metrics(environ, start)  # type: ignore[no-any-return]
        return _reply(start, "404 Not Found", {"error": f"no such endpoint: {path}"})


def _reply(start: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body, default=str).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                   ("Cache-Control", "no-store")])
    return [data]

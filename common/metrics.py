"""The HTTP endpoint every long-running command serves when `KIDNEYCT_METRICS_PORT` is set:
`/metrics` (Prometheus), `/healthz` (alive) and `/readyz` (ready, see `common.health`).

Each component keeps its metrics on a registry it is given (never the global one at import time),
so tests and several components in one process (`kidneyct serve`) do not collide.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from common.health import Readiness


@dataclass
class MetricsServer:
    server: WSGIServer

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Probes every few seconds would flood the log; Prometheus has its own view."""


def health_app(
    metrics_app: Callable[..., Iterable[bytes]], readiness: Readiness | None
) -> Callable[..., Any]:
    """A WSGI app: /healthz and /readyz here, everything else to the Prometheus app."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _json(start_response, 200, {"status": "alive"})
        if path == "/readyz":
            ready, checks = readiness.ready() if readiness is not None else (True, {})
            return _json(start_response, 200 if ready else 503, {"ready": ready, "checks": checks})
        return metrics_app(environ, start_response)

    return app


def _json(start_response: Callable[..., Any], status: int, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 503: "Service Unavailable"}[status]
    start_response(
        f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def serve_metrics(
    registry: CollectorRegistry, *, host: str, port: int, readiness: Readiness | None = None
) -> MetricsServer:
    """Expose `registry` at http://host:port/metrics, with /healthz and /readyz (port 0 picks a free one)."""
    app = health_app(make_wsgi_app(registry), readiness)
    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(server)

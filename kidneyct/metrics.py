"""The Prometheus endpoint every long-running command serves when `KIDNEYCT_METRICS_PORT` is set.

Each component keeps its metrics on a registry it is given (never the global one at import time),
so tests and several components in one process (`kidneyct serve`) do not collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


@dataclass
class MetricsServer:
    server: WSGIServer

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(registry: CollectorRegistry, *, host: str, port: int) -> MetricsServer:
    """Expose `registry` at http://host:port/metrics (port 0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server)

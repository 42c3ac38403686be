"""Liveness and readiness, served beside /metrics: `/healthz` says the process answers, `/readyz`
says it can do its work now (database reachable, broker reachable, for a worker a model loaded).

Each readiness check is a named callable that returns True when ready; it runs with a time limit
in its own thread (a database that hangs on connect must not hang the probe), and its answer is
cached briefly so a busy orchestrator does not hammer the database.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

Check = Callable[[], bool]


class Readiness:
    def __init__(self, checks: Mapping[str, Check], *, timeout_s: float = 2.0, cache_s: float = 1.0) -> None:
        self.checks = dict(checks)
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._pool = ThreadPoolExecutor(max_workers=max(len(self.checks), 1), thread_name_prefix="readyz")
        self._lock = threading.Lock()
        self._last: tuple[float, dict[str, str]] | None = None

    def report(self) -> dict[str, str]:
        """Each check's verdict: "ok", or why not."""
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self._cache_s:
                return dict(self._last[1])
            futures = {name: self._pool.submit(_verdict, check) for name, check in self.checks.items()}
            verdicts = {}
            for name, future in futures.items():
                try:
                    verdicts[name] = future.result(timeout=self._timeout_s)
                except FutureTimeout:
                    verdicts[name] = f"no answer within {self._timeout_s:g} s"
            self._last = (now, verdicts)
            return dict(verdicts)

    def ready(self) -> tuple[bool, dict[str, str]]:
        verdicts = self.report()
        return all(v == "ok" for v in verdicts.values()), verdicts


def _verdict(check: Check) -> str:
    try:
        return "ok" if check() else "not ready"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the type says why
        return f"{type(exc).__name__}"


def database_check(sessions: sessionmaker[Session]) -> Check:
    def check() -> bool:
        with sessions() as session:
            session.execute(text("SELECT 1"))
        return True

    return check


def broker_check(bootstrap: str, *, timeout_s: float = 1.0) -> Check:
    """True when a TCP connection to any bootstrap server opens (the clients' own sockets are
    not thread-safe to probe)."""
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]

    def check() -> bool:
        for server in servers:
            host, _, port = server.rpartition(":")
            try:
                with socket.create_connection(
                    (host.strip("[]") or "localhost", int(port)), timeout=timeout_s
                ):
                    return True
            except OSError:
                continue
        return False

    return check


def process_readiness(
    *,
    sessions: sessionmaker[Session] | None,
    kafka_bootstrap: str | None,
    models_loaded: Check | None = None,
    catalog_connected: Check | None = None,
) -> Readiness:
    """The checks of one process: the database it uses, the broker (when Kafka is configured;
    the embedded queue is the database), for a worker whether its model is loaded, and for a
    listener that runs the catalogue whether the catalogue has its consumer (it retries until the
    stream answers; meanwhile accepted instances are not yet recorded)."""
    checks: dict[str, Check] = {}
    if sessions is not None:
        checks["database"] = database_check(sessions)
    if kafka_bootstrap:
        checks["broker"] = broker_check(kafka_bootstrap)
    if models_loaded is not None:
        checks["model"] = models_loaded
    if catalog_connected is not None:
        checks["catalog"] = catalog_connected
    return Readiness(checks)

"""/healthz and /readyz beside /metrics (common/metrics.py, common/health.py)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from common.health import Readiness, broker_check, database_check, process_readiness
from common.metrics import serve_metrics
from storage.db.engine import make_engine, make_session_factory


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_healthz_readyz_and_metrics_on_one_port(tmp_path: Path) -> None:
    """/healthz answers 200, /readyz 200 with every check ok, /metrics still serves the registry."""
    registry = CollectorRegistry()
    Counter("kidneyct_test_things", "Things.", registry=registry).inc()
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    readiness = process_readiness(sessions=make_session_factory(engine), kafka_bootstrap=None)
    server = serve_metrics(registry, host="127.0.0.1", port=0, readiness=readiness)
    try:
        assert _get(server.port, "/healthz") == (200, b'{"status": "alive"}')
        status, body = _get(server.port, "/readyz")
        assert status == 200 and json.loads(body) == {"ready": True, "checks": {"database": "ok"}}
        status, body = _get(server.port, "/metrics")
        assert status == 200 and b"kidneyct_test_things_total 1.0" in body
    finally:
        server.close()
        engine.dispose()


def test_readyz_is_503_and_says_which_check_failed() -> None:
    """An unreachable broker and a worker without a model make /readyz 503, naming both."""
    readiness = process_readiness(
        sessions=None, kafka_bootstrap=f"127.0.0.1:{_closed_port()}", models_loaded=lambda: False
    )
    server = serve_metrics(CollectorRegistry(), host="127.0.0.1", port=0, readiness=readiness)
    try:
        status, body = _get(server.port, "/readyz")
        assert status == 503
        assert json.loads(body) == {"ready": False, "checks": {"broker": "not ready", "model": "not ready"}}
        assert _get(server.port, "/healthz")[0] == 200  # alive all the same
    finally:
        server.close()


def test_a_hanging_check_answers_within_its_time_limit() -> None:
    """A check that hangs (a database that does not answer) makes the probe fail, not hang."""
    readiness = Readiness({"database": lambda: time.sleep(5) or True}, timeout_s=0.3)
    started = time.monotonic()
    ready, checks = readiness.ready()
    assert not ready and checks["database"].startswith("no answer")
    assert time.monotonic() - started < 2


def test_broker_and_database_checks(tmp_path: Path) -> None:
    """The broker check is true for a listening port and false for a closed one; the database
    check raises for a database it cannot open."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert broker_check(f"127.0.0.1:{_closed_port()},127.0.0.1:{listening.getsockname()[1]}")()
    assert not broker_check(f"127.0.0.1:{_closed_port()}")()
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'db.sqlite'}")
    verdict = Readiness({"database": database_check(make_session_factory(engine))}).report()["database"]
    assert verdict == "OperationalError"
    engine.dispose()

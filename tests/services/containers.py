"""Kafka and PostgreSQL in containers for the test fixtures (testcontainers), on loopback ports.

The same code serves two kinds of engine:
- the private engine of tests/services/docker.sh (what CI uses): nothing can be pulled there, so the
  images are the stand-ins that tests/images/build.sh builds;
- any other Docker engine (DOCKER_HOST, or the default socket): the public images that
  docker-compose.yml uses, which honour the same variables.
KIDNEYCT_TEST_KAFKA_IMAGE / KIDNEYCT_TEST_POSTGRES_IMAGE choose others.

Every container sits on a network the fixture creates and publishes on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from kafka_process import ping

HERE = Path(__file__).resolve().parent
STAND_IN_IMAGES = {"kafka": "kidneyct-test/kafka:3.9.1", "postgres": "kidneyct-test/postgres:15"}
PUBLIC_IMAGES = {"kafka": "apache/kafka:3.9.1", "postgres": "postgres:16"}
START_TIMEOUT_S = 180.0


def test_engine_socket() -> Path:
    """The socket of tests/services/docker.sh's engine (its folder logic, in Python)."""
    folder = os.environ.get("KIDNEYCT_DOCKER_DIR")
    if not folder:
        services = os.environ.get("KIDNEYCT_SERVICES_DIR") or str(HERE.parents[1] / ".services")
        folder = str(Path(services) / "docker")
    return Path(folder) / "docker.sock"


def use_test_engine() -> bool:
    """Point testcontainers at the private test engine when it runs and nothing else was chosen."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"] == f"unix://{test_engine_socket()}"
    if not test_engine_socket().is_socket():
        return False
    os.environ["DOCKER_HOST"] = f"unix://{test_engine_socket()}"
    # Ryuk (the reaper) is an image from a registry; the fixtures remove their own containers.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
    return True


def image(service: str) -> str:
    chosen = os.environ.get(f"KIDNEYCT_TEST_{service.upper()}_IMAGE")
    if chosen:
        return chosen
    on_test_engine = os.environ.get("DOCKER_HOST") == f"unix://{test_engine_socket()}"
    return (STAND_IN_IMAGES if on_test_engine else PUBLIC_IMAGES)[service]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _publish_on_loopback(container: object, port: int) -> int:
    """Publish `port` on 127.0.0.1 only (docker-py's (ip, port) form; `with_bind_ports` has no ip)."""
    host_port = _free_port()
    container.ports[f"{port}/tcp"] = ("127.0.0.1", host_port)  # type: ignore[attr-defined]
    return host_port


def _await(what: str, ready: object, container: object) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():  # type: ignore[operator]
        if time.monotonic() > deadline:
            logs = b"".join(container.get_logs()).decode(errors="replace")[-3000:]  # type: ignore[attr-defined]
            raise TimeoutError(f"{what} did not answer within {START_TIMEOUT_S:.0f}s; log tail:\n{logs}")
        time.sleep(0.5)


@contextlib.contextmanager
def network() -> Iterator[object]:
    """A bridge network of its own for this test session's containers."""
    from testcontainers.core.network import Network

    with Network() as made:
        yield made


@contextlib.contextmanager
def kafka(on_network: object) -> Iterator[str]:
    """A single-node KRaft broker set up like tests/services/kafka-server.properties.in; yields host:port."""
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(image("kafka")).with_network(on_network)  # type: ignore[arg-type]
    host_port = _publish_on_loopback(container, 9092)
    settings = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{host_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "true",
        "KAFKA_NUM_PARTITIONS": "1",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "4",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
        "KAFKA_HEAP_OPTS": "-Xms64m -Xmx384m",
    }
    for name, value in settings.items():
        container.with_env(name, value)
    bootstrap = f"127.0.0.1:{host_port}"
    with container:
        _await(f"Kafka ({image('kafka')}) at {bootstrap}", lambda: ping(bootstrap, timeout_s=2.0), container)
        yield bootstrap


@contextlib.contextmanager
def postgres(on_network: object) -> Iterator[str]:
    """A PostgreSQL server with test settings (fsync off, 200 connections); yields its `postgres` URL."""
    from sqlalchemy import create_engine, text
    from testcontainers.core.container import DockerContainer

    container = (
        DockerContainer(image("postgres"))
        .with_network(on_network)  # type: ignore[arg-type]
        .with_env("POSTGRES_PASSWORD", "kidneyct-test")
        .with_command(
            "postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
    )
    host_port = _publish_on_loopback(container, 5432)
    url = f"postgresql+psycopg://postgres:kidneyct-test@127.0.0.1:{host_port}/postgres"

    def answers() -> bool:
        engine = create_engine(url, pool_size=1, max_overflow=0)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - still starting
            return False
        finally:
            engine.dispose()

    with container:
        _await(f"PostgreSQL ({image('postgres')}) on 127.0.0.1:{host_port}", answers, container)
        yield url

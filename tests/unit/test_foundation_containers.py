"""tests/services/containers.py: which engine and which images the fixtures' containers use."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import containers
import pytest

ENV = ("DOCKER_HOST", "KIDNEYCT_DOCKER_DIR", "KIDNEYCT_TEST_KAFKA_IMAGE", "KIDNEYCT_TEST_POSTGRES_IMAGE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # setenv first so that monkeypatch restores even what containers.py sets in os.environ itself.
    for name in (*ENV, "TESTCONTAINERS_RYUK_DISABLED", "TESTCONTAINERS_HOST_OVERRIDE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def _listening_socket(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    return server


def test_no_engine_and_no_docker_host_leaves_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the test engine's socket, nothing is chosen and DOCKER_HOST stays unset."""
    monkeypatch.setenv("KIDNEYCT_DOCKER_DIR", str(tmp_path))
    assert containers.use_test_engine() is False
    assert "DOCKER_HOST" not in os.environ


def test_running_test_engine_is_chosen_with_stand_in_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's socket sets DOCKER_HOST, disables Ryuk, uses loopback and the images built here."""
    monkeypatch.setenv("KIDNEYCT_DOCKER_DIR", str(tmp_path))
    server = _listening_socket(tmp_path / "docker.sock")
    try:
        assert containers.use_test_engine() is True
    finally:
        server.close()
    assert os.environ["DOCKER_HOST"] == f"unix://{tmp_path / 'docker.sock'}"
    assert os.environ["TESTCONTAINERS_RYUK_DISABLED"] == "true"
    assert os.environ["TESTCONTAINERS_HOST_OVERRIDE"] == "127.0.0.1"
    assert containers.image("kafka") == "kidneyct-test/kafka:3.9.1"
    assert containers.image("postgres") == "kidneyct-test/postgres:15"


def test_another_engine_gets_the_public_images_of_docker_compose(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DOCKER_HOST of someone else's engine is kept, with the images docker-compose.yml pulls."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert containers.use_test_engine() is False
    assert os.environ["DOCKER_HOST"] == "tcp://127.0.0.1:2375"
    assert containers.image("kafka") == "apache/kafka:3.9.1"
    assert containers.image("postgres") == "postgres:16"


def test_image_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """KIDNEYCT_TEST_KAFKA_IMAGE / KIDNEYCT_TEST_POSTGRES_IMAGE choose the images."""
    monkeypatch.setenv("KIDNEYCT_TEST_KAFKA_IMAGE", "example/kafka:1")
    monkeypatch.setenv("KIDNEYCT_TEST_POSTGRES_IMAGE", "example/postgres:2")
    assert (containers.image("kafka"), containers.image("postgres")) == (
        "example/kafka:1",
        "example/postgres:2",
    )

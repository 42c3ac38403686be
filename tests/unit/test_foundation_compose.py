"""docker-compose.yml cannot run here: check that it only uses commands and settings that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from kidneyct.cli import SUBCOMMANDS, cli
from kidneyct.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# Services that run our image (the others are Kafka and PostgreSQL).
OURS = {name: service for name, service in SERVICES.items() if "build" in service}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_has_the_required_services() -> None:
    """Kafka, PostgreSQL, migrate, kafka-init, listener, worker and the trainer under a profile."""
    assert {"kafka", "postgres", "migrate", "kafka-init", "listener", "worker", "trainer"} <= set(SERVICES)
    assert SERVICES["kafka"]["image"] == "apache/kafka:3.9.1"
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert SERVICES["postgres"]["image"].startswith("postgres:16")
    assert SERVICES["trainer"]["profiles"] == ["training"]
    assert SERVICES["trainer"]["command"] == ["train", "--min-new-labels", "100"]


@pytest.mark.parametrize("name", sorted(OURS))
def test_command_is_a_kidneyct_subcommand(name: str) -> None:
    """Each of our services runs a subcommand that the CLI lists."""
    command = OURS[name]["command"]
    assert isinstance(command, list) and command, f"{name}: command must be an exec-form list"
    assert command[0] in SUBCOMMANDS


def _resolve(args: list[str]) -> click.Command:
    """Walk the click command tree along `args`, as `kidneyct` would."""
    command: click.Command = cli
    ctx = click.Context(cli)
    for arg in args:
        if not isinstance(command, click.Group) or arg.startswith("-"):
            break
        sub = command.get_command(ctx, arg)
        assert sub is not None, f"no command {arg!r} in {args}"
        command = sub
    return command


@pytest.mark.parametrize("name", sorted(OURS))
def test_command_and_its_options_parse(name: str) -> None:
    """The whole command line, options included, is accepted by the real CLI (checked with --help)."""
    command = OURS[name]["command"]
    resolved = _resolve(command)
    assert not (resolved.help or "").startswith("(not available"), f"{name}: {resolved.help}"
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, f"{name}: {result.output}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_kidneyct_variable_is_a_setting(name: str) -> None:
    """Every KIDNEYCT_* variable a service sets is a field of Settings."""
    fields = {f"KIDNEYCT_{field.upper()}" for field in Settings.model_fields}
    unknown = {key for key in _environment(SERVICES[name]) if key.startswith("KIDNEYCT_")} - fields
    assert unknown == set()


@pytest.mark.parametrize("name", sorted(OURS))
def test_environment_values_are_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The values a service sets parse as Settings (types and formats are right)."""
    for key, value in _environment(OURS[name]).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.uses_kafka
    assert settings.resolved_database_url().startswith("postgresql+psycopg://")


def test_worker_reserves_a_gpu_and_can_scale() -> None:
    """The worker reserves one GPU and has no fixed container name or host port, so --scale works."""
    worker = SERVICES["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert device["count"] == 1
    assert "container_name" not in worker
    assert "ports" not in worker


def test_services_have_healthchecks_and_named_volumes() -> None:
    """Long-running services have healthchecks; archive, models and database are named volumes."""
    for name in ("kafka", "postgres", "listener", "worker"):
        assert "healthcheck" in SERVICES[name], name
        if name in ("listener", "worker"):
            assert "/readyz" in str(SERVICES[name]["healthcheck"]["test"]), name
    assert {"archive", "models", "database"} <= set(COMPOSE["volumes"])
    mounts = {volume.split(":")[0] for service in SERVICES.values() for volume in service.get("volumes", [])}
    assert {"archive", "models", "database"} <= mounts


def test_one_shot_services_gate_the_long_running_ones() -> None:
    """The listener and workers start only after migrate and kafka-init completed successfully."""
    for name in ("listener", "worker"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["kafka-init"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["command"] == ["db", "upgrade"]
    assert SERVICES["kafka-init"]["command"] == ["kafka", "init"]

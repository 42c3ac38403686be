"""docker-compose.yml cannot run here: check that it only uses commands and settings that exist."""

from __future__ import annotations

import re
import runpy
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


# ${VAR}, ${VAR:-default}, ${VAR:?message}: Compose's interpolation, with VAR from this table.
_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::(?P<op>[-?])(?P<arg>[^}]*))?\}")
HOST_ENV = {"POSTGRES_PASSWORD": "s3cret-Pw"}


def _interpolate(value: str, host_env: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if host_env.get(name):
            return host_env[name]
        if op == "-":
            return arg
        raise KeyError(f"{name} is required: {arg}")

    return _INTERPOLATION.sub(replace, value)


def _environment(service: dict[str, Any], host_env: dict[str, str] = HOST_ENV) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _interpolate(str(v), host_env) for k, v in env.items()}


def test_compose_has_the_required_services() -> None:
    """Kafka, PostgreSQL, migrate, kafka-init, listener, worker and the trainer under a profile."""
    assert {"kafka", "postgres", "migrate", "kafka-init", "listener", "worker-gpu0", "trainer"} <= set(
        SERVICES
    )
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


def _gpu_reservation(service: dict[str, Any]) -> dict[str, Any]:
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    return dict(device)


def test_each_worker_reserves_its_own_gpu() -> None:
    """Worker services reserve distinct GPUs by device_ids (not `count`, which --scale would repeat)."""
    workers = {name: s for name, s in SERVICES.items() if name.startswith("worker-gpu")}
    assert workers, "no worker-gpuN service"
    ids = []
    for name, worker in workers.items():
        device = _gpu_reservation(worker)
        assert "count" not in device, name
        assert device["device_ids"] == [name.removeprefix("worker-gpu")]
        # The container sees its one reserved GPU as GPU 0.
        assert _environment(worker)["KIDNEYCT_DEVICE"] == "gpu:0"
        assert "container_name" not in worker and "ports" not in worker
        ids.extend(device["device_ids"])
    assert len(ids) == len(set(ids))


def test_gpu_worker_generator_adds_one_service_per_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/compose_gpu_workers.py 3 writes worker-gpu1 and worker-gpu2, each the template but its GPU."""
    script = REPO / "scripts" / "compose_gpu_workers.py"
    namespace = runpy.run_path(str(script))
    namespace["main"](["3"])
    generated = yaml.safe_load(capsys.readouterr().out)["services"]
    assert sorted(generated) == ["worker-gpu1", "worker-gpu2"]
    template = SERVICES["worker-gpu0"]
    for index, name in ((1, "worker-gpu1"), (2, "worker-gpu2")):
        assert _gpu_reservation(generated[name])["device_ids"] == [str(index)]
        assert {k: v for k, v in generated[name].items() if k != "deploy"} == {
            k: v for k, v in template.items() if k != "deploy"
        }


def test_postgres_password_is_required() -> None:
    """Without POSTGRES_PASSWORD Compose refuses to start: no silent default password anywhere."""
    text = (REPO / "docker-compose.yml").read_text()
    assert "POSTGRES_PASSWORD:-" not in text
    assert "${POSTGRES_PASSWORD:?" in SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    for name in ("postgres", "listener", "worker-gpu0"):
        with pytest.raises(KeyError, match="POSTGRES_PASSWORD is required"):
            _environment(SERVICES[name], host_env={})


def test_postgres_is_published_for_reporting() -> None:
    """PostgreSQL publishes its port (loopback by default, POSTGRES_PUBLISH to change it)."""
    (mapping,) = SERVICES["postgres"]["ports"]
    assert mapping == "${POSTGRES_PUBLISH:-127.0.0.1:5432}:5432"
    assert _interpolate(mapping, {}) == "127.0.0.1:5432:5432"
    assert _interpolate(mapping, {"POSTGRES_PUBLISH": "0.0.0.0:15432"}) == "0.0.0.0:15432:5432"


def test_dockerignore_keeps_the_build_context_small() -> None:
    """The build context leaves out the venv, local services, data, git and caches."""
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".services", "kidneyct-data", "**/__pycache__"} <= ignored
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.MULTILINE)
    for sources in copied:  # nothing the Dockerfile needs is ignored
        assert not set(sources.split()) & ignored


def test_the_image_copies_every_package_the_project_installs() -> None:
    """Each package of pyproject's include list is copied into the image (a missing one fails at import)."""
    include = re.search(r"^include = \[(.+)\]$", (REPO / "pyproject.toml").read_text(), flags=re.MULTILINE)
    assert include is not None
    packages = {name.strip().strip('"').rstrip("*") for name in include.group(1).split(",")}
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = {
        source
        for line in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.MULTILINE)
        for source in line.split()
    }
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"


def test_services_have_healthchecks_and_named_volumes() -> None:
    """Long-running services have healthchecks; archive, models and database are named volumes."""
    for name in ("kafka", "postgres", "listener", "worker-gpu0"):
        assert "healthcheck" in SERVICES[name], name
        if name in ("listener", "worker"):
            assert "/readyz" in str(SERVICES[name]["healthcheck"]["test"]), name
    assert {"archive", "models", "database"} <= set(COMPOSE["volumes"])
    mounts = {volume.split(":")[0] for service in SERVICES.values() for volume in service.get("volumes", [])}
    assert {"archive", "models", "database"} <= mounts


def test_one_shot_services_gate_the_long_running_ones() -> None:
    """The listener and workers start only after migrate and kafka-init completed successfully."""
    for name in ("listener", "worker-gpu0"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["kafka-init"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["command"] == ["db", "upgrade"]
    assert SERVICES["kafka-init"]["command"] == ["kafka", "init"]


def _mount_target(volume: str | dict[str, Any]) -> str:
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


def test_the_s3_overlay_uses_real_settings_and_takes_the_archive_volume_away() -> None:
    """Compose merges volumes by their path in the container: the overlay's tmpfs at the archive's
    path replaces the shared `archive` volume (plain YAML, so Compose v1 reads it too)."""
    overlay = yaml.safe_load((REPO / "docker-compose.s3.yml").read_text())
    services = overlay["services"]
    assert {"minio", "minio-init", "listener", "worker-gpu0"} <= set(services)
    fields = {name.upper() for name in Settings.model_fields}
    for name in ("listener", "worker-gpu0"):
        env = _environment(services[name], {**HOST_ENV, "MINIO_ROOT_PASSWORD": "minio-pw-123"})
        assert env["KIDNEYCT_ARCHIVE_URL"].startswith("s3://")
        assert {k.removeprefix("KIDNEYCT_") for k in env if k.startswith("KIDNEYCT_")} <= fields
        archive_path = _environment(SERVICES[name])["KIDNEYCT_ARCHIVE_DIR"]
        base_targets = {_mount_target(v) for v in SERVICES[name]["volumes"] if str(v).startswith("archive:")}
        assert base_targets == {archive_path}
        shadowing = [v for v in services[name]["volumes"] if _mount_target(v) == archive_path]
        assert [v["type"] for v in shadowing] == ["tmpfs"], f"{name} still mounts the shared archive"
        assert name in SERVICES  # the overlay only changes services the base file has

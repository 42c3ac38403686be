"""docker-compose.yml for real (`make compose-test`): up, migrate, topics, a study from DCMTK's storescu
to the published DICOM port, its study_results row over SQL from the published PostgreSQL port, two
workers that both consume; then the same project with docker-compose.s3.yml (the archive in a bucket,
no shared archive volume), then `down -v`.

It needs the private engine of tests/services/docker.sh and the images of tests/images/build.sh,
which `make compose-test` provides; anywhere else it is skipped (`make test` does not run it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from e2e_kit import dcmtk_tool
from sqlalchemy import create_engine, text

from training.synth.generate import generate

REPO = Path(__file__).resolve().parents[2]
OVERRIDE = REPO / "tests" / "compose" / "docker-compose.test.yml"
S3_FILES = (REPO / "docker-compose.s3.yml", REPO / "tests" / "compose" / "docker-compose.s3.test.yml")
ARCHIVE_PATH = "/var/lib/kidneyct/archive"
T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    os.environ.get("KIDNEYCT_COMPOSE_TEST") != "1",
    reason="`make compose-test` runs this (private Docker engine, images built here)",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(what: str, condition: Callable[[], T | None], timeout_s: float, interval_s: float = 2.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


class Stack:
    """One compose project on the test engine: `compose(...)` runs docker-compose with its files."""

    def __init__(self, project: str, env: dict[str, str], extra_files: tuple[Path, ...] = ()) -> None:
        self.project = project
        self.env = env
        self.files = (REPO / "docker-compose.yml", OVERRIDE, *extra_files)
        self.log_dir = REPO / ".services" / "compose-test"

    def with_files(self, *extra_files: Path) -> Stack:
        """The same project (containers, volumes, network) seen through more compose files."""
        return Stack(self.project, self.env, extra_files)

    def compose(self, *args: str, timeout_s: float = 900, check: bool = True) -> str:
        command = ["docker-compose", "-p", self.project]
        for file in self.files:
            command += ["-f", str(file)]
        command += args
        result = subprocess.run(
            command, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def inspect(self, container: str) -> dict:
        out = subprocess.run(
            ["docker", "inspect", container], env=self.env, capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out)[0]

    def completed(self, service: str) -> bool:
        """The one-shot `service` has exited 0 (a non-zero exit fails the test at once)."""
        states = [self.inspect(c)["State"] for c in self.containers(service)]
        if any(s["Status"] == "exited" and s["ExitCode"] != 0 for s in states):
            raise AssertionError(f"{service} failed:\n{self.compose('logs', '--no-color', service)}")
        return bool(states) and all(s["Status"] == "exited" for s in states)

    def healthy(self, service: str, replicas: int = 1) -> bool:
        states = [self.inspect(c)["State"] for c in self.containers(service)]
        return len(states) == replicas and all(s.get("Health", {}).get("Status") == "healthy" for s in states)

    def logs(self, container: str) -> str:
        result = subprocess.run(
            ["docker", "logs", container], env=self.env, capture_output=True, text=True, check=True
        )
        return result.stdout + result.stderr

    def save_logs(self) -> None:
        """Keep every service's log for a failed run (under .services/compose-test)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / f"{self.project}.log").write_text(self.compose("logs", "--no-color", check=False))


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The stack, its ports on loopback, always taken down with its volumes afterwards."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose not found (make compose-test installs Debian's docker-compose)")
    env = dict(os.environ)
    env.update(
        POSTGRES_PASSWORD=secrets.token_hex(12),
        POSTGRES_PUBLISH=f"127.0.0.1:{_free_port()}",
        KIDNEYCT_DICOM_PUBLISH=f"127.0.0.1:{_free_port()}",
        MINIO_ROOT_PASSWORD=secrets.token_hex(12),
    )
    stack = Stack(f"kidneyct-test-{secrets.token_hex(3)}", env)
    try:
        yield stack
    finally:
        # Every file, so the object store's services and volume go too.
        everything = stack.with_files(*S3_FILES)
        everything.save_logs()
        everything.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)


def _database_url(stack: Stack) -> str:
    host_port = stack.env["POSTGRES_PUBLISH"]
    return f"postgresql+psycopg://kidneyct:{stack.env['POSTGRES_PASSWORD']}@{host_port}/kidneyct"


def _send_study(stack: Stack, folder: Path, seed: int) -> str:
    """Write one synthetic 3-slice study and send it with DCMTK's storescu; return its Study UID."""
    rows = generate(folder, studies=1, slices=3, classes=["Cyst"], seed=seed, size=32)
    storescu = dcmtk_tool("storescu")
    assert storescu is not None, "DCMTK storescu is not installed (Debian package dcmtk)"
    host, port = stack.env["KIDNEYCT_DICOM_PUBLISH"].rsplit(":", 1)
    files = sorted(str(p) for p in folder.rglob("*.dcm"))
    assert files, f"no DICOM files written under {folder}"
    result = subprocess.run(
        [storescu, "-aet", "COMPOSETEST", "-aec", "KIDNEYCT", host, port, *files],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"storescu failed:\n{result.stdout}\n{result.stderr}"
    return rows[0].study_instance_uid


def _study_row(url: str, study_uid: str) -> tuple | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT n_instances, label, complete FROM study_results"
                    " WHERE study_instance_uid = :uid AND complete"
                ),
                {"uid": study_uid},
            ).first()
            return tuple(row) if row else None
    except Exception:  # noqa: BLE001 - not reachable yet: keep waiting
        return None
    finally:
        engine.dispose()


def _consumed(stack: Stack, container: str) -> bool:
    return '"event": "batch_processed"' in stack.logs(container)


def test_compose_stack_classifies_a_study_and_two_workers_share_the_stream(
    stack: Stack, tmp_path: Path
) -> None:
    """Up with the real compose file, a storescu study lands in study_results, and two workers both consume."""
    started = time.monotonic()
    # The schema first, then the model, then the whole stack as users start it (migrate and
    # kafka-init run again: both are idempotent). A worker without an active model would exit.
    stack.compose("up", "-d", "migrate")
    _wait("migrate to complete", lambda: stack.completed("migrate"), 300)
    stack.compose("run", "--rm", "--no-deps", "seed-model")
    stack.compose("up", "-d")
    _wait(
        "listener and worker healthy", lambda: stack.healthy("listener") and stack.healthy("worker-cpu"), 300
    )
    print(f"stack healthy after {time.monotonic() - started:.0f}s")

    url = _database_url(stack)
    first = _send_study(stack, tmp_path / "study-0", seed=100)
    n_instances, label, complete = _wait(
        "the study's row in study_results", lambda: _study_row(url, first), 180
    )
    assert (n_instances, complete) == (3, True)
    assert label, "a complete study has a label"
    print(f"first study in study_results after {time.monotonic() - started:.0f}s")

    stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "worker-cpu=2", "worker-cpu")
    _wait("two healthy workers", lambda: stack.healthy("worker-cpu", replicas=2), 300)
    workers = stack.containers("worker-cpu")
    # Studies are keyed to partitions; send more until each worker has processed a batch.
    for number in range(1, 13):
        study = _send_study(stack, tmp_path / f"study-{number}", seed=100 + number)
        _wait(f"study {number} in study_results", lambda s=study: _study_row(url, s), 180)
        if all(_consumed(stack, worker) for worker in workers):
            break
    assert all(_consumed(stack, worker) for worker in workers), "both workers consume from the stream"
    print(f"both workers consumed after {time.monotonic() - started:.0f}s")


def _archive_uris(url: str, study_uid: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT i.archive_uri FROM instances i JOIN series se ON se.id = i.series_id"
                    " JOIN studies st ON st.id = se.study_id WHERE st.study_instance_uid = :uid"
                ),
                {"uid": study_uid},
            )
            return [row[0] for row in rows]
    finally:
        engine.dispose()


def _shared_archive_mounts(stack: Stack, container: str) -> list[dict]:
    """Mounts at the archive's path other than a private tmpfs (a volume or a host folder)."""
    mounts = stack.inspect(container)["Mounts"]
    return [m for m in mounts if m["Destination"] == ARCHIVE_PATH and m["Type"] != "tmpfs"]


def test_the_s3_overlay_classifies_a_study_with_no_shared_archive(stack: Stack, tmp_path: Path) -> None:
    """docker-compose.s3.yml on the running project: the object store and its bucket come up, the
    listener and the worker are recreated without the archive volume, and a study still reaches
    study_results, archived as s3:// objects."""
    started = time.monotonic()
    s3 = stack.with_files(*S3_FILES)
    s3.compose("up", "-d", "--scale", "worker-cpu=1")
    _wait("the bucket", lambda: s3.completed("minio-init"), 300)
    _wait("listener and worker healthy", lambda: s3.healthy("listener") and s3.healthy("worker-cpu"), 300)
    print(f"S3 stack healthy after {time.monotonic() - started:.0f}s")
    for service in ("listener", "worker-cpu"):
        for container in s3.containers(service):
            assert not _shared_archive_mounts(s3, container), f"{service} still shares the archive"

    url = _database_url(stack)
    study = _send_study(stack, tmp_path / "study-s3", seed=200)
    n_instances, label, complete = _wait(
        "the study's row in study_results", lambda: _study_row(url, study), 180
    )
    assert (n_instances, complete) == (3, True) and label
    uris = _archive_uris(url, study)
    assert len(uris) == 3 and all(uri.startswith("s3://kidneyct/archive/") for uri in uris), uris
    print(f"S3 study in study_results after {time.monotonic() - started:.0f}s")

"""`kidneyct worker` as a process: waits for a model without exiting, and SIGTERM finishes the batch and exits 0.

The worker runs on the embedded queue in a real PostgreSQL database (no Kafka needed for this).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from classifier_kit import make_tiny_artifact, register, wait_for, write_instance
from sqlalchemy import func, select

import migrations
from storage.db.engine import make_engine, make_session_factory
from storage.db.tables import Instance, Prediction, QueueOffset
from storage.stream.db_queue import DatabaseQueuePublisher

pytestmark = pytest.mark.postgres
TOPIC = "kidneyct.instances"
GROUP = "kidneyct-classifier"


def worker_process(url: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
    env.update(
        {
            "KIDNEYCT_DATABASE_URL": url,
            "KIDNEYCT_DATA_DIR": str(tmp_path),
            "KIDNEYCT_ARCHIVE_DIR": str(tmp_path / "archive"),
            "KIDNEYCT_LOG_FORMAT": "json",
            "KIDNEYCT_BATCH_SIZE": "2",
            "KIDNEYCT_BATCH_MAX_WAIT_MS": "20",
        }
    )
    command = [sys.executable, "-c", "from kidneyct.cli import main; main()", "worker", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_worker_without_a_model_waits_then_classifies_once_one_is_promoted(
    postgres_url: str, tmp_path: Path
) -> None:
    """No active model: the worker stays up, logs that it waits (no crash loop), and classifies once one is active."""
    migrations.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    publisher = DatabaseQueuePublisher(sessions)
    event = write_instance(tmp_path / "archive")
    publisher.publish(TOPIC, event.key, event.to_json())
    process = worker_process(postgres_url, tmp_path, "--device", "cpu")
    lines: list[str] = []
    assert process.stderr is not None
    drain = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)  # JSON log lines
    drain.start()
    try:

        def waiting() -> list[str]:
            return [line for line in list(lines) if "waiting_for_active_model" in line]

        wait_for(lambda: bool(waiting()) or process.poll() is not None, timeout_s=300)
        assert process.poll() is None, "".join(lines)
        assert "models promote" in json.loads(waiting()[0])["reason"]
        directory, sha = make_tiny_artifact(tmp_path / "models" / "v1", "v1", seed=3)
        register(sessions, version="v1", directory=directory, sha256=sha, active=True)

        def predicted() -> int:
            with sessions() as s:
                return int(s.scalar(select(func.count()).select_from(Prediction)) or 0)

        wait_for(lambda: predicted() == 1 or process.poll() is not None, timeout_s=300)
        assert process.poll() is None and predicted() == 1
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        engine.dispose()


def test_bad_device_is_a_usage_error(postgres_url: str, tmp_path: Path) -> None:
    """`--device cuda` is refused before anything starts."""
    process = worker_process(postgres_url, tmp_path, "--device", "cuda")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "gpu:N" in stderr


def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(postgres_url: str, tmp_path: Path) -> None:
    """SIGTERM mid-stream: exit 0, and every committed offset has its rows (nothing half-done)."""
    migrations.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    directory, sha = make_tiny_artifact(tmp_path / "models" / "v1", "v1", seed=3)
    register(sessions, version="v1", directory=directory, sha256=sha, active=True)
    publisher = DatabaseQueuePublisher(sessions)
    events = [write_instance(tmp_path / "archive") for _ in range(80)]
    for e in events:
        publisher.publish(TOPIC, e.key, e.to_json())

    def processed() -> int:
        with sessions() as s:
            return int(s.scalar(select(func.count()).select_from(Prediction)) or 0)

    process = worker_process(postgres_url, tmp_path, "--device", "cpu")
    try:
        wait_for(lambda: processed() > 0 or process.poll() is not None, timeout_s=300)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    with sessions() as s:
        committed = s.scalars(select(QueueOffset.next_offset).where(QueueOffset.group_id == GROUP)).one()
        n_instances = int(s.scalar(select(func.count()).select_from(Instance)) or 0)
    first_offset = 1  # the embedded queue's ids start at 1: offsets below `committed` are done
    assert n_instances == processed() == committed - first_offset
    assert 0 < n_instances < len(events)  # it stopped mid-stream, not after draining the queue
    logged = [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]
    assert "worker_stopping" in logged and logged[-1] == "worker_stopped"
    engine.dispose()

"""The archive on a real S3 server (SeaweedFS), end to end: a worker with no local archive
classifies a study, and an object store outage during C-STORE loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from classifier_kit import make_tiny_artifact, register
from e2e_kit import (
    KIDNEYCT,
    Process,
    kafka_postgres_env,
    kidneyct_env,
    predicted_sops,
    run_kidneyct,
    wait_for,
)
from seaweed_process import SeaweedProcess

import migrations
from ingest import statuses
from kidneyct.send_files import send_files
from storage.db.engine import make_engine, make_session_factory
from training.synth.generate import generate


def _register_tiny_model(url: str, tmp_path: Path) -> None:
    migrations.upgrade(url)
    engine = make_engine(url)
    directory, sha = make_tiny_artifact(tmp_path / "model", "tiny-1", seed=1)
    register(make_session_factory(engine), version="tiny-1", directory=directory, sha256=sha, active=True)
    engine.dispose()


def _all_predicted_once(url: str, wanted: set[str]) -> dict[str, int]:
    counts = wait_for(
        lambda: (c := predicted_sops(url)) and wanted <= c.keys() and c,
        timeout_s=300,
        what=f"predictions of all {len(wanted)} instances",
    )
    return {sop: counts[sop] for sop in wanted}


@pytest.mark.slow
def test_a_worker_with_no_access_to_any_local_archive_classifies_a_study(
    tmp_path: Path,
    kafka_bootstrap: str,
    postgres_url: str,
    unique_name,  # noqa: ANN001
    s3_server: SeaweedProcess,
    s3_archive_url: str,
) -> None:
    """Listener and worker as two 'hosts': own data folders and working directories, one bucket."""
    _register_tiny_model(postgres_url, tmp_path)
    rows = generate(tmp_path / "synth", studies=1, slices=6, classes=["Cyst"], seed=4, size=64)
    paths = [tmp_path / "synth" / r.path for r in rows]
    listener_host, worker_host = tmp_path / "listener-host", tmp_path / "worker-host"
    listener_host.mkdir()
    worker_host.mkdir()
    env = kafka_postgres_env(
        listener_host,
        bootstrap=kafka_bootstrap,
        database_url=postgres_url,
        unique_name=unique_name,
        archive_url=s3_archive_url,
        s3_endpoint_url=s3_server.endpoint_url,
        study_stable_age_s=1,
        batch_size=4,
        model_poll_s=1,
    )
    # The worker's own folder; its archive folder does not exist: everything must come from S3.
    worker_env = env | {
        "KIDNEYCT_DATA_DIR": str(worker_host),
        "KIDNEYCT_ARCHIVE_DIR": str(worker_host / "none"),
    }
    run_kidneyct(["kafka", "init"], env)
    listener = Process([*KIDNEYCT, "listen"], env, tmp_path / "listen.log", cwd=listener_host)
    worker = Process([*KIDNEYCT, "worker"], worker_env, tmp_path / "worker.log", cwd=worker_host)
    try:
        port = int(listener.wait_event("listener_started", timeout_s=120)["port"])
        assert all(r.ok for r in send_files("127.0.0.1", port, paths, called_ae="KIDNEYCT"))
        counts = _all_predicted_once(postgres_url, {r.sop_instance_uid for r in rows})
    finally:
        worker.terminate()
        listener.terminate()
    assert counts == dict.fromkeys(counts, 1)
    assert not list(listener_host.rglob("*.dcm")) and not list(worker_host.rglob("*.dcm"))
    assert not (worker_host / "none").exists()


@pytest.mark.slow
def test_object_store_stopped_during_c_store_answers_a700_and_loses_nothing(
    tmp_path: Path, private_s3: SeaweedProcess
) -> None:
    """Stored before the outage, refused during it (0xA700), re-sent after it: each instance ends
    with exactly one prediction."""
    private_s3.create_writable_bucket("outage-test")
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'kidneyct.db'}"
    _register_tiny_model(url, tmp_path)
    rows = generate(tmp_path / "synth", studies=1, slices=8, classes=["Stone"], seed=5, size=64)
    paths = [tmp_path / "synth" / r.path for r in rows]
    env = kidneyct_env(
        data,
        archive_url="s3://outage-test/archive",
        s3_endpoint_url=private_s3.endpoint_url,
        s3_max_attempts=2,
        s3_connect_timeout_s=1,
        s3_read_timeout_s=5,
        batch_size=4,
        study_stable_age_s=1,
        model_poll_s=1,
    )
    serve = Process([*KIDNEYCT, "serve"], env, tmp_path / "serve.log")
    try:
        port = int(serve.wait_event("listener_started", timeout_s=120)["port"])
        before = send_files("127.0.0.1", port, paths[:3], called_ae="KIDNEYCT")
        assert all(r.ok for r in before)
        private_s3.stop()
        during = send_files("127.0.0.1", port, paths[3:], called_ae="KIDNEYCT")
        assert [r.status for r in during] == [statuses.OUT_OF_RESOURCES] * len(paths[3:])
        private_s3.start()
        # The sender retries what was refused, plus one that was stored (a duplicate counts once).
        after = send_files("127.0.0.1", port, [*paths[3:], paths[0]], called_ae="KIDNEYCT")
        assert all(r.ok for r in after)
        counts = _all_predicted_once(url, {r.sop_instance_uid for r in rows})
    finally:
        serve.terminate()
    assert counts == dict.fromkeys(counts, 1)
    assert serve.proc.returncode == 0
